import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AppTable, parseAppFlag } from "../src/apps.js";
import { confinedPath, parseTarget, removeDotSegments } from "../src/request-target.js";

/** The WHATWG URL parser — what browsers and most Node apps use — as an independent oracle. */
const whatwg = (path: string): string => new URL(`http://h/root${path}`).pathname;

describe("request targets", () => {
  it("takes origin-form and absolute-form apart, and refuses the rest", () => {
    expect(parseTarget("/a/b?c=d")).toEqual({ ok: true, host: null, path: "/a/b", query: "?c=d" });
    expect(parseTarget("http://B.Example:8080/x?y")).toEqual({
      ok: true,
      host: "b.example:8080",
      path: "/x",
      query: "?y",
    });
    expect(parseTarget("https://b.example")).toEqual({ ok: true, host: "b.example", path: "/", query: "" });
    expect(parseTarget("http://b.example?q")).toEqual({ ok: true, host: "b.example", path: "/", query: "?q" });
    expect(parseTarget("*")).toMatchObject({ ok: false, reason: "not_a_path" });
    expect(parseTarget("/a#frag")).toMatchObject({ ok: false, reason: "fragment" });
    expect(parseTarget("ftp://b.example/x")).toMatchObject({ ok: false, reason: "not_http" });
    expect(parseTarget("http://user:pw@b.example/x")).toMatchObject({ ok: false, reason: "userinfo" });
    expect(parseTarget("http://b_example!/x")).toMatchObject({ ok: false, reason: "bad_host" });
  });

  it("removes dot segments as RFC 3986 does, but refuses to climb above the root", () => {
    expect(removeDotSegments("/a/b/../c/./d")).toBe("/a/c/d");
    expect(removeDotSegments("/a/%2E%2e/b")).toBe("/b");
    expect(removeDotSegments("/a/b/..")).toBe("/a/");
    expect(removeDotSegments("/a/.")).toBe("/a/");
    expect(removeDotSegments("/")).toBe("/");
    expect(removeDotSegments("/..")).toBeNull();
    expect(removeDotSegments("/a/../../b")).toBeNull();
  });

  it("agrees with the WHATWG URL parser wherever the path stays inside", () => {
    const segment = fc.constantFrom("a", "b", ".", "..", "%2e", "%2E%2e", ".%2e", "", "x.y");
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 8 }), (segments) => {
        const path = `/${segments.join("/")}`;
        const ours = removeDotSegments(path);
        const theirs = whatwg(path);
        if (ours === null) expect(theirs.startsWith("/root/")).toBe(false);
        else expect(`/root${ours}`).toBe(theirs);
      }),
      { numRuns: 2000 },
    );
  });

  it("refuses a path that any server reading of it would take out of the root", () => {
    const piece = fc.constantFrom(
      "a",
      "..",
      ".",
      "%2e",
      "%2E",
      "%2f",
      "%2F",
      "%5c",
      "\\",
      ";",
      ";x",
      "%25",
      "%252e",
      "%252f",
      "/",
      "//",
    );
    // The ways servers read a path: decoding separators, decoding twice, dropping ;params, merging //.
    const readings = (p: string): string[] => {
      const once = [p, p.replace(/%25/gi, "%")];
      const out: string[] = [];
      for (const q of once) {
        for (const r of [q, q.replace(/%2f/gi, "/"), q.replace(/%5c/gi, "/"), q.replace(/%2f|%5c/gi, "/")]) {
          out.push(
            r,
            r.replace(/;[^/\\]*/g, ""),
            r.replace(/\/+/g, "/"),
            r.replace(/;[^/\\]*/g, "").replace(/\/+/g, "/"),
          );
        }
      }
      return out;
    };
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 10 }), (pieces) => {
        const confined = confinedPath(`/${pieces.join("")}`);
        if (confined === null) return;
        // Not a network-path reference (`//host`, `/\\host`) to a URL parser.
        expect(new URL(confined, "http://app.example").host).toBe("app.example");
        for (const r of readings(confined)) expect(whatwg(r).startsWith("/root/") || whatwg(r) === "/root").toBe(true);
      }),
      { numRuns: 10000 },
    );
  });
});

describe("routing: nothing leaves an app's base path", () => {
  const table = new AppTable([
    parseAppFlag("a=http://127.0.0.1:8001/"),
    parseAppFlag("b=http://127.0.0.1:8002/base/"),
    { ...parseAppFlag("h=http://127.0.0.1:8003/base/"), host: "h.example" },
  ]);

  it("refuses the traversals of the issue, however spelled", () => {
    for (const path of [
      "/apps/b/../secret",
      "/apps/b/%2e%2e/secret",
      "/apps/b/..%2fsecret",
      "/apps/a/../../etc/passwd",
      "/apps/b/..;/secret",
      "/apps/b/..%5csecret",
      "/apps/b/%252e%252e/secret",
      "/apps/b/x/..%2f..%2fsecret",
      // `;%5ca` a parameter to a servlet container, then `\\` a separator as to a URL parser.
      "/apps/b/;%5ca//..\\secret",
    ]) {
      expect(table.route("edge", path, ""), path).toMatchObject({ kind: "outside", app: { name: path.split("/")[2] } });
    }
    expect(table.route("h.example", "/../etc/passwd", "")).toMatchObject({ kind: "outside", app: { name: "h" } });
  });

  it("serves dot segments that stay inside, normalised", () => {
    expect(table.route("edge", "/apps/b/x/../y", "?q")).toMatchObject({ kind: "app", path: "/y?q" });
    expect(table.route("edge", "/apps/b/x/%2e/y/..", "")).toMatchObject({ kind: "app", path: "/x/" });
    expect(table.route("edge", "/apps/b//evil.example/x", "")).toMatchObject({ kind: "app", path: "/evil.example/x" });
    expect(table.route("edge", "/apps/b/\\evil.example/x", "")).toMatchObject({ kind: "app", path: "/evil.example/x" });
    expect(table.route("h.example", "/x/../y", "")).toMatchObject({ kind: "app", path: "/y" });
  });

  it("an undecodable app name is no app, not an error", () => {
    expect(table.route("edge", "/apps/%zz/x", "")).toEqual({ kind: "edge" });
  });

  it("an app on a host of its own is sent there from /apps/<name>/", () => {
    expect(table.route("edge", "/apps/h/x", "?q")).toEqual({
      kind: "own_host",
      app: expect.objectContaining({ name: "h" }),
      host: "h.example",
      path: "/x?q",
    });
  });

  it("--app-domain: every app at <name>.<domain>, names that cannot be a host label refused", () => {
    const domain = new AppTable(
      [
        parseAppFlag("Painter=http://127.0.0.1:8001"),
        { ...parseAppFlag("chat=http://127.0.0.1:8002"), host: "chat.example.org" },
      ],
      "apps.example.com",
    );
    expect(domain.forHost("painter.apps.example.com")?.name).toBe("Painter");
    expect(domain.forHost("chat.apps.example.com")).toBeUndefined();
    expect(domain.forHost("chat.example.org")?.name).toBe("chat");
    expect(domain.forHost("x.painter.apps.example.com")).toBeUndefined();
    expect(domain.route("edge", "/apps/Painter/", "")).toMatchObject({
      kind: "own_host",
      host: "painter.apps.example.com",
    });
    expect(() => new AppTable([parseAppFlag("my_app=http://127.0.0.1:1")], "apps.example.com")).toThrow(
      /host name label/,
    );
    expect(
      () =>
        new AppTable([parseAppFlag("A=http://127.0.0.1:1"), parseAppFlag("a=http://127.0.0.1:2")], "apps.example.com"),
    ).toThrow(/both be a.apps/);
  });
});
