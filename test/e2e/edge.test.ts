import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:net";
import { SignJWT, generateKeyPair } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startBinary } from "./binary.js";
import type { Echo, EdgeWorld } from "./edge-fixture.js";
import { SSE_BYE_MS, startEdgeWorld } from "./edge-fixture.js";
import { startOtlpReceiver } from "../otlp-receiver.js";

/** Polls `check` until it returns something (20 s at most). */
async function waitUntil<T>(check: () => T | undefined): Promise<T> {
  for (const until = Date.now() + 20_000; ;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error("waitUntil: not within 20 s");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** docs/edge.md through the real binaries: every proxied request carries a token naming the right viewer. */

let w: EdgeWorld;
beforeAll(async () => {
  w = await startEdgeWorld();
}, 60_000);
afterAll(async () => {
  await w?.stop();
});

async function get(
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; echo: Echo }> {
  const r = await fetch(`${w.edge.url}${path}`, { headers, redirect: "manual" });
  return { status: r.status, headers: r.headers, echo: (await r.json()) as Echo };
}

describe("gpupool edge: who each proxied request is charged to", () => {
  it("a viewer with a Bearer user token → that user; the pool accepts the token; the user token is not passed on", async () => {
    const r = await get("/apps/front/whoami?x=1", { authorization: `Bearer ${w.alice.token}` });
    expect(r.status).toBe(200);
    expect(r.echo).toMatchObject({
      sub: `user:${w.alice.id}`,
      aud: w.apps.front.id,
      pool: { kind: "user", id: w.alice.id, tier: "pro" },
      path: "/whoami?x=1",
      authorization: null,
    });
    // The edge's header wins over one the app tried to set.
    expect(r.headers.get("x-gpupool-charged-as")).toBe(`user:${w.alice.id}`);
    expect(r.headers.get("x-gpupool-token-dropped")).toBeNull();
  });

  it("no credentials → the client's IP at the anonymous tier", async () => {
    const r = await get("/apps/front/whoami");
    expect(r.echo).toMatchObject({ sub: "ip:127.0.0.1", pool: { kind: "ip", id: "127.0.0.1", tier: "anonymous" } });
    expect(r.headers.get("x-gpupool-charged-as")).toBe("ip:127.0.0.1");
  });

  it("a spoofed X-IP-Token and X-Forwarded-For from an untrusted peer are ignored, and the response says so", async () => {
    const r = await get("/apps/front/whoami", {
      "x-ip-token": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1c2VyOnZpY3RpbSJ9.",
      "x-forwarded-for": "203.0.113.9",
    });
    expect(r.echo).toMatchObject({
      sub: "ip:127.0.0.1",
      pool: { kind: "ip", id: "127.0.0.1" },
      forwardedFor: "127.0.0.1",
    });
    expect(r.headers.get("x-gpupool-charged-as")).toBe("ip:127.0.0.1");
    expect(r.headers.get("x-gpupool-token-dropped")).toMatch(/alg_not_allowed|unknown_key|malformed/);

    // Well-formed, EdDSA, but signed by someone else's key.
    const { privateKey } = await generateKeyPair("EdDSA");
    const forged = await new SignJWT({})
      .setProtectedHeader({ alg: "EdDSA", kid: "x" })
      .setIssuer("gpupool")
      .setSubject(`user:${w.alice.id}`)
      .setAudience(w.apps.front.id)
      .setExpirationTime("5m")
      .sign(privateKey);
    const f = await get("/apps/front/whoami", { "x-ip-token": forged });
    expect(f.echo.sub).toBe("ip:127.0.0.1");
    expect(f.headers.get("x-gpupool-token-dropped")).toBe("unknown_key");
  });

  it("app-to-app: the token the first app forwards is re-issued for the second app, naming the original user", async () => {
    const target = `${w.edge.url}/apps/back/whoami`;
    const r = await fetch(`${w.edge.url}/apps/front/call?target=${encodeURIComponent(target)}`, {
      headers: { authorization: `Bearer ${w.alice.token}` },
    });
    const body = (await r.json()) as { status: number; chargedAs: string; echo: Echo };
    expect(body.status).toBe(200);
    expect(body.chargedAs).toBe(`user:${w.alice.id}`);
    expect(body.echo).toMatchObject({
      sub: `user:${w.alice.id}`,
      aud: w.apps.back.id,
      pool: { kind: "user", id: w.alice.id },
    });
  });

  it("signing in at /login sets an HttpOnly session cookie; the cookie identifies the user and is not passed on; signing out revokes it", async () => {
    const form = new URLSearchParams({ name: "alice", token: w.alice.token, next: "/apps/front/whoami" });
    const login = await fetch(`${w.edge.url}/login`, { method: "POST", body: form, redirect: "manual" });
    expect(login.status).toBe(303);
    expect(login.headers.get("location")).toBe("/apps/front/whoami");
    const setCookie = login.headers.get("set-cookie") ?? "";
    expect(setCookie).toMatch(/^gpupool_session=gps_[^;]+; Path=\/; HttpOnly; SameSite=Lax; Max-Age=\d+$/);
    const cookie = `${setCookie.split(";")[0]!}; theme=dark`;
    const r = await get("/apps/front/whoami", { cookie });
    expect(r.echo).toMatchObject({ sub: `user:${w.alice.id}`, cookie: "theme=dark" });

    const bad = await fetch(`${w.edge.url}/login`, {
      method: "POST",
      body: new URLSearchParams({ token: "gpu_u_wrong" }),
    });
    expect(bad.status).toBe(401);
    expect(await bad.text()).toMatch(/not valid/);

    // The sign-out button carries the page's token; with it, the session is revoked.
    const page = await (await fetch(`${w.edge.url}/login`, { headers: { cookie } })).text();
    const csrf = /name="csrf" value="([^"]+)"/.exec(page)?.[1] ?? "";
    const out = await fetch(`${w.edge.url}/logout`, {
      method: "POST",
      headers: { cookie },
      body: new URLSearchParams({ csrf }),
      redirect: "manual",
    });
    expect(out.status).toBe(303);
    expect(out.headers.get("set-cookie")).toMatch(/^gpupool_session=; .*Max-Age=0/);
    // A copy of the cookie is useless once revoked.
    expect((await get("/apps/front/whoami", { cookie })).echo.sub).toBe("ip:127.0.0.1");
  });

  it("Server-Sent Events stream through unbuffered, with the injected identity", async () => {
    const started = Date.now();
    const r = await fetch(`${w.edge.url}/apps/front/sse`, { headers: { authorization: `Bearer ${w.alice.token}` } });
    expect(r.headers.get("content-type")).toBe("text/event-stream");
    expect(r.headers.get("x-gpupool-charged-as")).toBe(`user:${w.alice.id}`);
    const reader = r.body!.getReader();
    let text = "";
    while (!text.includes("\n\n")) text += new TextDecoder().decode((await reader.read()).value);
    // The first event arrives on its own, before the upstream ends the stream (5 s later): a
    // buffering proxy would hand over both at the end. The time only bounds that loosely, with
    // room for a stalled machine (it was 1.2 s against 1.5 s).
    expect(text).toContain("event: hello");
    expect(text).not.toContain("event: bye");
    expect(Date.now() - started).toBeLessThan(SSE_BYE_MS - 1_000);
    expect(JSON.parse(/data: (.*)/.exec(text)![1]!)).toMatchObject({ sub: `user:${w.alice.id}` });
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    expect(text).toContain("event: bye");
  });

  it("a WebSocket upgrade passes through with the injected identity", async () => {
    const port = Number(new URL(w.edge.url).port);
    const socket = connect(port, "127.0.0.1");
    const received = await new Promise<string>((resolve, reject) => {
      let data = Buffer.alloc(0);
      socket.on("data", (d: Buffer) => {
        data = Buffer.concat([data, d]);
        const end = data.indexOf("\r\n\r\n");
        if (end >= 0 && data.length > end + 6) resolve(data.toString("latin1"));
      });
      socket.on("error", reject);
      socket.write(
        "GET /apps/back/ws HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${w.alice.token}\r\nX-IP-Token: forged\r\n\r\n`,
      );
    });
    socket.destroy();
    expect(received).toMatch(/^HTTP\/1\.1 101 /);
    expect(received).toMatch(/sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i);
    expect(received).toMatch(new RegExp(`x-gpupool-charged-as: user:${w.alice.id}`, "i"));
    const frame = received.slice(received.indexOf("\r\n\r\n") + 4);
    const json = frame.slice(frame.indexOf("{"));
    expect(JSON.parse(json.slice(0, json.lastIndexOf("}") + 1))).toMatchObject({
      sub: `user:${w.alice.id}`,
      aud: w.apps.back.id,
    });
  });

  it("unknown apps are a 404 problem; /apps/<name> redirects to the trailing slash", async () => {
    const r = await fetch(`${w.edge.url}/apps/nope/x`);
    expect(r.status).toBe(404);
    expect(r.headers.get("content-type")).toMatch(/problem\+json/);
    const slash = await fetch(`${w.edge.url}/apps/front?a=1`, { redirect: "manual" });
    expect(slash.status).toBe(308);
    expect(slash.headers.get("location")).toBe("/apps/front/?a=1");
  });

  it("the viewer's W3C trace context reaches the app: as it is, or under the edge's span when the edge traces", async () => {
    const viewerTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
    const traceparent = `00-${viewerTrace}-00f067aa0ba902b7-01`;
    const plain = await get("/apps/front/whoami", { traceparent, tracestate: "vendor=1" });
    expect(plain.echo.headers).toMatchObject({ traceparent, tracestate: "vendor=1" });

    const receiver = await startOtlpReceiver();
    try {
      const traced = await w.startEdge(() => [
        "--app",
        `front=${w.upstreams.front}`,
        "--otlp-endpoint",
        `${receiver.url}/v1/traces`,
      ]);
      const r = await fetch(`http://127.0.0.1:${traced.port}/apps/front/whoami`, { headers: { traceparent } });
      const forwarded = String(((await r.json()) as Echo).headers["traceparent"]);
      const [, traceId, parent] = forwarded.split("-");
      expect(traceId).toBe(viewerTrace);
      expect(parent).not.toBe("00f067aa0ba902b7");
      // The edge flushes its spans as it stops.
      await traced.stop();
      const span = await waitUntil(() => receiver.spans.find((s) => s.spanId === parent));
      expect(span).toMatchObject({ traceId: viewerTrace, parentSpanId: "00f067aa0ba902b7", name: "GET app front" });
      expect(span.attributes).toMatchObject({ "gpupool.app.name": "front", "http.response.status_code": 200 });
      expect(span.resource["service.name"]).toBe("gpupool-edge");
    } finally {
      await receiver.close();
    }
  });

  it("behind a trusted proxy, the right-most untrusted X-Forwarded-For entry is the viewer", async () => {
    const behind = await startBinary(
      [
        "edge",
        "--server",
        w.pool.url,
        "--listen",
        "127.0.0.1:0",
        "--app",
        `front=${w.upstreams.front}`,
        "--trusted-proxy",
        "127.0.0.0/8",
      ],
      { GPUPOOL_EDGE_KEY: w.edgeKey },
      /gpupool edge listening on (http:\/\/\S+)/,
    );
    try {
      const r = await fetch(`${behind.url}/apps/front/whoami`, {
        headers: { "x-forwarded-for": "192.0.2.66, 203.0.113.9" },
      });
      const echo = (await r.json()) as Echo;
      expect(echo).toMatchObject({
        sub: "ip:203.0.113.9",
        pool: { kind: "ip", id: "203.0.113.9" },
        forwardedFor: "192.0.2.66, 203.0.113.9, 127.0.0.1",
      });
      const v6 = (await (
        await fetch(`${behind.url}/apps/front/whoami`, { headers: { "x-forwarded-for": "2001:db8:1:2:3:4:5:6" } })
      ).json()) as Echo;
      expect(v6.sub).toBe("ip:2001:db8:1:2::/64");
    } finally {
      expect(await behind.stop()).toBe(0);
    }
  });

  it("--app-host serves an app at the root of its host, and only there; /.gpupool/ on it belongs to the edge", async () => {
    const port = Number(new URL(w.edge.url).port);
    const viaHost = (path: string) =>
      new Promise<{ status: number; body: string; charged: string | undefined; location: string | undefined }>(
        (resolve, reject) => {
          const req = request(
            {
              host: "127.0.0.1",
              port,
              path,
              headers: { host: `side.example.test:${port}`, authorization: `Bearer ${w.alice.token}` },
            },
            (res) => {
              let body = "";
              res.on("data", (d: Buffer) => (body += d.toString()));
              res.on("end", () =>
                resolve({
                  status: res.statusCode ?? 0,
                  body,
                  charged: res.headers["x-gpupool-charged-as"] as string | undefined,
                  location: res.headers.location,
                }),
              );
            },
          );
          req.on("error", reject);
          req.end();
        },
      );
    const app = await viaHost("/login?x=1");
    expect(JSON.parse(app.body)).toMatchObject({ path: "/login?x=1", sub: `user:${w.alice.id}`, aud: w.apps.side.id });
    expect(app.charged).toBe(`user:${w.alice.id}`);
    // Signing in is on the sign-in host (--public-url), which gives this host a ticket back.
    const signIn = await viaHost("/.gpupool/login?next=/x");
    expect(signIn.status).toBe(303);
    expect(signIn.location).toMatch(
      new RegExp(`^${w.publicUrl}/\\.gpupool/enter\\?host=side\\.example\\.test&state=[\\w-]+&next=%2Fx&login=1$`),
    );
    // Never on the sign-in pages' origin, under /apps/: sent to its own host.
    const moved = await fetch(`${w.edge.url}/apps/side/x?y=1`, { redirect: "manual" });
    expect(moved.status).toBe(308);
    expect(moved.headers.get("location")).toBe(`http://side.example.test:${port}/x?y=1`);
  });

  it("reads public_url and app_domain from --config's edge: section", async () => {
    const dir = mkdtempSync(join(tmpdir(), "gpupool-edge-config-"));
    try {
      const file = join(dir, "gpupool.yaml");
      const edge = await w.startEdge((p) => {
        writeFileSync(
          file,
          `edge:\n  public_url: http://edge.test:${p}\n  app_domain: apps.test\n  apps:\n    front: ${w.upstreams.front}\n`,
        );
        return ["--config", file];
      });
      const r = await new Promise<{ status: number; location: string | undefined }>((resolve, reject) => {
        const req = request(
          {
            host: "127.0.0.1",
            port: edge.port,
            path: "/x",
            headers: { host: "front.apps.test", "upgrade-insecure-requests": "1", accept: "text/html" },
          },
          (res) => {
            res.resume();
            resolve({ status: res.statusCode ?? 0, location: res.headers.location });
          },
        );
        req.on("error", reject);
        req.end();
      });
      expect(r.status).toBe(303);
      expect(r.location).toMatch(
        new RegExp(`^http://edge\\.test:${edge.port}/\\.gpupool/enter\\?host=front\\.apps\\.test&`),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses to start without an edge key or apps (exit 2, saying what to do)", async () => {
    const noKey = await runCli(["edge", "--server", w.pool.url, "--app", "front=http://127.0.0.1:1"], {
      GPUPOOL_EDGE_KEY: "",
    });
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toMatch(/edge key is required/);
    const noApps = await runCli(["edge", "--server", w.pool.url], { GPUPOOL_EDGE_KEY: w.edgeKey });
    expect(noApps.code).toBe(2);
    expect(noApps.stderr).toMatch(/no apps/);
    // Apps on hosts of their own need a sign-in host apart from them.
    const noPublicUrl = await runCli(
      ["edge", "--server", w.pool.url, "--app", "front=http://127.0.0.1:1", "--app-domain", "apps.test"],
      { GPUPOOL_EDGE_KEY: w.edgeKey },
    );
    expect(noPublicUrl.code).toBe(2);
    expect(noPublicUrl.stderr).toMatch(/need --public-url/);
  });

  it("exits 0 on SIGTERM", async () => {
    // Last: the edge of this world is stopped here (stop() in afterAll is then a no-op).
    expect(await w.edge.stop("SIGTERM")).toBe(0);
  });
});
