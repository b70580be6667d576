import {
  AppList,
  CreatedApp as WireCreatedApp,
  CreatedKey,
  CreatedUser as WireCreatedUser,
  PoolView,
  UserList,
  UserWithQuota,
} from "@gpupool/contract";
import type { CreateAppRequest, UpdateUserRequest, WireSchema, WireType } from "@gpupool/contract";
import type { Transport } from "./transport.js";
import type { App, CreatedApp, CreatedPrincipal, CreatedUser, PoolState, Tier, User } from "./types.js";
import { toApp, toCreatedApp, toCreatedPrincipal, toCreatedUser, toPoolState, toUser } from "./wire.js";

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
  /** The pool as the scheduler sees it (on a replica that does not lead: as the database records it). */
  pool(): Promise<PoolState>;
}

export function createAdminClient(transport: Transport): AdminClient {
  const call = <S extends WireSchema>(
    method: "GET" | "POST" | "PATCH",
    path: string,
    schema: S,
    body?: unknown,
  ): Promise<WireType<S>> =>
    transport.json(
      body === undefined ? { method, path, auth: "admin" } : { method, path, auth: "admin", body },
      schema,
    );

  return {
    async createUser({ name, tier }) {
      return toCreatedUser(await call("POST", "/v1/admin/users", WireCreatedUser, { name, tier }));
    },
    async listUsers() {
      return (await call("GET", "/v1/admin/users", UserList)).users.map(toUser);
    },
    async updateUser(id, changes) {
      const body: UpdateUserRequest = {
        ...(changes.tier !== undefined ? { tier: changes.tier } : {}),
        ...(changes.quota !== undefined ? { quota: changes.quota } : {}),
        ...(changes.bonus !== undefined ? { bonus: changes.bonus } : {}),
      };
      return toUser(await call("PATCH", `/v1/admin/users/${encodeURIComponent(id)}`, UserWithQuota, body));
    },
    async createApp({ name, owner, maxConcurrency }) {
      const body: CreateAppRequest = {
        name,
        owner,
        ...(maxConcurrency !== undefined ? { max_concurrency: maxConcurrency } : {}),
      };
      return toCreatedApp(await call("POST", "/v1/admin/apps", WireCreatedApp, body));
    },
    async listApps() {
      return (await call("GET", "/v1/admin/apps", AppList)).apps.map(toApp);
    },
    async createNode({ name }) {
      return toCreatedPrincipal(await call("POST", "/v1/admin/nodes", CreatedKey, { name }));
    },
    async createEdge({ name }) {
      return toCreatedPrincipal(await call("POST", "/v1/admin/edges", CreatedKey, { name }));
    },
    async pool() {
      return toPoolState(await call("GET", "/v1/admin/pool", PoolView));
    },
  };
}
