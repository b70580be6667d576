import { confinedPath } from "./request-target.js";

/** One app behind the edge: its name in the pool, where it listens, and optionally its own host name. */
export interface AppRoute {
  readonly name: string;
  readonly upstream: URL;
  readonly host?: string;
}

/** Where a request goes, decided from its host and path alone (before any identity is looked up). */
export type Route =
  /** To the app: `path` (with the query) is what the app sees, confined to its root. */
  | {
      readonly kind: "app";
      readonly app: AppRoute;
      readonly path: string;
      readonly prefix: string;
      readonly byHost: boolean;
    }
  /** `/apps/<name>` without the slash (→ `/apps/<name>/`). */
  | { readonly kind: "slash"; readonly location: string }
  /** `/apps/<name>/…` of an app served on its own host: sent there, never served on this origin. */
  | { readonly kind: "own_host"; readonly app: AppRoute; readonly host: string; readonly path: string }
  /** A path that leaves the app's root (`/apps/b/../secret`, `/apps/b/..%2fsecret`). */
  | { readonly kind: "outside"; readonly app: AppRoute }
  /** Not an app's: the edge's own pages, or a 404. */
  | { readonly kind: "edge" };

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** A host name label: what an app name must be to be served as `<name>.<app domain>`. */
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

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
  if (upstream.protocol !== "http:" && upstream.protocol !== "https:")
    throw new Error(`the upstream of ${name} must be an http:// or https:// URL`);
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

/** `"%zz"` is not an app name; decoding it must not throw. */
function decodedName(segment: string): string | null {
  if (!segment.includes("%")) return segment;
  try {
    return decodeURIComponent(segment);
  } catch {
    return null;
  }
}

export class AppTable {
  private readonly byName = new Map<string, AppRoute>();
  private readonly byHost = new Map<string, AppRoute>();
  private readonly byLabel = new Map<string, AppRoute>();
  private readonly domainSuffix: string | null;

  /**
   * `appDomain`: every app without a host of its own is served at `<name>.<appDomain>` (and
   * only there). Throws when a name cannot be a host label or two apps would share a host.
   */
  constructor(apps: readonly AppRoute[], appDomain?: string) {
    this.domainSuffix = appDomain === undefined ? null : `.${appDomain.toLowerCase().replace(/^\.+|\.+$/g, "")}`;
    for (const a of apps) {
      if (this.byName.has(a.name)) throw new Error(`app "${a.name}" is listed twice`);
      this.byName.set(a.name, a);
      if (a.host !== undefined) {
        const host = a.host.toLowerCase();
        if (this.byHost.has(host))
          throw new Error(`apps "${this.byHost.get(host)?.name ?? ""}" and "${a.name}" both have host ${host}`);
        this.byHost.set(host, a);
      } else if (this.domainSuffix !== null) {
        const label = a.name.toLowerCase();
        if (!LABEL.test(label))
          throw new Error(
            `app "${a.name}" cannot be served as ${a.name}${this.domainSuffix}: a host name label is letters, digits and inner hyphens; give it its own --app-host`,
          );
        if (this.byLabel.has(label))
          throw new Error(
            `apps "${this.byLabel.get(label)?.name ?? ""}" and "${a.name}" would both be ${label}${this.domainSuffix}`,
          );
        this.byLabel.set(label, a);
      }
    }
  }

  get names(): string[] {
    return [...this.byName.keys()];
  }

  get all(): AppRoute[] {
    return [...this.byName.values()];
  }

  /** True when some app is served on a host of its own (so the edge needs a sign-in host apart). */
  get hasHostRoutes(): boolean {
    return this.byHost.size > 0 || this.byLabel.size > 0;
  }

  /** The host name an app is served on, if it has one (explicitly or under the app domain). */
  hostOf(app: AppRoute): string | null {
    if (app.host !== undefined) return app.host.toLowerCase();
    return this.domainSuffix === null ? null : `${app.name.toLowerCase()}${this.domainSuffix}`;
  }

  /** The app a host name belongs to (host routing), if any. `host` is lower-case, without the port. */
  forHost(host: string): AppRoute | undefined {
    const explicit = this.byHost.get(host);
    if (explicit !== undefined || this.domainSuffix === null || !host.endsWith(this.domainSuffix)) return explicit;
    return this.byLabel.get(host.slice(0, -this.domainSuffix.length));
  }

  /**
   * `host` without port; `path` the request's path (`/…`, still percent-encoded), `query` with
   * its `?` or empty. The path an app sees is confined to its root: dot segments are removed
   * and whatever would climb out of it is `outside`, never forwarded.
   */
  route(host: string, path: string, query: string): Route {
    const byHost = this.forHost(host);
    if (byHost) {
      const confined = confinedPath(path);
      return confined === null
        ? { kind: "outside", app: byHost }
        : { kind: "app", app: byHost, path: confined + query, prefix: "", byHost: true };
    }
    const m = /^\/apps\/([^/]+)(\/.*)?$/.exec(path);
    if (!m) return { kind: "edge" };
    const segment = m[1] ?? "";
    const name = decodedName(segment);
    const app = name === null ? undefined : this.byName.get(name);
    if (!app) return { kind: "edge" };
    // `/apps/x?q` → `/apps/x/?q`, so the app's relative links resolve under its prefix.
    if (m[2] === undefined) return { kind: "slash", location: `/apps/${segment}/${query}` };
    const confined = confinedPath(m[2]);
    if (confined === null) return { kind: "outside", app };
    const ownHost = this.hostOf(app);
    if (ownHost !== null) return { kind: "own_host", app, host: ownHost, path: confined + query };
    return { kind: "app", app, path: confined + query, prefix: `/apps/${segment}`, byHost: false };
  }
}
