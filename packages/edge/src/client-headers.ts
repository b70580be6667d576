/**
 * Which of a client's request headers an app may see. Apps (and the frameworks under them) read
 * the client's address and identity from headers that proxies set: if a client could send them
 * itself, it could pose as another address or user. So each of them is dropped unless the peer
 * is a trusted proxy, and the edge sets `X-Forwarded-For` / `Forwarded` / `X-Forwarded-Proto` /
 * `X-Forwarded-Host` itself.
 *
 * Names are compared after lower-casing and turning `_` into `-`: WSGI and CGI map `X_IP_Token`
 * and `X-IP-Token` to the same variable (`HTTP_X_IP_TOKEN`), so the underscore spelling is the
 * same header to a Python app.
 */

/** Never from anyone: the edge's own headers. */
const EDGE_OWNED = new Set(["x-ip-token"]);
const EDGE_OWNED_PREFIXES = ["x-gpupool-"];

/** A client address, scheme, host, path or user as seen by a proxy: only a trusted proxy may send them. */
const PROXY_SET = new Set([
  "forwarded",
  "x-real-ip",
  "true-client-ip",
  "x-client-ip",
  "client-ip",
  "x-cluster-client-ip",
  "x-originating-ip",
  "x-proxyuser-ip",
  "x-host",
  "x-rewrite-url",
  "x-user",
  "x-user-id",
  "x-user-email",
  "x-email",
  "remote-user",
  "remote-addr",
  "x-webauth-user",
  "x-auth-user",
  "x-proxy-user",
]);
const PROXY_SET_PREFIXES = [
  "x-forwarded-", // -for, -host, -proto, -port, -prefix, -server, -ssl, -user, -email…
  "x-original-", // -url, -uri, -host, -forwarded-for: path and host overrides some frameworks obey
  "x-real-",
  "x-remote-", // -addr, -ip, -user
  "x-authenticated-",
  "x-auth-request-", // oauth2-proxy
  "x-ms-client-principal", // Azure App Service authentication
  "x-goog-authenticated-user-", // Google IAP
  "x-amzn-", // AWS ALB (x-amzn-oidc-identity…)
  "x-appengine-",
  "x-azure-",
  "x-envoy-",
  "cf-", // Cloudflare: cf-connecting-ip, cf-visitor (the scheme), cf-access-authenticated-user-email…
  "fastly-",
];

const normal = (name: string): string => name.toLowerCase().replace(/_/g, "-");

/**
 * Whether a request header must not reach the app. `fromTrustedProxy`: the socket peer is a
 * trusted proxy, whose address and identity headers are believed — in their canonical spelling
 * only (no proxy writes `X_Forwarded_For`; a client behind it may).
 */
export function dropFromClient(name: string, fromTrustedProxy: boolean): boolean {
  // The same few header names come on every request: decided once each (a bounded memo).
  const memo = fromTrustedProxy ? decidedTrusted : decidedUntrusted;
  let drop = memo.get(name);
  if (drop === undefined) {
    drop = decide(name, fromTrustedProxy);
    if (memo.size >= 2048) memo.clear();
    memo.set(name, drop);
  }
  return drop;
}

const decidedTrusted = new Map<string, boolean>();
const decidedUntrusted = new Map<string, boolean>();

function decide(name: string, fromTrustedProxy: boolean): boolean {
  const n = normal(name);
  if (EDGE_OWNED.has(n) || EDGE_OWNED_PREFIXES.some((p) => n.startsWith(p))) return true;
  const proxySet = PROXY_SET.has(n) || PROXY_SET_PREFIXES.some((p) => n.startsWith(p));
  if (!proxySet) return false;
  return !fromTrustedProxy || n !== name.toLowerCase();
}

const TOKEN = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

/** A `Forwarded` parameter value (RFC 7239 §4): a token as is, anything else quoted. */
function forwardedValue(v: string): string {
  return TOKEN.test(v) ? v : `"${v.replace(/["\\]/g, "\\$&")}"`;
}

/** One `Forwarded` element for this hop: the peer (IPv6 in brackets), the host asked for, the scheme. */
export function forwardedElement(peer: string, host: string, proto: "http" | "https"): string {
  const node = peer.includes(":") ? `[${peer}]` : peer;
  return `for=${forwardedValue(node)};host=${forwardedValue(host)};proto=${proto}`;
}
