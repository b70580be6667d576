import { describe, expect, it } from "vitest";
import { AppTable, parseAppFlag } from "../src/apps.js";
import { cookieValue, edgeCookie, withoutEdgeCookies } from "../src/cookies.js";
import { safeNext } from "../src/login-page.js";
import { TrustedProxies, viewerAddress } from "../src/viewer-ip.js";

describe("viewer address", () => {
  const none = new TrustedProxies([]);
  const lb = new TrustedProxies(["10.0.0.0/8", "2001:db8::1"]);

  it("is the socket peer when the peer is not a trusted proxy, whatever X-Forwarded-For says", () => {
    expect(viewerAddress("198.51.100.7", "203.0.113.9", none)).toBe("198.51.100.7");
    expect(viewerAddress("::ffff:198.51.100.7", undefined, none)).toBe("198.51.100.7");
    expect(viewerAddress("198.51.100.7", "203.0.113.9", lb)).toBe("198.51.100.7");
  });

  it("behind trusted proxies: the right-most untrusted X-Forwarded-For entry", () => {
    expect(viewerAddress("10.1.2.3", "203.0.113.9", lb)).toBe("203.0.113.9");
    // The client prepended a lie; only the hop our proxy appended counts.
    expect(viewerAddress("10.1.2.3", "1.1.1.1, 203.0.113.9, 10.0.0.5", lb)).toBe("203.0.113.9");
    expect(viewerAddress("::ffff:10.1.2.3", ["203.0.113.9"], lb)).toBe("203.0.113.9");
    expect(viewerAddress("2001:db8::1", "[2001:db8:aa:bb:1:2:3:4]:443", lb)).toBe("2001:db8:aa:bb::/64");
    // Garbage ends the walk at the hop that wrote it.
    expect(viewerAddress("10.1.2.3", "evil, 10.0.0.5", lb)).toBe("10.0.0.5");
    expect(viewerAddress("10.1.2.3", undefined, lb)).toBe("10.1.2.3");
  });

  it("groups IPv6 by /64 and refuses malformed proxy entries", () => {
    expect(viewerAddress("2001:db8:1:2:aaaa::1", undefined, none)).toBe("2001:db8:1:2::/64");
    expect(() => new TrustedProxies(["nope"])).toThrow(/not an IP/);
    expect(() => new TrustedProxies(["10.0.0.0/33"])).toThrow(/prefix/);
  });
});

describe("routing, cookies, redirects", () => {
  const table = new AppTable([
    parseAppFlag("painter=http://127.0.0.1:8001"),
    { ...parseAppFlag("chat=http://127.0.0.1:8002/base/"), host: "chat.example.org" },
  ]);

  it("routes /apps/<name>/… with the prefix removed, and whole hosts to their app", () => {
    expect(table.route("edge", "/apps/painter/x/y", "?z=1")).toMatchObject({
      kind: "app",
      app: { name: "painter" },
      path: "/x/y?z=1",
      prefix: "/apps/painter",
    });
    expect(table.route("edge", "/apps/painter", "")).toEqual({ kind: "slash", location: "/apps/painter/" });
    expect(table.route("edge", "/apps/other/", "")).toEqual({ kind: "edge" });
    expect(table.route("chat.example.org", "/login", "")).toMatchObject({
      kind: "app",
      app: { name: "chat" },
      path: "/login",
      prefix: "",
    });
    expect(() => parseAppFlag("bad")).toThrow(/NAME=URL/);
    expect(() => parseAppFlag("x=ftp://a")).toThrow(/http/);
  });

  it("keeps the session cookie from the app and makes it HttpOnly, Lax, Secure over TLS", () => {
    expect(withoutEdgeCookies("a=1; gpupool_session=gps_x; b=2")).toBe("a=1; b=2");
    expect(withoutEdgeCookies("gpupool_session=gps_x")).toBeUndefined();
    expect(cookieValue("a=1; gpupool_session=s", "gpupool_session")).toBe("s");
    expect(edgeCookie("gpupool_session", "v", 60, false)).toBe(
      "gpupool_session=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60",
    );
  });

  it("redirects after sign-in only to local paths", () => {
    expect(safeNext("/apps/x/")).toBe("/apps/x/");
    for (const bad of ["//evil.example", "https://evil.example", "/\\evil", "/\t/evil.example", undefined])
      expect(safeNext(bad)).toBe("/");
  });
});
