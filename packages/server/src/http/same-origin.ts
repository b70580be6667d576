import type { IncomingHttpHeaders } from "node:http";

/**
 * Why a state-changing request must be refused as cross-site, or null when it may proceed.
 * Browsers say where a request comes from in `Sec-Fetch-Site` and `Origin`, which no page script
 * can set. A request with neither does not come from a browser page, so it cannot be a forgery
 * made with a viewer's cookie. (The edge has the same rule for its own sign-in.)
 *
 * `host`: the Host the request was sent to; `publicOrigin`: the configured public origin, also accepted.
 */
export function crossSiteReason(
  headers: IncomingHttpHeaders,
  host: string,
  publicOrigin: string | null,
): string | null {
  const site = headers["sec-fetch-site"];
  if (site !== undefined && site !== "same-origin")
    return `it was sent from another site (Sec-Fetch-Site: ${String(site).slice(0, 20)})`;
  const origin = headers.origin;
  if (origin === undefined) return null;
  if (publicOrigin !== null && origin === publicOrigin) return null;
  if (sameHost(origin, host)) return null;
  return `it was sent from another origin (${origin === "null" ? "an opaque origin" : origin.slice(0, 100)})`;
}

/**
 * Whether an Origin (`scheme://host[:port]`) names the Host the request was sent to. The scheme
 * is not compared: behind a TLS proxy the server may not know it, and only a network attacker
 * could serve a page on the same host under the other scheme.
 */
function sameHost(origin: string, host: string): boolean {
  let o: URL;
  try {
    o = new URL(origin);
  } catch {
    return false;
  }
  if ((o.protocol !== "http:" && o.protocol !== "https:") || o.pathname !== "/" || origin.endsWith("/")) return false;
  const defaultPort = o.protocol === "https:" ? "443" : "80";
  const h = host.toLowerCase();
  const colon = h.startsWith("[") ? h.indexOf(":", h.indexOf("]")) : h.lastIndexOf(":");
  const hostName = colon >= 0 ? h.slice(0, colon) : h;
  const hostPort = colon >= 0 ? h.slice(colon + 1) : null;
  if (o.hostname !== hostName) return false;
  return hostPort === null ? o.port === "" : (o.port === "" ? defaultPort : o.port) === hostPort;
}
