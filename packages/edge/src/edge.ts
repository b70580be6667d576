import { createServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import type { Duplex } from "node:stream";
import { problem } from "@gpupool/core";
import type { AppRoute, Routed } from "./apps.js";
import { AppTable, hostName } from "./apps.js";
import { attribute } from "./attribution.js";
import type { ViewerAttribution } from "./attribution.js";
import { ControlPlane, ControlPlaneDown, ControlPlaneRefusal, controlPlaneProblem } from "./control-plane.js";
import { SESSION_COOKIE, clearedSessionCookie, parseCookies, sessionCookie, withoutSessionCookie } from "./cookies.js";
import { indexPage, loginPage, safeNext } from "./login-page.js";
import type { Forward } from "./proxy.js";
import { forwardHttp, forwardUpgrade, sendProblem, writeRawProblem } from "./proxy.js";
import { TrustedProxies, viewerAddress } from "./viewer-ip.js";

export interface EdgeOptions {
  /** The control plane's base URL. */
  readonly server: string;
  readonly edgeKey: string;
  readonly apps: readonly AppRoute[];
  /** Addresses or CIDR blocks whose X-Forwarded-For is believed. */
  readonly trustedProxies?: readonly string[];
  readonly host?: string;
  readonly port?: number;
  /** One line per problem worth an operator's attention (the control plane unreachable…). */
  readonly log?: (line: string) => void;
  readonly now?: () => number;
}

export interface RunningEdge {
  readonly url: string;
  readonly server: Server;
  close(): Promise<void>;
}

const LOGIN_BODY_LIMIT = 8 * 1024;

/** The identity proxy of SPEC §5: sign-in, sessions, and an X-IP-Token on every proxied request. */
export async function startEdge(options: EdgeOptions): Promise<RunningEdge> {
  const apps = new AppTable(options.apps);
  const trusted = new TrustedProxies(options.trustedProxies ?? []);
  const cp = new ControlPlane(options.server, options.edgeKey);
  const now = options.now ?? Date.now;
  const log = options.log ?? (() => undefined);

  const peerOf = (req: IncomingMessage): string => req.socket.remoteAddress ?? "";
  const addressOf = (req: IncomingMessage): string | null => viewerAddress(peerOf(req), req.headers["x-forwarded-for"], trusted);
  /** Secure cookies when the viewer reached us over TLS, directly or through a trusted proxy. */
  const secure = (req: IncomingMessage): boolean =>
    (req.socket as Partial<TLSSocket>).encrypted === true || (trusted.has(peerOf(req)) && String(req.headers["x-forwarded-proto"] ?? "").split(",")[0]?.trim() === "https");

  const forwardedFor = (req: IncomingMessage): string => {
    const prior = req.headers["x-forwarded-for"];
    const chain = trusted.has(peerOf(req)) && typeof prior === "string" && prior.trim() !== "" ? `${prior}, ` : "";
    return chain + peerOf(req).replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "");
  };

  /** Attribution plus everything the app and the viewer are told about it. */
  async function prepare(req: IncomingMessage, routed: Routed): Promise<Forward> {
    const address = addressOf(req);
    if (address === null) throw new Error(`unusable client address "${peerOf(req)}"`);
    const who: ViewerAttribution = await attribute(req, routed.app.name, address, cp, now());
    const cookie = withoutSessionCookie(req.headers.cookie);
    const set: Record<string, string> = {
      "x-ip-token": who.token.token,
      // Appended to only when the peer is a proxy we trust; otherwise what the client wrote is noise.
      "x-forwarded-for": forwardedFor(req),
      "x-forwarded-proto": secure(req) ? "https" : "http",
      "x-forwarded-host": req.headers.host ?? "",
      ...(routed.prefix !== "" ? { "x-forwarded-prefix": routed.prefix } : {}),
      ...(cookie !== undefined ? { cookie } : {}),
    };
    const remove = [...(cookie === undefined ? ["cookie"] : []), ...(who.consumedBearer ? ["authorization"] : [])];
    const responseHeaders: Record<string, string> = { "x-gpupool-charged-as": who.subject, ...(who.dropped !== null ? { "x-gpupool-token-dropped": who.dropped } : {}) };
    return { upstream: routed.app.upstream, path: routed.path, set, remove, responseHeaders };
  }

  function failure(err: unknown): ReturnType<typeof problem> {
    if (err instanceof ControlPlaneDown) {
      log(`edge: ${err.message}`);
      return controlPlaneProblem(err);
    }
    if (err instanceof ControlPlaneRefusal) {
      // The pool refused the edge itself (a revoked edge key, an app it does not know).
      log(`edge: the control plane refused: [${err.problem.code}] ${err.problem.detail}`);
      return problem("control_plane_unavailable", `The GPU pool refused this edge (${err.problem.code}): ${err.problem.detail}`);
    }
    log(`edge: ${err instanceof Error ? err.message : String(err)}`);
    return problem("internal", "The edge failed to handle this request; nothing was forwarded.");
  }

  async function currentUser(req: IncomingMessage): Promise<string | undefined> {
    const s = parseCookies(req.headers.cookie).get(SESSION_COOKIE);
    if (s === undefined || s === "") return undefined;
    const user = await cp.sessionUser(s, now()).catch(() => null);
    return user === null ? undefined : `${user.name} (user:${user.id})`;
  }

  function html(res: ServerResponse, status: number, body: string, extra: Record<string, string | string[]> = {}): void {
    res.writeHead(status, { ...extra, "content-type": "text/html; charset=utf-8", "cache-control": "no-store", "x-frame-options": "DENY", "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'" });
    res.end(body);
  }

  async function readForm(req: IncomingMessage): Promise<URLSearchParams | null> {
    let size = 0;
    const chunks: Buffer[] = [];
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > LOGIN_BODY_LIMIT) return null;
      chunks.push(chunk);
    }
    return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
  }

  async function login(req: IncomingMessage, res: ServerResponse, prefix: string): Promise<void> {
    const url = new URL(req.url ?? "/", "http://edge");
    if (req.method !== "POST") return html(res, 200, loginPage({ next: safeNext(url.searchParams.get("next") ?? undefined), action: prefix, ...optional("signedInAs", await currentUser(req)) }));
    const form = await readForm(req);
    if (form === null) return sendProblem(res, problem("payload_too_large", "The sign-in form is larger than 8 KiB."));
    const next = safeNext(form.get("next") ?? undefined);
    const token = (form.get("token") ?? "").trim();
    const name = (form.get("name") ?? "").trim();
    if (token === "") return html(res, 400, loginPage({ next, action: prefix, error: "Enter your user token." }));
    try {
      const s = await cp.openSession(token, name === "" ? undefined : name);
      res.writeHead(303, { location: next, "set-cookie": sessionCookie(s.session, (s.expiresAt - now()) / 1000, secure(req)), "cache-control": "no-store" });
      res.end();
    } catch (err) {
      if (err instanceof ControlPlaneRefusal && err.problem.code === "invalid_credentials") return html(res, 401, loginPage({ next, action: prefix, error: err.problem.detail }));
      const p = failure(err);
      html(res, p.status, loginPage({ next, action: prefix, error: p.detail }));
    }
  }

  async function logout(req: IncomingMessage, res: ServerResponse, prefix: string): Promise<void> {
    const s = parseCookies(req.headers.cookie).get(SESSION_COOKIE);
    // The cookie is cleared whatever happens; the revocation is what makes a copied cookie useless.
    if (s !== undefined && s !== "") await cp.revokeSession(s).catch((err: unknown) => void failure(err));
    res.writeHead(303, { location: `${prefix}/login`, "set-cookie": clearedSessionCookie(secure(req)), "cache-control": "no-store" });
    res.end();
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const host = hostName(req.headers.host);
    const url = req.url ?? "/";
    const path = url.split("?")[0] ?? "/";
    // Host-routed apps own every path but /.gpupool/*; the edge's own host also answers /login.
    const prefix = apps.forHost(host) ? "/.gpupool" : "";
    if (path === `${prefix}/login` || path === "/.gpupool/login") return login(req, res, path.startsWith("/.gpupool") ? "/.gpupool" : "");
    if (path === `${prefix}/logout` || path === "/.gpupool/logout") return logout(req, res, path.startsWith("/.gpupool") ? "/.gpupool" : "");
    const routed = apps.route(host, url);
    if (routed === null) {
      if (path === "/") return html(res, 200, indexPage(apps.names, await currentUser(req)));
      return sendProblem(res, problem("not_found", `No app at ${path}. The apps behind this edge are under /apps/<name>/: ${apps.names.join(", ")}.`));
    }
    if ("redirect" in routed) {
      res.writeHead(308, { location: routed.redirect });
      res.end();
      return;
    }
    let forward: Forward;
    try {
      forward = await prepare(req, routed);
    } catch (err) {
      return sendProblem(res, failure(err));
    }
    forwardHttp(req, res, forward, routed.app.name);
  }

  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const routed = apps.route(hostName(req.headers.host), req.url ?? "/");
    if (routed === null || "redirect" in routed) return writeRawProblem(socket, problem("not_found", "No app at this path for an upgrade."));
    let forward: Forward;
    try {
      forward = await prepare(req, routed);
    } catch (err) {
      return writeRawProblem(socket, failure(err));
    }
    forwardUpgrade(req, socket, head, forward, routed.app.name);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => sendProblem(res, failure(err)));
  });
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => socket.destroy());
    upgrade(req, socket, head).catch((err: unknown) => writeRawProblem(socket, failure(err)));
  });
  // Upgraded sockets leave the server's bookkeeping (closeAllConnections skips them): track all.
  const sockets = new Set<Duplex>();
  server.on("connection", (socket: Duplex) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  // SSE and WebSockets live long: no idle timeout on proxied connections.
  server.requestTimeout = 0;
  server.keepAliveTimeout = 65_000;

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 7080, options.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const shownHost = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${shownHost}:${addr.port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Open SSE streams and WebSockets would keep close() waiting forever.
        server.closeAllConnections();
        for (const socket of sockets) socket.destroy();
      }),
  };
}

function optional<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [P in K]?: V };
}
