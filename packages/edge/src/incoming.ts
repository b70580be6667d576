import type { IncomingMessage } from "node:http";
import type { Problem } from "@gpupool/core";
import { problem } from "@gpupool/core";
import { hostName } from "./apps.js";
import { parseTarget } from "./request-target.js";

/** A request as the edge reasons about it: where it was sent, and how. */
export interface Incoming {
  readonly req: IncomingMessage;
  /** The host asked for, with its port as sent: absolute-form's authority, else the Host header. */
  readonly host: string;
  /** `host` lower-cased, without the port. */
  readonly hostname: string;
  /** The path, still percent-encoded, and the query with its `?` (or empty). */
  readonly path: string;
  readonly query: string;
  /** The viewer reached the edge over TLS (directly, through a trusted proxy, or per --public-url). */
  readonly secure: boolean;
  /** The socket peer's address, read when the request arrived (a closed socket no longer says). */
  readonly peer: string;
  /** The socket peer is a trusted proxy. */
  readonly trustedPeer: boolean;
}

/** The edge's public address (--public-url): where its own pages are, and whether it is TLS. */
export interface PublicUrl {
  /** `https://pool.example.com` (no path). */
  readonly origin: string;
  readonly scheme: "http:" | "https:";
  readonly hostname: string;
  /** `:8443`, or empty for the scheme's default port. */
  readonly port: string;
  readonly secure: boolean;
}

export function parsePublicUrl(value: string): PublicUrl {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new Error(`--public-url "${value}" is not a URL; write e.g. https://pool.example.com`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:")
    throw new Error(`--public-url must be an http:// or https:// URL (got ${u.protocol})`);
  if (
    u.username !== "" ||
    u.password !== "" ||
    (u.pathname !== "/" && u.pathname !== "") ||
    u.search !== "" ||
    u.hash !== ""
  ) {
    throw new Error(`--public-url must be an origin only (scheme, host, port), e.g. ${u.protocol}//${u.host}`);
  }
  return {
    origin: u.origin,
    scheme: u.protocol,
    hostname: u.hostname.toLowerCase(),
    port: u.port === "" ? "" : `:${u.port}`,
    secure: u.protocol === "https:",
  };
}

/** Takes a request apart; a target that is not a path or http(s) URL is a 400 problem. */
export function incoming(
  req: IncomingMessage,
  peer: string,
  secure: boolean,
  trustedPeer: boolean,
): Incoming | Problem {
  const t = parseTarget(req.url ?? "/");
  if (!t.ok) return problem("invalid_request", t.detail, { reason: t.reason });
  // RFC 9112 §3.2.2: an absolute-form target names the host; the Host header is then ignored.
  const host = t.host ?? (req.headers.host ?? "").trim();
  return { req, host, hostname: hostName(host), path: t.path, query: t.query, secure, peer, trustedPeer };
}

export function isProblem(x: Incoming | Problem): x is Problem {
  return "code" in x;
}
