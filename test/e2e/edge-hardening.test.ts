import { randomBytes } from "node:crypto";
import { request } from "node:http";
import type { IncomingHttpHeaders } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Echo, EdgeWorld } from "./edge-fixture.js";
import { ATTACK_HEADERS, startEdgeWorld } from "./edge-fixture.js";

/**
 * Issue 12, items 1-5, through the real binaries: what a hostile client (or app) sends cannot
 * leave an app's base path, fake an identity, set or clear the edge's session, sign a viewer in
 * or out, or make the edge answer 5xx while the control plane is up.
 */

let w: EdgeWorld;
let port: number;
beforeAll(async () => {
  w = await startEdgeWorld();
  port = Number(new URL(w.edge.url).port);
}, 60_000);
afterAll(async () => {
  await w?.stop();
});

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request exactly as written: the target is not normalised (fetch would remove dot segments). */
function send(
  target: string,
  options: { method?: string; headers?: Record<string, string | string[]>; body?: string; to?: number } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port: options.to ?? port,
        method: options.method ?? "GET",
        path: target,
        headers: options.headers ?? {},
      },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

const echoOf = (a: Answer): Echo => {
  expect(a.status, a.body).toBe(200);
  return JSON.parse(a.body) as Echo;
};

const problemOf = (a: Answer): { code: string; reason?: string; detail: string } => {
  expect(a.headers["content-type"]).toBe("application/problem+json");
  return JSON.parse(a.body) as { code: string; reason?: string; detail: string };
};

const form = (fields: Record<string, string>) => ({ "content-type": "application/x-www-form-urlencoded", ...fields });

async function signIn(): Promise<string> {
  const r = await send("/login", {
    method: "POST",
    headers: form({}),
    body: new URLSearchParams({ token: w.alice.token }).toString(),
  });
  expect(r.status).toBe(303);
  return String(r.headers["set-cookie"]?.[0]).split(";")[0]!;
}

/** The edge's own log lines at level error (50) or above: only a control-plane outage may write one. */
const errorLines = (): string[] =>
  w.edge
    .output()
    .split("\n")
    .filter((l) => /"level":(50|60)/.test(l));

describe("1. a path cannot leave the app's base path", () => {
  it("refuses dot segments that climb out, however spelled, and the app never sees them", async () => {
    const before = w.seen.length;
    for (const target of [
      "/apps/based/../secret",
      "/apps/based/%2e%2e/secret",
      "/apps/based/..%2fsecret",
      "/apps/front/../../etc/passwd",
      "/apps/based/..;/secret",
      "/apps/based/x/..%2f..%2fsecret",
      "/apps/based/%2E%2e%2F%2e%2e%2Fetc",
    ]) {
      const r = await send(target);
      expect(r.status, target).toBe(400);
      expect(problemOf(r)).toMatchObject({ code: "invalid_request", reason: "path_outside_app" });
    }
    expect(w.seen.slice(before)).toEqual([]);
  });

  it("passes dot segments that stay inside, resolved", async () => {
    expect(echoOf(await send("/apps/based/x/../whoami?q=1")).path).toBe("/base/whoami?q=1");
    expect(echoOf(await send("/apps/based/x/%2e/%2e%2e/whoami")).path).toBe("/base/whoami");
  });

  it("an absolute-form target names the host: a host-routed app gets its path, not the URL", async () => {
    const viaOther = echoOf(
      await send("http://side.example.test/whoami?q=1", { headers: { host: "elsewhere.example" } }),
    );
    expect(viaOther).toMatchObject({ path: "/whoami?q=1", aud: w.apps.side.id });
    expect(viaOther.headers["x-forwarded-host"]).toBe("side.example.test");
    expect(echoOf(await send("http://side.example.test/whoami", { headers: { host: "side.example.test" } })).path).toBe(
      "/whoami",
    );
    expect(problemOf(await send("http://side.example.test/../etc/passwd"))).toMatchObject({
      reason: "path_outside_app",
    });
    expect(problemOf(await send("ftp://side.example.test/x"))).toMatchObject({
      code: "invalid_request",
      reason: "not_http",
    });
  });
});

describe("2. an app cannot set, clear or read the edge's cookies", () => {
  it("an app's Set-Cookie naming the edge's cookies, its Clear-Site-Data and Service-Worker-Allowed never reach the browser", async () => {
    expect(ATTACK_HEADERS.length).toBeGreaterThan(3);
    const r = await send("/apps/front/attack");
    expect(r.status).toBe(200);
    expect(r.headers["set-cookie"]).toEqual(["app_own=kept; Path=/"]);
    expect(r.headers["clear-site-data"]).toBeUndefined();
    expect(r.headers["service-worker-allowed"]).toBeUndefined();
  });

  it("no edge cookie, in any spelling, is passed to an app", async () => {
    const e = echoOf(
      await send("/apps/front/whoami", {
        headers: { cookie: "gpupool_session=gps_x; __Host-gpupool_session=gps_y; gpupool_app=z; theme=dark" },
      }),
    );
    expect(e.cookie).toBe("theme=dark");
  });

  it("with --public-url https://… the session cookie is __Host-, Secure; an unprefixed copy is not believed there", async () => {
    const tls = await w.startEdge((p) => [
      "--app",
      `front=${w.upstreams.front}`,
      "--public-url",
      `https://edge.test:${p}`,
    ]);
    const login = await send("/login", {
      to: tls.port,
      method: "POST",
      headers: form({}),
      body: new URLSearchParams({ token: w.alice.token }).toString(),
    });
    const set = String(login.headers["set-cookie"]?.[0]);
    expect(set).toMatch(/^__Host-gpupool_session=gps_[\w-]+; Path=\/; HttpOnly; SameSite=Lax; Max-Age=\d+; Secure$/);
    const secret = set.split(";")[0]!.split("=")[1]!;
    expect(
      echoOf(
        await send("/apps/front/whoami", { to: tls.port, headers: { cookie: `__Host-gpupool_session=${secret}` } }),
      ).sub,
    ).toBe(`user:${w.alice.id}`);
    // A plain-named cookie may have been set by any host under the domain, or over plain HTTP.
    expect(
      echoOf(await send("/apps/front/whoami", { to: tls.port, headers: { cookie: `gpupool_session=${secret}` } })).sub,
    ).toBe("ip:127.0.0.1");
  });

  it("behind a trusted TLS proxy (X-Forwarded-Proto: https) the cookie is __Host- too; from anyone else that header means nothing", async () => {
    const behind = await w.startEdge(() => ["--app", `front=${w.upstreams.front}`, "--trusted-proxy", "127.0.0.0/8"]);
    const viaProxy = await send("/login", {
      to: behind.port,
      method: "POST",
      headers: form({ "x-forwarded-proto": "https" }),
      body: new URLSearchParams({ token: w.alice.token }).toString(),
    });
    expect(String(viaProxy.headers["set-cookie"]?.[0])).toMatch(/^__Host-gpupool_session=.*; Secure$/);
    const direct = await send("/login", {
      method: "POST",
      headers: form({ "x-forwarded-proto": "https" }),
      body: new URLSearchParams({ token: w.alice.token }).toString(),
    });
    expect(String(direct.headers["set-cookie"]?.[0])).toMatch(
      /^gpupool_session=[^;]+; Path=\/; HttpOnly; SameSite=Lax; Max-Age=\d+$/,
    );
  });

  it("an app on its own host gets the sign-in through the sign-in host, bound to the browser that asked, and for that host only", async () => {
    const session = await signIn();
    const nav = { "sec-fetch-mode": "navigate", "sec-fetch-dest": "document" };
    // A tab opens the app: no word from the sign-in host yet, so it asks.
    const ask = await send("/whoami", { headers: { host: `side.example.test:${port}`, ...nav } });
    expect(ask.status).toBe(303);
    const state = String(ask.headers["set-cookie"]?.[0]).split(";")[0]!;
    expect(state).toMatch(/^gpupool_state=[\w-]+$/);
    const askUrl = new URL(String(ask.headers.location));
    expect(askUrl.origin).toBe(w.publicUrl);
    // The sign-in host answers with a ticket for that host.
    const ticketed = await send(`${askUrl.pathname}${askUrl.search}`, {
      headers: { host: askUrl.host, cookie: session },
    });
    expect(ticketed.status).toBe(303);
    const back = new URL(String(ticketed.headers.location));
    expect(back.host).toBe(`side.example.test:${port}`);
    const enter = `${back.pathname}${back.search}`;
    // Someone else's browser (no state cookie, or another one) cannot use that ticket.
    expect(problemOf(await send(enter, { headers: { host: back.host } }))).toMatchObject({ reason: "state_mismatch" });
    expect(
      problemOf(await send(enter, { headers: { host: back.host, cookie: "gpupool_state=AAAAAAAAAAAAAAAAAAAAAAAA" } })),
    ).toMatchObject({ reason: "state_mismatch" });
    // Nor is it any use on another host (sealed.ts binds it to this one; see its unit test).
    const elsewhere = await send(enter, { headers: { host: `front.example.test:${port}`, cookie: state } });
    expect(problemOf(elsewhere).code).toBe("invalid_request");
    expect(elsewhere.headers["set-cookie"]).toBeUndefined();
    const entered = await send(enter, { headers: { host: back.host, cookie: state } });
    expect(entered.status).toBe(303);
    expect(entered.headers.location).toBe("/whoami");
    const appCookie = (entered.headers["set-cookie"] ?? []).find((c) => c.startsWith("gpupool_app="))!.split(";")[0]!;
    const e = echoOf(
      await send("/whoami", { headers: { host: back.host, cookie: `${appCookie}; theme=dark`, ...nav } }),
    );
    expect(e).toMatchObject({ sub: `user:${w.alice.id}`, aud: w.apps.side.id, cookie: "theme=dark" });
    // The login host's own session cookie means nothing on an app's host.
    expect(echoOf(await send("/whoami", { headers: { host: back.host, cookie: session } })).sub).toBe("ip:127.0.0.1");
  });
});

describe("3. oversized or odd credentials are the client's problem, never a 503", () => {
  it("a 600-byte session cookie is ignored: charged as the IP", async () => {
    const r = await send("/apps/front/whoami", { headers: { cookie: `gpupool_session=gps_${"a".repeat(600)}` } });
    expect(echoOf(r).sub).toBe("ip:127.0.0.1");
  });

  it("a 9 KB X-IP-Token is dropped as too_large and the call charged to the IP", async () => {
    const r = await send("/apps/front/whoami", { headers: { "x-ip-token": "a".repeat(9 * 1024) } });
    expect(echoOf(r).sub).toBe("ip:127.0.0.1");
    expect(r.headers["x-gpupool-token-dropped"]).toBe("too_large");
    expect(r.headers["x-gpupool-charged-as"]).toBe("ip:127.0.0.1");
  });

  it("a 600-byte Bearer user token is consumed, not passed on, and charged as the IP", async () => {
    const e = echoOf(
      await send("/apps/front/whoami", { headers: { authorization: `Bearer gpu_u_${"a".repeat(600)}` } }),
    );
    expect(e).toMatchObject({ sub: "ip:127.0.0.1", authorization: null });
  });

  it("a 600-byte login token is a 401 sign-in page", async () => {
    const r = await send("/login", {
      method: "POST",
      headers: form({}),
      body: new URLSearchParams({ token: `gpu_u_${"a".repeat(600)}` }).toString(),
    });
    expect(r.status).toBe(401);
    expect(r.headers["content-type"]).toMatch(/^text\/html/);
    expect(r.body).toContain("not a gpupool user token");
  });

  it("none of it was logged as an error", () => {
    expect(errorLines()).toEqual([]);
    expect(w.edge.output()).not.toMatch(/control_plane_unavailable|refused/);
  });
});

describe("4. no client-supplied address or identity header reaches an app", () => {
  const spoofed = {
    "x-real-ip": "203.0.113.66",
    "true-client-ip": "203.0.113.66",
    forwarded: "for=203.0.113.66;proto=https",
    "x-forwarded-for": "203.0.113.66",
    "x-forwarded-host": "victim.example",
    "x-forwarded-proto": "https",
    "x-forwarded-prefix": "/victim",
    "x-client-ip": "203.0.113.66",
    "cf-connecting-ip": "203.0.113.66",
    "x-original-url": "/admin",
    "x-remote-user": "victim",
    x_ip_token: "forged.victim.token",
    x_forwarded_for: "203.0.113.66",
    x_real_ip: "203.0.113.66",
    "x-gpupool-charged-as": "user:victim",
  };

  it("from an untrusted peer they are dropped, and the edge writes X-Forwarded-* and Forwarded itself", async () => {
    const e = echoOf(await send("/apps/front/whoami", { headers: { host: `edge.example:${port}`, ...spoofed } }));
    expect(JSON.stringify(e.headers)).not.toMatch(/203\.0\.113\.66|victim|\/admin/);
    for (const name of Object.keys(spoofed).filter(
      (n) =>
        !["forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-prefix"].includes(n),
    )) {
      expect(e.headers[name], name).toBeUndefined();
    }
    expect(e.headers).toMatchObject({
      "x-forwarded-for": "127.0.0.1",
      forwarded: `for=127.0.0.1;host="edge.example:${port}";proto=http`,
      "x-forwarded-host": `edge.example:${port}`,
      "x-forwarded-proto": "http",
      "x-forwarded-prefix": "/apps/front",
    });
    expect(e.sub).toBe("ip:127.0.0.1");
  });

  it("from a trusted proxy its canonical headers pass and the chains are appended to; underscore spellings still do not", async () => {
    const behind = await w.startEdge(() => ["--app", `front=${w.upstreams.front}`, "--trusted-proxy", "127.0.0.0/8"]);
    const e = echoOf(
      await send("/apps/front/whoami", {
        to: behind.port,
        headers: {
          "x-real-ip": "198.51.100.7",
          forwarded: "for=198.51.100.7",
          "x-forwarded-for": "198.51.100.7",
          x_real_ip: "203.0.113.66",
          x_ip_token: "forged",
        },
      }),
    );
    expect(e.headers).toMatchObject({ "x-real-ip": "198.51.100.7", "x-forwarded-for": "198.51.100.7, 127.0.0.1" });
    expect(e.headers.forwarded).toMatch(/^for=198\.51\.100\.7, for=127\.0\.0\.1;/);
    expect(e.headers["x_real_ip"]).toBeUndefined();
    expect(e.headers["x_ip_token"]).toBeUndefined();
    expect(e.sub).toBe("ip:198.51.100.7");
  });
});

describe("5. signing in and out cannot be forged from another site", () => {
  it("POST /login from another origin or site sets no cookie", async () => {
    const body = new URLSearchParams({ token: w.alice.token }).toString();
    for (const headers of [
      { origin: "http://evil.example" },
      { origin: "null" },
      { "sec-fetch-site": "cross-site" },
      { "sec-fetch-site": "same-site", origin: `http://side.example.test:${port}` },
    ]) {
      const r = await send("/login", { method: "POST", headers: form(headers), body });
      expect(r.status, JSON.stringify(headers)).toBe(403);
      expect(r.headers["set-cookie"]).toBeUndefined();
      expect(r.body).toContain("This sign-in was refused");
    }
    const own = await send("/login", {
      method: "POST",
      headers: form({ origin: `http://127.0.0.1:${port}`, "sec-fetch-site": "same-origin" }),
      body,
    });
    expect(own.status).toBe(303);
  });

  it("signing out takes a POST from this origin with the page's token; a GET, a bare POST or another site's POST change nothing", async () => {
    const session = await signIn();
    const signedIn = async () =>
      echoOf(await send("/apps/front/whoami", { headers: { cookie: session } })).sub === `user:${w.alice.id}`;
    const page = await send("/login", { headers: { cookie: session } });
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.body)?.[1] ?? "";
    expect(csrf).not.toBe("");

    const get = await send("/logout", { headers: { cookie: session } });
    expect(get.status).toBe(200);
    expect(get.headers["set-cookie"]).toBeUndefined();
    expect(await signedIn()).toBe(true);

    for (const [headers, body] of [
      [{}, ""],
      [{}, new URLSearchParams({ csrf: "wrong" }).toString()],
      [{ origin: "http://evil.example" }, new URLSearchParams({ csrf }).toString()],
      [{ "sec-fetch-site": "same-site" }, new URLSearchParams({ csrf }).toString()],
    ] as const) {
      const r = await send("/logout", { method: "POST", headers: form({ cookie: session, ...headers }), body });
      expect(r.status, JSON.stringify(headers)).toBe(403);
      expect(r.headers["set-cookie"]).toBeUndefined();
      expect(await signedIn()).toBe(true);
    }

    const out = await send("/logout", {
      method: "POST",
      headers: form({ cookie: session, origin: `http://127.0.0.1:${port}` }),
      body: new URLSearchParams({ csrf }).toString(),
    });
    expect(out.status).toBe(303);
    expect(await signedIn()).toBe(false);
  });

  it("the edge's pages run no script and load nothing, cannot be framed, and keep their window to themselves", async () => {
    const r = await send("/login");
    const csp = String(r.headers["content-security-policy"]);
    expect(csp).toMatch(/default-src 'none'/);
    expect(csp).toMatch(/style-src 'sha256-[\w+/=]+'/);
    expect(csp).not.toMatch(/unsafe-inline|script-src/);
    expect(csp).toMatch(/frame-ancestors 'none'/);
    expect(r.headers["cross-origin-opener-policy"]).toBe("same-origin");
    expect(r.body).not.toMatch(/style="/);
  });
});

describe("only a control-plane outage is a 503, and only it is logged as an error", () => {
  it("with the pool down, a viewer that needs it gets 503 control_plane_unavailable and the operator an error line", async () => {
    // Last: stops this world's control plane.
    expect(errorLines()).toEqual([]);
    await w.pool.stop();
    const r = await send("/apps/front/whoami", {
      headers: { authorization: `Bearer gpu_u_${randomBytes(24).toString("base64url")}` },
    });
    expect(r.status).toBe(503);
    expect(problemOf(r)).toMatchObject({ code: "control_plane_unavailable" });
    expect(r.body).not.toMatch(/127\.0\.0\.1|ECONNREFUSED|fetch failed/);
    expect(errorLines().join("\n")).toMatch(/cannot reach the control plane/);
  });
});
