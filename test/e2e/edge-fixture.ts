import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { IncomingHttpHeaders, IncomingMessage, Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, forwardIpToken } from "@gpupool/sdk";
import { startBinary, startServerBinary, testStorage } from "./binary.js";
import type { ServerProcess } from "./binary.js";

const ADMIN = "e2e-edge-admin-token-0123456789";

/** When the upstream's /sse ends its stream (after its first event). */
export const SSE_BYE_MS = 5_000;

/** What the tiny upstream app says about a request: the identity its X-IP-Token names. */
export interface Echo {
  sub: string | null;
  aud: string | null;
  /** The identity the pool itself accepts the token for (GET /v1/quota with the app key). */
  pool: { kind: string; id: string; tier: string } | null;
  authorization: string | null;
  cookie: string | null;
  forwardedFor: string | null;
  path: string;
  /** Every request header the app received. */
  headers: Record<string, string | string[] | undefined>;
}

function payloadOf(token: string | undefined): { sub?: string; aud?: string } {
  try {
    return JSON.parse(Buffer.from(token?.split(".")[1] ?? "", "base64url").toString("utf8")) as {
      sub?: string;
      aud?: string;
    };
  } catch {
    return {};
  }
}

/** What a hostile app answers at `/attack`: cookies for the edge's names, and a wipe of the site's cookies. */
export const ATTACK_HEADERS: [string, string][] = [
  ["set-cookie", "gpupool_session=gps_planted_by_the_app; Path=/"],
  ["set-cookie", "__Host-gpupool_session=gps_planted_by_the_app; Path=/; Secure"],
  ["set-cookie", "GPUPOOL_APP=planted; Path=/"],
  ["set-cookie", "=gpupool_session=gps_nameless; Path=/"],
  ["set-cookie", "gpupool_session=gps_planted_for_the_domain; Path=/; Domain=apps.test"],
  ["set-cookie", "app_own=kept; Path=/"],
  ["clear-site-data", '"cookies", "storage"'],
  ["service-worker-allowed", "/"],
];

/**
 * A tiny app behind the edge. `/whoami` echoes the identity; `/sse` streams two events 1.5 s
 * apart; `/call?target=URL` calls another app through the edge, forwarding its X-IP-Token like
 * an app-to-app call; `/attack` is a page of a hostile app (ATTACK_HEADERS); an Upgrade gets a
 * 101 and one WebSocket text frame with the echo.
 */
async function startUpstream(poolUrl: string, appKey: string, seen: Seen[]): Promise<{ url: string; server: Server }> {
  const echo = async (req: IncomingMessage): Promise<Echo> => {
    const token = forwardIpToken(req.headers);
    const { sub, aud } = payloadOf(token);
    let pool: Echo["pool"] = null;
    // The fuzz test's thousands of requests skip the pool's own check of the token.
    if (token !== undefined && req.headers["x-fuzz-id"] === undefined) {
      const q = await createClient({ url: poolUrl, appKey })
        .quota({ ipToken: token })
        .catch(() => null);
      pool = q ? { kind: q.identity.kind, id: q.identity.id, tier: q.identity.tier } : null;
    }
    const h = (n: string) => (typeof req.headers[n] === "string" ? req.headers[n] : null);
    return {
      sub: sub ?? null,
      aud: aud ?? null,
      pool,
      authorization: h("authorization"),
      cookie: h("cookie"),
      forwardedFor: h("x-forwarded-for"),
      path: req.url ?? "",
      headers: req.headers,
    };
  };
  const server = createServer((req, res) => {
    seen.push({ path: req.url ?? "", headers: req.headers });
    void (async () => {
      let url: URL;
      try {
        url = new URL(req.url ?? "/", "http://app");
      } catch {
        res.writeHead(400, { "content-type": "application/json" });
        res.end(JSON.stringify(await echo(req)));
        return;
      }
      if (url.pathname === "/sse") {
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
        res.write(`event: hello\ndata: ${JSON.stringify(await echo(req))}\n\n`);
        // Long after the first event: a test sees whether that one came through on its own.
        setTimeout(() => res.end("event: bye\ndata: {}\n\n"), SSE_BYE_MS);
        return;
      }
      if (url.pathname.endsWith("/attack")) {
        res.setHeader("content-type", "text/html; charset=utf-8");
        for (const [name, value] of ATTACK_HEADERS) res.appendHeader(name, value);
        res.end(`<!doctype html><title>hostile app</title><p id="app">an app page</p>`);
        return;
      }
      if (url.pathname === "/call") {
        const token = forwardIpToken(req.headers);
        const r = await fetch(url.searchParams.get("target") ?? "", {
          headers: token === undefined ? {} : { "x-ip-token": token },
        });
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          JSON.stringify({ status: r.status, chargedAs: r.headers.get("x-gpupool-charged-as"), echo: await r.json() }),
        );
        return;
      }
      res.writeHead(200, { "content-type": "application/json", "x-gpupool-charged-as": "user:forged-by-the-app" });
      res.end(JSON.stringify(await echo(req)));
    })();
  });
  server.on("upgrade", (req: IncomingMessage, socket) => {
    seen.push({ path: req.url ?? "", headers: req.headers });
    // Upgraded sockets are not closed by closeAllConnections: end them when the peer does.
    socket.on("end", () => socket.destroy());
    server.once("close", () => socket.destroy());
    void echo(req).then((e) => {
      const accept = createHash("sha1")
        .update(`${String(req.headers["sec-websocket-key"])}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
        .digest("base64");
      socket.write(
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
      );
      const text = Buffer.from(JSON.stringify(e));
      const header =
        text.length < 126
          ? Buffer.from([0x81, text.length])
          : Buffer.from([0x81, 126, text.length >> 8, text.length & 255]);
      socket.write(Buffer.concat([header, text]));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

/** A request an upstream app received. */
export interface Seen {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
}

export interface EdgeWorld {
  /** Every request the upstream apps received, in order. */
  readonly seen: Seen[];
  readonly pool: ServerProcess;
  readonly edge: ServerProcess;
  readonly alice: { id: string; token: string };
  readonly apps: { front: { id: string }; back: { id: string }; based: { id: string }; side: { id: string } };
  /** `based` is front's upstream under the base path `/base/`: what climbs out of it shows. `side` is back's. */
  readonly upstreams: { front: string; back: string; based: string; side: string };
  readonly edgeKey: string;
  /** The edge's --public-url: `http://edge.test:<its port>` (resolve *.test to 127.0.0.1 to use it). */
  readonly publicUrl: string;
  /** Starts another edge on the same pool and upstreams; `args` come after --server and the edge key. */
  startEdge(args: (port: number) => string[]): Promise<ServerProcess & { port: number }>;
  stop(): Promise<void>;
}

/** A port free right now, for an edge whose --public-url must name its port before it listens. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

/**
 * The real `gpupool server` and `gpupool edge` binaries, a user, and four apps on two upstreams:
 * `front`, `back` and `based` (front's, under /base/) by path, `side` (back's) on the host
 * side.example.test.
 */
export async function startEdgeWorld(): Promise<EdgeWorld> {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-edge-"));
  const pool = await startServerBinary(["--storage", testStorage(join(dir, "pool.db"))], {
    GPUPOOL_ADMIN_TOKEN: ADMIN,
  });
  const admin = createClient({ url: pool.url, adminToken: ADMIN });
  const alice = await admin.admin.createUser({ name: "alice", tier: "pro" });
  await admin.admin.createUser({ name: "owner", tier: "pro" });
  const front = await admin.admin.createApp({ name: "front", owner: "owner" });
  const back = await admin.admin.createApp({ name: "back", owner: "owner" });
  const based = await admin.admin.createApp({ name: "based", owner: "owner" });
  const side = await admin.admin.createApp({ name: "side", owner: "owner" });
  const edgeKey = await admin.admin.createEdge({ name: "edge-1" });
  const seen: Seen[] = [];
  const up = [await startUpstream(pool.url, front.key, seen), await startUpstream(pool.url, back.key, seen)];
  const upstreams = { front: up[0]!.url, back: up[1]!.url, based: `${up[0]!.url}/base/`, side: up[1]!.url };
  const others: ServerProcess[] = [];
  const startEdge = async (args: (port: number) => string[]) => {
    // The port is chosen before the edge listens (its --public-url names it): should another
    // process take it in between, choose again.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      try {
        const e = await startBinary(
          ["edge", "--server", pool.url, "--listen", `127.0.0.1:${port}`, ...args(port)],
          { GPUPOOL_EDGE_KEY: edgeKey.key },
          /gpupool edge listening on (http:\/\/\S+)/,
        );
        others.push(e);
        return { ...e, port };
      } catch (err) {
        if (attempt >= 3 || !String(err).includes("already in use")) throw err;
      }
    }
  };
  const edge = await startEdge((port) => [
    "--app",
    `front=${upstreams.front}`,
    "--app",
    `back=${upstreams.back}`,
    "--app",
    `based=${upstreams.based}`,
    "--app",
    `side=${upstreams.side}`,
    "--app-host",
    "side=side.example.test",
    "--public-url",
    `http://edge.test:${port}`,
  ]);
  return {
    seen,
    pool,
    edge,
    alice: { id: alice.id, token: alice.token },
    apps: { front: { id: front.id }, back: { id: back.id }, based: { id: based.id }, side: { id: side.id } },
    upstreams,
    edgeKey: edgeKey.key,
    publicUrl: `http://edge.test:${edge.port}`,
    startEdge,
    stop: async () => {
      for (const e of others) await e.stop();
      for (const u of up) {
        const closed = new Promise((r) => u.server.close(r));
        u.server.closeAllConnections();
        await closed;
      }
      await pool.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
