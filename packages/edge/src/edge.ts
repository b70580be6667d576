import { createServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { Duplex } from "node:stream";
import { problem } from "@gpupool/core";
import type { Problem } from "@gpupool/core";
import type { AppRoute, Route } from "./apps.js";
import { AppTable } from "./apps.js";
import { bearerUserToken, viewerToken } from "./viewer-token.js";
import type { Presented } from "./viewer-token.js";
import { forwardedElement } from "./client-headers.js";
import { ControlPlane, ControlPlaneDown, ControlPlaneRefusal, controlPlaneProblem } from "./control-plane.js";
import { withoutEdgeCookies } from "./cookies.js";
import type { Incoming } from "./incoming.js";
import { incoming, isProblem, parsePublicUrl } from "./incoming.js";
import type { Forward } from "./proxy.js";
import { forwardHttp, forwardUpgrade, sendProblem, writeRawProblem } from "./proxy.js";
import { SignIn, isNavigation } from "./sign-in.js";
import { startEdgeSpan } from "./tracing.js";
import { TrustedProxies, viewerAddress } from "./viewer-ip.js";
import type { Tracer } from "@opentelemetry/api";

export type EdgeLogLevel = "error" | "warn";

export interface EdgeOptions {
  /** The control plane's base URL. */
  readonly server: string;
  readonly edgeKey: string;
  readonly apps: readonly AppRoute[];
  /** Addresses or CIDR blocks whose X-Forwarded-For (and X-Forwarded-Proto…) is believed. */
  readonly trustedProxies?: readonly string[];
  /**
   * Where viewers reach the edge's own pages, e.g. `https://pool.example.com`: the sign-in host.
   * `https` says viewers come over TLS (a proxy in front terminates it), so cookies are `Secure`
   * and `__Host-` prefixed. Required when an app is served on a host of its own.
   */
  readonly publicUrl?: string;
  /** Serve each app without a host of its own at `<name>.<appDomain>` (and not under /apps/). */
  readonly appDomain?: string;
  readonly host?: string;
  readonly port?: number;
  /**
   * One line per event worth an operator's attention. `error`: the edge cannot do its job (the
   * control plane unreachable or refusing the edge key, a bug); `warn`: it coped. Nothing a
   * client sends is logged at `error`.
   */
  readonly log?: (line: string, level: EdgeLogLevel) => void;
  readonly now?: () => number;
  /** Traces proxied requests (tracing.ts); absent: the viewer's traceparent passes to the app as it is. */
  readonly tracer?: Tracer;
}

export interface RunningEdge {
  readonly url: string;
  readonly server: Server;
  close(): Promise<void>;
}

/** Where a request is handled: one of the edge's pages, or an app. */
type Decision =
  | { readonly kind: "page"; readonly serve: (res: ServerResponse) => Promise<void> | void }
  | { readonly kind: "problem"; readonly problem: Problem }
  | { readonly kind: "redirect"; readonly status: 303 | 308; readonly location: string }
  | { readonly kind: "app"; readonly route: Extract<Route, { kind: "app" }>; readonly presented: Presented };

/** The identity proxy (docs/edge.md): sign-in, sessions, and an X-IP-Token on every proxied request. */
export async function startEdge(options: EdgeOptions): Promise<RunningEdge> {
  const apps = new AppTable(options.apps, options.appDomain);
  const pub = options.publicUrl === undefined ? null : parsePublicUrl(options.publicUrl);
  if (apps.hasHostRoutes && pub === null) {
    throw new Error(
      "apps on hosts of their own (--app-host, --app-domain) need --public-url: the address of the edge's sign-in pages, on a host no app is served on",
    );
  }
  if (pub !== null && apps.forHost(pub.hostname) !== undefined)
    throw new Error(`--public-url ${pub.origin} is an app's host; the sign-in pages need a host of their own`);
  const trusted = new TrustedProxies(options.trustedProxies ?? []);
  const now = options.now ?? Date.now;
  const log = options.log ?? (() => undefined);
  const cp = new ControlPlane(options.server, options.edgeKey, (line) => log(line, "warn"));

  function failure(err: unknown): Problem {
    if (err instanceof ControlPlaneDown) {
      log(`edge: ${err.message}`, "error");
      return controlPlaneProblem();
    }
    if (err instanceof ControlPlaneRefusal) {
      // The pool refused the edge itself (a revoked edge key, an app it does not know).
      log(`edge: the control plane refused: [${err.problem.code}] ${err.problem.detail}`, "error");
      return problem(
        "control_plane_unavailable",
        `The GPU pool refused this edge (${err.problem.code}); nothing was forwarded. Tell the pool's operator.`,
      );
    }
    log(`edge: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`, "error");
    return problem("internal", "The edge failed to handle this request; nothing was forwarded.");
  }

  const signIn = new SignIn({ cp, edgeKey: options.edgeKey, apps, pub, now, failure });

  const peerOf = (req: IncomingMessage): string => req.socket.remoteAddress ?? "";
  /** TLS as the viewer sees it: --public-url https, a TLS socket, or a trusted proxy that says so. */
  const isSecure = (req: IncomingMessage, trustedPeer: boolean): boolean =>
    pub?.secure === true ||
    (req.socket as Partial<TLSSocket>).encrypted === true ||
    (trustedPeer &&
      String(req.headers["x-forwarded-proto"] ?? "")
        .split(",")[0]
        ?.trim() === "https");

  function take(req: IncomingMessage): Incoming | Problem {
    const peer = peerOf(req);
    const trustedPeer = trusted.has(peer);
    return incoming(req, peer, isSecure(req, trustedPeer), trustedPeer);
  }

  /** What the request presents as credentials. An app host's cookie stands for the session there. */
  function presented(inc: Incoming, session: string | null): Presented {
    // Node joins repeated headers with ", "; only headersDistinct (built on use) tells copies apart.
    const distinct = inc.req.headers["x-ip-token"] === undefined ? undefined : inc.req.headersDistinct["x-ip-token"];
    const ipToken = distinct === undefined ? undefined : distinct.length === 1 ? distinct[0] : distinct;
    return { ipToken, bearer: bearerUserToken(inc.req.headers), session };
  }

  /** Routing, and the sign-in pages: everything decided before an app is called. */
  async function decide(inc: Incoming): Promise<Decision> {
    const route = apps.route(inc.hostname, inc.path, inc.query);
    switch (route.kind) {
      case "outside":
        return {
          kind: "problem",
          problem: problem(
            "invalid_request",
            `This path leaves the app ${route.app.name}: a path's dot segments ("..", "%2e%2e", "..%2f"…) cannot climb above the app's root.`,
            { reason: "path_outside_app" },
          ),
        };
      case "slash":
        return { kind: "redirect", status: 308, location: route.location };
      case "own_host":
        // Never served on this origin, where it would share the sign-in pages' origin.
        return { kind: "redirect", status: 308, location: `${signIn.appOrigin(route.host)}${route.path}` };
      case "edge":
        return edgePage(inc);
      case "app": {
        if (!route.byHost) return { kind: "app", route, presented: presented(inc, signIn.session(inc)) };
        const reserved = edgePathOnAppHost(route.path);
        if (reserved !== null) return appHostPage(inc, reserved, route.path);
        const held = signIn.held(inc);
        const p = presented(inc, held?.session ?? null);
        // A browser tab opening the app with no word from the sign-in host, or with a session
        // since signed out: ask the sign-in host (a round trip of two redirects).
        if (isNavigation(inc.req) && p.bearer === null && p.ipToken === undefined) {
          const stale = held !== null && held.session !== null && (await cp.sessionUser(held.session, now())) === null;
          if (held === null || stale)
            return { kind: "page", serve: (res) => signIn.startHostSignIn(inc, res, route.path, false) };
        }
        return { kind: "app", route, presented: p };
      }
    }
  }

  /** The edge's pages on its own host(s): any host that is not an app's. */
  function edgePage(inc: Incoming): Decision {
    const p = inc.path;
    if (p === "/login" || p === "/.gpupool/login")
      return { kind: "page", serve: (res) => signIn.login(inc, res, p === "/login" ? "" : "/.gpupool") };
    if (p === "/logout" || p === "/.gpupool/logout")
      return { kind: "page", serve: (res) => signIn.logout(inc, res, p === "/logout" ? "" : "/.gpupool") };
    if (p === "/.gpupool/enter") return { kind: "page", serve: (res) => signIn.issueTicket(inc, res) };
    if (p === "/") return { kind: "page", serve: (res) => signIn.index(inc, res) };
    return {
      kind: "problem",
      problem: problem("not_found", `No app at this path. The apps behind this edge: ${apps.names.join(", ")}.`),
    };
  }

  /** On an app's host, `/.gpupool/…` belongs to the edge (so an app never sees a sign-in ticket). */
  function appHostPage(inc: Incoming, page: string, pathAndQuery: string): Decision {
    const next = new URLSearchParams(inc.query).get("next") ?? "/";
    if (page === "enter") return { kind: "page", serve: (res) => signIn.finishHostSignIn(inc, res) };
    if (page === "login") return { kind: "page", serve: (res) => signIn.startHostSignIn(inc, res, next, true) };
    // Signing out happens on the sign-in host, whose form an app's pages cannot reach.
    if (page === "logout") return { kind: "redirect", status: 303, location: `${pub?.origin ?? ""}/login` };
    return {
      kind: "problem",
      problem: problem(
        "not_found",
        `${pathAndQuery.split("?")[0] ?? ""} belongs to the edge, and there is no such page.`,
      ),
    };
  }

  /** Attribution plus everything the app and the viewer are told about it. */
  async function prepare(inc: Incoming, route: Extract<Route, { kind: "app" }>, p: Presented): Promise<Forward | null> {
    const req = inc.req;
    const peer = inc.peer;
    const address = viewerAddress(peer, req.headers["x-forwarded-for"], trusted);
    // Only a socket closed before the request was read has no address: nobody to answer.
    if (address === null) return null;
    const who = await viewerToken(p, route.app.name, address, cp, now());
    const cookie = withoutEdgeCookies(req.headers.cookie);
    const proto = inc.secure ? "https" : "http";
    const bare = peer.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "");
    const priorFor = req.headers["x-forwarded-for"];
    const priorForwarded = req.headers.forwarded;
    const set: Record<string, string> = {
      "x-ip-token": who.token.token,
      // Appended to only when the peer is a proxy we trust; otherwise what the client wrote is noise.
      "x-forwarded-for":
        (inc.trustedPeer && typeof priorFor === "string" && priorFor.trim() !== "" ? `${priorFor}, ` : "") + bare,
      forwarded:
        (inc.trustedPeer && typeof priorForwarded === "string" && priorForwarded.trim() !== ""
          ? `${priorForwarded}, `
          : "") + forwardedElement(bare, inc.host, proto),
      "x-forwarded-proto": proto,
      "x-forwarded-host": inc.host,
      ...(route.prefix !== "" ? { "x-forwarded-prefix": route.prefix } : {}),
      ...(cookie !== undefined ? { cookie } : {}),
    };
    const remove = [...(cookie === undefined ? ["cookie"] : []), ...(who.consumedBearer ? ["authorization"] : [])];
    const responseHeaders: Record<string, string> = {
      "x-gpupool-charged-as": who.subject,
      ...(who.dropped !== null ? { "x-gpupool-token-dropped": who.dropped } : {}),
    };
    return {
      upstream: route.app.upstream,
      path: route.path,
      set,
      remove,
      responseHeaders,
      trustedPeer: inc.trustedPeer,
    };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const inc = take(req);
    if (isProblem(inc)) return sendProblem(res, inc);
    const d = await decide(inc);
    switch (d.kind) {
      case "problem":
        return sendProblem(res, d.problem);
      case "redirect":
        res.writeHead(d.status, { location: d.location, "cache-control": "no-store" });
        res.end();
        return;
      case "page":
        return d.serve(res);
      case "app": {
        let forward: Forward | null;
        try {
          forward = await prepare(inc, d.route, d.presented);
        } catch (err) {
          return sendProblem(res, failure(err));
        }
        if (forward === null) return void res.destroy();
        const span = options.tracer && startEdgeSpan(options.tracer, req, d.route.app.name);
        if (span) res.once("close", () => span.end(res.statusCode));
        const traced = span ? { ...forward, set: { ...forward.set, traceparent: span.traceparent } } : forward;
        forwardHttp(req, res, traced, d.route.app.name);
      }
    }
  }

  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const inc = take(req);
    if (isProblem(inc)) return writeRawProblem(socket, inc);
    const d = await decide(inc);
    if (d.kind === "problem") return writeRawProblem(socket, d.problem);
    if (d.kind !== "app") return writeRawProblem(socket, problem("not_found", "No app at this path for an upgrade."));
    let forward: Forward | null;
    try {
      forward = await prepare(inc, d.route, d.presented);
    } catch (err) {
      return writeRawProblem(socket, failure(err));
    }
    if (forward === null) return void socket.destroy();
    forwardUpgrade(req, socket, head, forward, d.route.app.name);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => sendProblem(res, failure(err)));
  });
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => socket.destroy());
    upgrade(req, socket, head).catch((err: unknown) => writeRawProblem(socket, failure(err)));
  });
  // CONNECT asks for a tunnel to anywhere: the edge is no forward proxy.
  server.on("connect", (_req: IncomingMessage, socket: Duplex) => {
    socket.on("error", () => socket.destroy());
    writeRawProblem(
      socket,
      problem(
        "invalid_request",
        "CONNECT is not served: the edge is a reverse proxy for its apps, not a forward proxy.",
        { reason: "connect" },
      ),
    );
  });
  // A request Node cannot parse (bad framing, headers too large): answered as a problem, like the rest.
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    // As Node's own handler does: nothing is written into a response already under way.
    if (
      err.code === "ECONNRESET" ||
      !socket.writable ||
      (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true
    ) {
      socket.destroy();
      return;
    }
    const tooLarge = err.code === "HPE_HEADER_OVERFLOW";
    // The method is a guess from the bytes that failed to parse: a HEAD gets no body.
    const raw: unknown = (err as { rawPacket?: unknown }).rawPacket;
    const headOnly = raw instanceof Buffer && raw.subarray(0, 5).toString("latin1") === "HEAD ";
    writeRawProblem(
      socket,
      problem(
        "invalid_request",
        tooLarge
          ? "The request's headers are larger than this edge accepts (16 KiB)."
          : "The request is not well-formed HTTP/1.1.",
        { reason: tooLarge ? "headers_too_large" : "malformed_http" },
      ),
      {},
      headOnly,
    );
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

/** `/.gpupool/<page>` on an app's host (however its first segment is spelled), or null. */
function edgePathOnAppHost(pathAndQuery: string): string | null {
  const path = pathAndQuery.split("?")[0] ?? "";
  const [, first = "", page = ""] = path.split("/");
  if (first.toLowerCase().replace(/%2e/gi, ".") !== ".gpupool") return null;
  return page.toLowerCase();
}
