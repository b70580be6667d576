const escape = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c);

/** A redirect target from the form: only a local path, never `//host` or a full URL (open redirect). */
export function safeNext(next: string | undefined): string {
  if (next === undefined || !next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\")) return "/";
  return next;
}

const STYLE = "body{font:16px system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.4rem;box-sizing:border-box}button{margin-top:1rem;padding:.5rem 1rem}.err{color:#a00}";

/** The sign-in form: no scripts, no external assets, so it works under any CSP and offline. */
export function loginPage(options: { next: string; action: string; error?: string; signedInAs?: string }): string {
  const status = options.signedInAs === undefined ? "" : `<p>Signed in as <b id="who">${escape(options.signedInAs)}</b>. <form method="post" action="${options.action}/logout" style="display:inline"><button type="submit">Sign out</button></form></p>`;
  const error = options.error === undefined ? "" : `<p class="err" role="alert">${escape(options.error)}</p>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sign in — gpupool</title><style>${STYLE}</style></head>
<body><h1>Sign in</h1>
<p>GPU time you use in the apps behind this edge is charged to your account. Without signing in, it is charged to your IP address at the anonymous tier.</p>
${status}${error}
<form method="post" action="${options.action}/login">
<input type="hidden" name="next" value="${escape(options.next)}">
<label for="name">User name (optional)</label><input id="name" name="name" autocomplete="username">
<label for="token">User token</label><input id="token" name="token" type="password" required autocomplete="current-password" placeholder="gpu_u_…">
<button type="submit">Sign in</button>
</form></body></html>`;
}

/** The edge's home page: the apps it serves. */
export function indexPage(apps: readonly string[], signedInAs: string | undefined): string {
  const who = signedInAs === undefined ? `Not signed in: <a href="/login">sign in</a>.` : `Signed in as <b>${escape(signedInAs)}</b>. <form method="post" action="/logout" style="display:inline"><button type="submit">Sign out</button></form>`;
  const list = apps.map((a) => `<li><a href="/apps/${encodeURIComponent(a)}/">${escape(a)}</a></li>`).join("");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gpupool edge</title><style>${STYLE}</style></head>
<body><h1>Apps</h1><p>${who}</p><ul>${list}</ul></body></html>`;
}
