/**
 * The request target of an HTTP/1.1 request line (RFC 9112 §3.2), taken apart before routing.
 * Origin-form (`/path?query`) and absolute-form (`http://host/path?query`, which a client may
 * send to any server and which then names the host, RFC 9112 §3.2.2) are served; asterisk-form
 * and anything else is refused.
 */
export type RequestTarget =
  | { readonly ok: true; readonly host: string | null; readonly path: string; readonly query: string }
  | {
      readonly ok: false;
      readonly reason: "not_a_path" | "fragment" | "not_http" | "userinfo" | "bad_host";
      readonly detail: string;
    };

const ABSOLUTE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^#]*)$/;
/** A DNS name or IPv4 address, or a bracketed IPv6 literal, with an optional port. */
const HOST =
  /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.?|\[[0-9a-f:.]+\])(?::\d{1,5})?$/;

export function parseTarget(raw: string): RequestTarget {
  // A fragment never belongs in a request; servers disagree on what follows `#`, so refuse it.
  if (raw.includes("#"))
    return {
      ok: false,
      reason: "fragment",
      detail: "The request target contains '#': fragments stay in the browser and are never sent.",
    };
  if (raw.startsWith("/")) return { ok: true, host: null, ...splitQuery(raw) };
  const m = ABSOLUTE.exec(raw);
  if (!m)
    return { ok: false, reason: "not_a_path", detail: "The request target must be a path (/…) or an http(s):// URL." };
  const scheme = (m[1] ?? "").toLowerCase();
  if (scheme !== "http" && scheme !== "https")
    return {
      ok: false,
      reason: "not_http",
      detail: `The request target is a ${scheme}: URL; only http and https are served.`,
    };
  const authority = (m[2] ?? "").toLowerCase();
  if (authority.includes("@"))
    return {
      ok: false,
      reason: "userinfo",
      detail: "The request target names a user (user@host); the edge does not take credentials in URLs.",
    };
  if (!HOST.test(authority))
    return { ok: false, reason: "bad_host", detail: "The request target's host is not a host name or address." };
  const rest = m[3] ?? "";
  return { ok: true, host: authority, ...splitQuery(rest.startsWith("/") ? rest : `/${rest}`) };
}

function splitQuery(target: string): { path: string; query: string } {
  const q = target.indexOf("?");
  return q < 0 ? { path: target, query: "" } : { path: target.slice(0, q), query: target.slice(q) };
}

/** `%2e`, `%2E` → `.` (RFC 3986 §2.3: an encoded unreserved character is that character). */
const dotDecoded = (segment: string): string => (segment.includes("%") ? segment.replace(/%2e/gi, ".") : segment);

/**
 * RFC 3986 §5.2.4 dot-segment removal of an absolute path (`/…`), except that a `..` that would
 * climb above the root is not silently dropped: the path is refused (null), because the root
 * here is an app's base path and whatever tries to leave it is an attack, not a typo. `.` and
 * `..` are recognised percent-encoded too (`%2e%2e`); every other segment is kept as it came.
 */
export function removeDotSegments(path: string): string | null {
  const input = path.slice(1).split("/");
  const out: string[] = [];
  for (let i = 0; i < input.length; i++) {
    const seg = input[i] ?? "";
    const d = dotDecoded(seg);
    const last = i === input.length - 1;
    if (d === "." || d === "..") {
      if (d === ".." && out.pop() === undefined) return null;
      // `/a/b/..` is `/a/`: a trailing dot segment leaves the directory's slash.
      if (last) out.push("");
    } else out.push(seg);
  }
  return `/${out.join("/")}`;
}

/**
 * Whether a path could leave its root on SOME server behind the edge, even with no `..` of its
 * own left: servers that decode `%2f` (Starlette, many WSGI servers) or `%5c` and `\` (Windows,
 * some frameworks) into separators, drop `;params` from segments (Servlet containers: `..;/`),
 * decode twice (`%252e`), or merge `//`; and `\` may be a separator while `%5c` stays encoded
 * (the WHATWG URL parser), so a `;param` holding `%5c` can hide a `..\` behind it. Each reading
 * is walked on its own: decoding a separator can add depth as well as remove it, so no single
 * reading climbs the most in every path.
 */
export function couldEscape(path: string): boolean {
  if (climbsOut(path)) return true;
  if (!/[%\\]/.test(path)) return false;
  for (const twice of [false, true]) {
    const decoded = (twice ? path.replace(/%25/gi, "%") : path).replace(/%2e/gi, ".");
    for (const slash of [false, true]) {
      const p = slash ? decoded.replace(/%2f/gi, "/") : decoded;
      // `\` a separator with `%5c` left encoded (the WHATWG URL parser), or decoded too (Windows).
      if (climbsOut(p) || climbsOut(p.replace(/\\/g, "/")) || climbsOut(p.replace(/%5c|\\/gi, "/"))) return true;
    }
  }
  return false;
}

/** One reading's walk: `;params` dropped from each segment, empty segments merged away. */
function climbsOut(p: string): boolean {
  let depth = 0;
  for (const raw of p.split("/")) {
    const semi = raw.indexOf(";");
    const seg = semi >= 0 ? raw.slice(0, semi) : raw;
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (--depth < 0) return true;
    } else depth++;
  }
  return false;
}

const PLAIN_PATH_UNSAFE = /\/\.|[%\\;]|\/\//;

/**
 * The path to send to an app whose root is `/` of `path`: dot segments removed, one leading
 * slash (`//host/x` and `/\host/x` are network-path references to the WHATWG URL parser, which
 * an app may well feed `req.url` to: it would read `host` as the host). Null when the path
 * leaves the root under any reading of `couldEscape`.
 */
export function confinedPath(path: string): string | null {
  // Most paths have no segment starting with ".", no "%", "\\", ";" or "//": nothing to do.
  if (!PLAIN_PATH_UNSAFE.test(path)) return path;
  const normal = removeDotSegments(path);
  if (normal === null || couldEscape(normal)) return null;
  return normal.replace(/^[/\\]{2,}/, "/");
}
