import { createHash } from "node:crypto";

const escape = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c);

/**
 * A redirect target from the form: only a local path, never `//host` or a full URL (open
 * redirect). Control characters are refused too: browsers drop tabs and newlines from URLs, so
 * `/\t/evil.example` would become `//evil.example`.
 */
export function safeNext(next: string | undefined | null): string {
  if (next === undefined || next === null || !next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\"))
    return "/";
  for (let i = 0; i < next.length; i++) if (next.charCodeAt(i) < 0x20 || next.charCodeAt(i) === 0x7f) return "/";
  return next;
}

const STYLE =
  "body{font:16px system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem;box-sizing:border-box}button{margin-top:1rem;padding:.5rem 1rem}.err{color:#a00}.inline{display:inline}";
const STYLE_HASH = createHash("sha256").update(STYLE).digest("base64");

/**
 * The pages' policy: nothing loads but the one inline style block (by its hash); no script at
 * all; forms post to this origin or, after sign-in, redirect on to an app's own host (Chrome
 * checks form-action along the redirects); no framing, no base URL; the address only to this
 * origin (`no-referrer` would also make the browser send `Origin: null` with the form, which the
 * sign-in then refuses as cross-site).
 */
export function pageHeaders(formTargets: readonly string[]): Record<string, string> {
  return {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    // A window an app opened cannot reach into this one (its sign-out token), even from this origin.
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "content-security-policy": `default-src 'none'; style-src 'sha256-${STYLE_HASH}'; form-action ${["'self'", ...formTargets].join(" ")}; frame-ancestors 'none'; base-uri 'none'`,
  };
}

export interface SignedIn {
  readonly who: string;
  /** The sign-out form's CSRF token (sealed.ts `signOutToken`). */
  readonly signOutToken: string;
}

function signOutForm(action: string, s: SignedIn): string {
  return `<form method="post" action="${action}/logout" class="inline"><input type="hidden" name="csrf" value="${escape(s.signOutToken)}"><button type="submit">Sign out</button></form>`;
}

/** The sign-in form: no scripts, no external assets, so it works under the strictest CSP and offline. */
export function loginPage(options: { next: string; action: string; error?: string; signedIn?: SignedIn }): string {
  const s = options.signedIn;
  const status =
    s === undefined ? "" : `<p>Signed in as <b id="who">${escape(s.who)}</b>. ${signOutForm(options.action, s)}</p>`;
  const error = options.error === undefined ? "" : `<p class="err" role="alert">${escape(options.error)}</p>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sign in — gpupool</title><style>${STYLE}</style></head>
<body><h1>Sign in</h1>
<p>GPU time you use in the apps behind this edge is charged to your account. Without signing in, it is charged to your IP address at the anonymous tier.</p>
${status}${error}
<form method="post" action="${options.action}/login">
<input type="hidden" name="next" value="${escape(options.next)}">
<label for="name">User name (optional)</label><input id="name" name="name" autocomplete="username" maxlength="64">
<label for="token">User token</label><input id="token" name="token" type="password" required autocomplete="current-password" placeholder="gpu_u_…" maxlength="512">
<button type="submit">Sign in</button>
</form></body></html>`;
}

/** The edge's home page: the apps it serves, each at its path or on its own host. */
export function indexPage(apps: readonly { name: string; href: string }[], signedIn: SignedIn | undefined): string {
  const who =
    signedIn === undefined
      ? `Not signed in: <a href="/login">sign in</a>.`
      : `Signed in as <b>${escape(signedIn.who)}</b>. ${signOutForm("", signedIn)}`;
  const list = apps.map((a) => `<li><a href="${escape(a.href)}">${escape(a.name)}</a></li>`).join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Apps — gpupool</title><style>${STYLE}</style></head>
<body><h1>Apps</h1><p>${who}</p><ul>${list}</ul></body></html>`;
}
