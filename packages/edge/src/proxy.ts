import { request as httpRequest, Agent as HttpAgent } from "node:http";
import type {
  ClientRequest,
  IncomingHttpHeaders,
  IncomingMessage,
  OutgoingHttpHeaders,
  ServerResponse,
} from "node:http";
import { request as httpsRequest, Agent as HttpsAgent } from "node:https";
import type { Duplex } from "node:stream";
import { problem } from "@gpupool/core";
import type { Problem } from "@gpupool/core";
import { dropFromClient } from "./client-headers.js";
import { appSetCookies } from "./cookies.js";

/** Per-connection headers (RFC 9110 §7.6.1): never copied through. Identity headers: client-headers.ts. */
const REQUEST_DROPPED = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "host",
]);
/**
 * Per-connection headers, and what an app must not tell the browser on the edge's behalf:
 * `Clear-Site-Data` would wipe the edge's cookies (for the whole site, sibling hosts included),
 * signing the viewer out; `Service-Worker-Allowed` would let a worker from under /apps/<name>/
 * take over the whole origin, the sign-in form included. `Set-Cookie` is filtered (cookies.ts).
 */
const RESPONSE_DROPPED = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "trailer",
  "upgrade",
  "clear-site-data",
  "service-worker-allowed",
]);

export interface Forward {
  readonly upstream: URL;
  /** Path and query to request upstream. */
  readonly path: string;
  /** Headers to send besides the client's (X-IP-Token, X-Forwarded-*), and client headers to remove. */
  readonly set: Record<string, string>;
  readonly remove: readonly string[];
  /** The socket peer is a trusted proxy: its address headers pass (client-headers.ts). */
  readonly trustedPeer: boolean;
  /** Added to the response the client sees. */
  readonly responseHeaders: Record<string, string>;
}

// Kept-alive upstream connections: a new TCP connection per request doubled the added latency.
const agents = {
  http: new HttpAgent({ keepAlive: true, maxSockets: 512 }),
  https: new HttpsAgent({ keepAlive: true, maxSockets: 512 }),
};

function connectionTokens(h: IncomingHttpHeaders): Set<string> {
  const c = h.connection;
  return new Set(
    (typeof c === "string" ? c : "")
      .split(",")
      .map((s) => s.trim().toLowerCase())
      .filter((s) => s !== ""),
  );
}

function upstreamHeaders(req: IncomingMessage, f: Forward): OutgoingHttpHeaders {
  const named = connectionTokens(req.headers);
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (
      v === undefined ||
      REQUEST_DROPPED.has(k) ||
      named.has(k) ||
      f.remove.includes(k) ||
      dropFromClient(k, f.trustedPeer)
    )
      continue;
    out[k] = v;
  }
  out["host"] = f.upstream.host;
  return { ...out, ...f.set };
}

function responseHeaders(res: IncomingMessage, f: Forward): OutgoingHttpHeaders {
  const named = connectionTokens(res.headers);
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(res.headers)) {
    if (v === undefined || RESPONSE_DROPPED.has(k) || named.has(k) || k.startsWith("x-gpupool-")) continue;
    if (k === "set-cookie") {
      const kept = appSetCookies(v as string[]);
      if (kept !== undefined) out[k] = kept;
    } else out[k] = v;
  }
  return { ...out, ...f.responseHeaders };
}

function open(f: Forward, method: string, headers: OutgoingHttpHeaders, agent: boolean) {
  const https = f.upstream.protocol === "https:";
  return (https ? httpsRequest : httpRequest)({
    protocol: f.upstream.protocol,
    hostname: f.upstream.hostname.replace(/^\[|\]$/g, ""),
    port: f.upstream.port || (https ? 443 : 80),
    method,
    path: joinPath(f.upstream.pathname, f.path),
    headers,
    ...(agent ? { agent: https ? agents.https : agents.http } : { agent: false }),
  });
}

/** The upstream URL's own path prefix (e.g. `http://host/base/`) in front of the routed path. */
function joinPath(base: string, path: string): string {
  if (base === "/" || base === "") return path;
  return base.replace(/\/$/, "") + path;
}

export function sendProblem(res: ServerResponse, p: Problem, extra: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify(p);
  res.writeHead(p.status, {
    ...extra,
    "content-type": "application/problem+json",
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
  });
  res.end(body);
}

/** The app's address stays out of the answer (it is the operator's business); the error code says enough. */
function upstreamDown(name: string, err: Error): Problem {
  const code = (err as NodeJS.ErrnoException).code;
  return problem(
    "upstream_unavailable",
    `The app ${name} is not answering${code === undefined ? "" : ` (${code})`}. Try again shortly; if it persists, tell the app's owner.`,
  );
}

/** Node refuses to send what no request may carry (a control character in a header, say). */
function unforwardable(): Problem {
  return problem(
    "invalid_request",
    "This request cannot be passed on to the app: it carries a character no HTTP request may carry.",
    { reason: "unforwardable" },
  );
}

/**
 * Streams a request to the app and the response back, chunk by chunk: nothing is buffered, so
 * Server-Sent Events and long downloads pass through as they are produced.
 */
export function forwardHttp(req: IncomingMessage, res: ServerResponse, f: Forward, appName: string): void {
  let up: ClientRequest;
  try {
    up = open(f, req.method ?? "GET", upstreamHeaders(req, f), true);
  } catch {
    return sendProblem(res, unforwardable(), f.responseHeaders);
  }
  up.on("response", (upRes) => {
    res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, responseHeaders(upRes, f));
    // A stream (SSE, or no declared length) gets its headers now: an SSE client waits for them
    // before any event. A sized body carries them in its first write, one packet instead of two.
    if (
      upRes.headers["content-length"] === undefined ||
      String(upRes.headers["content-type"] ?? "").startsWith("text/event-stream")
    )
      res.flushHeaders();
    upRes.pipe(res);
    upRes.on("error", () => res.destroy());
  });
  up.on("error", (err) => sendProblem(res, upstreamDown(appName, err), f.responseHeaders));
  // The viewer went away: stop the app's work too (a closed SSE tab must not stream forever).
  res.on("close", () => {
    if (!res.writableFinished) up.destroy();
  });
  // Most requests have no body: end at once rather than set up a pipe for nothing.
  if (req.headers["content-length"] === undefined && req.headers["transfer-encoding"] === undefined) {
    req.resume();
    up.end();
  } else req.pipe(up);
}

/** The raw bytes of an HTTP/1.1 response head. */
function head(status: number, message: string, headers: OutgoingHttpHeaders): string {
  const lines = [`HTTP/1.1 ${status} ${message}`];
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${String(one)}`);
  }
  return `${lines.join("\r\n")}\r\n\r\n`;
}

/** `headOnly`: the answer to a HEAD request, which has the headers of the body and no body. */
export function writeRawProblem(
  socket: Duplex,
  p: Problem,
  extra: Record<string, string> = {},
  headOnly = false,
): void {
  const body = JSON.stringify(p);
  socket.end(
    head(p.status, p.title, {
      ...extra,
      "content-type": "application/problem+json",
      "content-length": Buffer.byteLength(body),
      connection: "close",
    }) + (headOnly ? "" : body),
  );
}

/**
 * A WebSocket (or any Upgrade) request: the upgraded request goes upstream with the injected
 * header, the app's 101 comes back with the edge's response headers added, and from then on the
 * two sockets are piped to each other byte for byte.
 */
export function forwardUpgrade(
  req: IncomingMessage,
  socket: Duplex,
  clientHead: Buffer,
  f: Forward,
  appName: string,
): void {
  const headers = upstreamHeaders(req, f);
  headers["connection"] = "Upgrade";
  headers["upgrade"] = req.headers.upgrade ?? "websocket";
  // Upgraded sockets are never reused: no agent.
  let up: ClientRequest;
  try {
    up = open(f, req.method ?? "GET", headers, false);
  } catch {
    return writeRawProblem(socket, unforwardable(), f.responseHeaders);
  }
  up.on("upgrade", (upRes, upSocket, upHead) => {
    const h = responseHeaders(upRes, f);
    h["connection"] = "Upgrade";
    h["upgrade"] = upRes.headers.upgrade ?? headers["upgrade"];
    socket.write(head(101, upRes.statusMessage ?? "Switching Protocols", h));
    if (upHead.length > 0) socket.write(upHead);
    if (clientHead.length > 0) upSocket.write(clientHead);
    upSocket.pipe(socket).pipe(upSocket);
    upSocket.on("error", () => socket.destroy());
    socket.on("error", () => upSocket.destroy());
    upSocket.on("close", () => socket.destroy());
    socket.on("close", () => upSocket.destroy());
  });
  // The app refused the upgrade: relay its answer as an ordinary response and close.
  up.on("response", (upRes) => {
    const h = responseHeaders(upRes, f);
    delete h["content-length"];
    h["connection"] = "close";
    socket.write(head(upRes.statusCode ?? 502, upRes.statusMessage ?? "", h));
    upRes.pipe(socket);
  });
  up.on("error", (err) => writeRawProblem(socket, upstreamDown(appName, err), f.responseHeaders));
  socket.on("error", () => up.destroy());
  up.end();
}
