import {
  camelize,
  decodeApp,
  decodeCreatedApp,
  decodeCreatedUser,
  decodeList,
  decodePrincipal,
  decodeUser,
  isRecord,
} from "./decode.js";
import type { Transport } from "./transport.js";
import type { App, CreatedApp, CreatedPrincipal, CreatedUser, PoolState, Tier, User } from "./types.js";

export interface UserChanges {
  readonly tier?: Tier | undefined;
  /** Quota override in seconds per window; null clears it back to the tier default. */
  readonly quota?: number | null | undefined;
  /** Seconds added to the user's current window only. */
  readonly bonus?: number | undefined;
}

/** Operator calls; every one is authenticated with the client's `adminToken`. */
export interface AdminClient {
  /** Creates a user; the returned `token` is shown only this once. */
  createUser(user: { readonly name: string; readonly tier: Tier }): Promise<CreatedUser>;
  listUsers(): Promise<User[]>;
  updateUser(id: string, changes: UserChanges): Promise<User>;
  /** Registers an app; the returned `key` is shown only this once. */
  createApp(app: {
    readonly name: string;
    readonly owner: string;
    readonly maxConcurrency?: number | undefined;
  }): Promise<CreatedApp>;
  listApps(): Promise<App[]>;
  /** Registers a GPU node agent; the returned `key` is shown only this once. */
  createNode(node: { readonly name: string }): Promise<CreatedPrincipal>;
  /** Registers an edge proxy (it may issue IP tokens); the returned `key` is shown only this once. */
  createEdge(edge: { readonly name: string }): Promise<CreatedPrincipal>;
  pool(): Promise<PoolState>;
}

export function createAdminClient(transport: Transport): AdminClient {
  const call = (method: "GET" | "POST" | "PATCH", path: string, body?: unknown) =>
    transport.json(body === undefined ? { method, path, auth: "admin" } : { method, path, auth: "admin", body });

  return {
    async createUser({ name, tier }) {
      return decodeCreatedUser(await call("POST", "/v1/admin/users", { name, tier }));
    },
    async listUsers() {
      return decodeList(await call("GET", "/v1/admin/users"), "users", decodeUser);
    },
    async updateUser(id, changes) {
      const body: Record<string, unknown> = {};
      if (changes.tier !== undefined) body["tier"] = changes.tier;
      if (changes.quota !== undefined) body["quota"] = changes.quota;
      if (changes.bonus !== undefined) body["bonus"] = changes.bonus;
      return decodeUser(await call("PATCH", `/v1/admin/users/${encodeURIComponent(id)}`, body));
    },
    async createApp({ name, owner, maxConcurrency }) {
      const body: Record<string, unknown> = { name, owner };
      if (maxConcurrency !== undefined) body["max_concurrency"] = maxConcurrency;
      return decodeCreatedApp(await call("POST", "/v1/admin/apps", body));
    },
    async listApps() {
      return decodeList(await call("GET", "/v1/admin/apps"), "apps", decodeApp);
    },
    async createNode({ name }) {
      return decodePrincipal(await call("POST", "/v1/admin/nodes", { name }));
    },
    async createEdge({ name }) {
      return decodePrincipal(await call("POST", "/v1/admin/edges", { name }));
    },
    async pool() {
      const state = camelize(await call("GET", "/v1/admin/pool"));
      return isRecord(state) ? state : {};
    },
  };
}
