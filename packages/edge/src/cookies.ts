/**
 * The edge's cookies. Over TLS each name carries the `__Host-` prefix: the browser then accepts
 * it only with `Secure`, `Path=/` and no `Domain`, from the exact host — so no other host under
 * the same domain (another app, `evil.apps.example.com`) and no plain-HTTP page can set or shadow
 * it. Without TLS the prefix is impossible and the plain name is used.
 */
export const SESSION = "gpupool_session";
/** On an app's own host: that host's sealed share of the viewer's session (see sealed.ts). */
export const APP_SESSION = "gpupool_app";
/** On an app's own host, during the sign-in round trip: binds the ticket to this browser. */
export const SIGN_IN_STATE = "gpupool_state";

export function cookieName(base: string, secure: boolean): string {
  return secure ? `__Host-${base}` : base;
}

/** A cookie value the edge accepts at most; the control plane takes secrets up to 512 characters. */
export const MAX_COOKIE_VALUE = 1024;

/**
 * The value of cookie `name` in a Cookie header, or null when it is absent, empty, too large, or
 * present more than once. Two cookies of one name mean one was set by someone else (a sibling
 * host's `Domain=` cookie, or a page script's with a longer `Path`, which the browser sends
 * first): neither is believed.
 */
export function cookieValue(header: string | undefined, name: string): string | null {
  if (!header || !header.includes(name)) return null;
  let found: string | null = null;
  let count = 0;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq <= 0 || part.slice(0, eq).trim() !== name) continue;
    count++;
    found = part.slice(eq + 1).trim();
  }
  if (count !== 1 || found === null || found === "" || found.length > MAX_COOKIE_VALUE) return null;
  return found;
}

/** `gpupool_…`, `__Host-gpupool_…`, `__Secure-gpupool_…` in any case: names the edge keeps for itself. */
export function isEdgeCookie(name: string): boolean {
  const n = name
    .trim()
    .toLowerCase()
    .replace(/^__(host|secure)-/, "");
  return n.startsWith("gpupool_");
}

/**
 * The Cookie header to forward to an app: everything but the edge's cookies. The session secret
 * is the viewer's credential at the edge; an app that saw it could act as the viewer.
 */
export function withoutEdgeCookies(header: string | undefined): string | undefined {
  if (!header) return undefined;
  if (!/gpupool_/i.test(header)) return header;
  const kept = header
    .split(";")
    .map((p) => p.trim())
    .filter((p) => p !== "" && !isEdgeCookie(p.includes("=") ? p.slice(0, p.indexOf("=")) : p));
  return kept.length === 0 ? undefined : kept.join("; ");
}

/**
 * Whether an app's `Set-Cookie` would name one of the edge's cookies in the browser — including
 * a nameless cookie (`=gpupool_session=x`, or no `=` at all), which browsers send as its value
 * alone and a server then reads as `gpupool_session=x`.
 */
export function setsEdgeCookie(setCookie: string): boolean {
  if (!/gpupool_/i.test(setCookie)) return false;
  const pair = setCookie.split(";")[0] ?? "";
  const eq = pair.indexOf("=");
  if (eq < 0) return isEdgeCookie(pair);
  const name = pair.slice(0, eq);
  if (name.trim() !== "") return isEdgeCookie(name);
  const value = pair.slice(eq + 1);
  return isEdgeCookie(value.includes("=") ? value.slice(0, value.indexOf("=")) : value);
}

/** The app's Set-Cookie headers without those naming the edge's cookies (session fixation). */
export function appSetCookies(values: string[] | undefined): string[] | undefined {
  if (values === undefined) return undefined;
  const kept = values.filter((v) => !setsEdgeCookie(v));
  return kept.length === 0 ? undefined : kept;
}

/**
 * HttpOnly so page scripts cannot read it; Lax so it is sent on top-level navigations only, never
 * on another site's form POST or subrequest; host-only (no Domain) so no other host gets it.
 */
export function edgeCookie(base: string, value: string, maxAgeS: number, secure: boolean): string {
  return `${cookieName(base, secure)}=${value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${Math.max(0, Math.floor(maxAgeS))}${secure ? "; Secure" : ""}`;
}

export function clearedCookie(base: string, secure: boolean): string {
  return edgeCookie(base, "", 0, secure);
}
