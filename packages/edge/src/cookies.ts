export const SESSION_COOKIE = "gpupool_session";

/** Cookie pairs of a request header, first value wins (like browsers send the most specific first). */
export function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!header) return out;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const name = part.slice(0, eq).trim();
    if (!out.has(name)) out.set(name, part.slice(eq + 1).trim());
  }
  return out;
}

/**
 * The Cookie header to forward to an app: everything but the session cookie. The session secret
 * is the viewer's credential at the edge; an app that saw it could act as the viewer.
 */
export function withoutSessionCookie(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const kept = header.split(";").filter((p) => p.split("=")[0]?.trim() !== SESSION_COOKIE).map((p) => p.trim()).filter((p) => p !== "");
  return kept.length === 0 ? undefined : kept.join("; ");
}

/** HttpOnly so page scripts cannot read it; Lax so it is sent on top-level navigations only. */
export function sessionCookie(value: string, maxAgeS: number, secure: boolean): string {
  return `${SESSION_COOKIE}=${value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${Math.max(0, Math.floor(maxAgeS))}${secure ? "; Secure" : ""}`;
}

export function clearedSessionCookie(secure: boolean): string {
  return sessionCookie("", 0, secure);
}
