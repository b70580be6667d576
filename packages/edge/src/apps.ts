/** One app behind the edge: its name in the pool, where it listens, and optionally its own host name. */
export interface AppRoute {
  readonly name: string;
  readonly upstream: URL;
  readonly host?: string;
}

export interface Routed {
  readonly app: AppRoute;
  /** Path and query as the app sees them: `/apps/<name>` is removed, a host-routed app sees all. */
  readonly path: string;
  /** The prefix removed, for X-Forwarded-Prefix (empty for host routing). */
  readonly prefix: string;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Parses `NAME=URL` (the --app flag). The name must be the app's name (or id) in the pool. */
export function parseAppFlag(value: string): AppRoute {
  const eq = value.indexOf("=");
  const name = value.slice(0, eq);
  if (eq <= 0 || !NAME.test(name)) throw new Error(`"${value}" is not NAME=URL (NAME: letters, digits, . _ -)`);
  let upstream: URL;
  try {
    upstream = new URL(value.slice(eq + 1));
  } catch {
    throw new Error(`"${value.slice(eq + 1)}" is not a URL`);
  }
  if (upstream.protocol !== "http:" && upstream.protocol !== "https:") throw new Error(`the upstream of ${name} must be an http:// or https:// URL`);
  return { name, upstream };
}

/** Host name of a Host header, lower-cased, without the port. */
export function hostName(header: string | undefined): string {
  if (!header) return "";
  const h = header.trim().toLowerCase();
  if (h.startsWith("[")) return h.slice(0, h.indexOf("]") + 1);
  const colon = h.lastIndexOf(":");
  return colon >= 0 ? h.slice(0, colon) : h;
}

export class AppTable {
  private readonly byName = new Map<string, AppRoute>();
  private readonly byHost = new Map<string, AppRoute>();

  constructor(apps: readonly AppRoute[]) {
    for (const a of apps) {
      if (this.byName.has(a.name)) throw new Error(`app "${a.name}" is listed twice`);
      this.byName.set(a.name, a);
      if (a.host !== undefined) this.byHost.set(a.host.toLowerCase(), a);
    }
  }

  get names(): string[] {
    return [...this.byName.keys()];
  }

  /** The app a host name belongs to (host routing), if any. */
  forHost(host: string): AppRoute | undefined {
    return this.byHost.get(host);
  }

  /** `url` is the request target (path + query). */
  route(host: string, url: string): Routed | null | { redirect: string } {
    const byHost = this.forHost(host);
    if (byHost) return { app: byHost, path: url, prefix: "" };
    const m = /^\/apps\/([^/?#]+)(\/[^?#]*)?(\?.*)?$/.exec(url);
    if (!m) return null;
    const app = this.byName.get(decodeURIComponent(m[1] ?? ""));
    if (!app) return null;
    // `/apps/x?q` → `/apps/x/?q`, so the app's relative links resolve under its prefix.
    if (m[2] === undefined) return { redirect: `/apps/${m[1] ?? ""}/${m[3] ?? ""}` };
    return { app, path: `${m[2]}${m[3] ?? ""}`, prefix: `/apps/${m[1] ?? ""}` };
  }
}
