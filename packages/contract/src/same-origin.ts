/** The request headers the rule reads (as Node's IncomingHttpHeaders has them). */
export type RequestSiteHeaders = Readonly<Record<string, string | string[] | undefined>>;

/**
 * Why a state-changing request a browser may send with a viewer's cookies (the edge's sign-in and
 * sign-out, the dashboard's changes) must be refused as cross-site, or null when it may proceed.
 * One rule for the edge and the control plane. Browsers say where a request comes from in `Sec-Fetch-Site` and `Origin`, which no
 * page script can set: a form on another site — or on an app's own host under the same domain,
 * which `SameSite` alone would let through as "same-site" — is refused. A request with neither
 * header does not come from a browser page, and so cannot be a forgery made with a viewer's
 * cookies.
 *
 * `host`: the Host the request was sent to (with its port, if any); `publicOrigin`: the
 * configured public origin (the edge's `--public-url`, the dashboard's public URL), also accepted.
 * `Sec-Fetch-Site: none` (a navigation the person started: typed, bookmarked) is no forgery.
 */
export function crossSiteReason(headers: RequestSiteHeaders, host: string, publicOrigin: string | null): string | null {
  const site = headers["sec-fetch-site"];
  if (site !== undefined && site !== "same-origin" && site !== "none")
    return `it was sent from another site (Sec-Fetch-Site: ${String(site).slice(0, 20)})`;
  const origin = headers["origin"];
  if (Array.isArray(origin)) return "it named more than one Origin";
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
