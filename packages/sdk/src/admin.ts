import {
  AppList,
  Wallet as WireWallet,
  WalletGrant as WireWalletGrant,
  CreatedApp as WireCreatedApp,
  CreatedKey,
  CreatedUser as WireCreatedUser,
  PoolView,
  UserList,
  UserWithQuota,
} from "@gpupool/contract";
import type {
  CreateAppRequest,
  CreditGrantRequest as WireCreditGrantRequest,
  UpdateUserRequest,
  WireSchema,
  WireType,
} from "@gpupool/contract";
import type { CreditGrantRequest, CreditGrantResult, Wallet } from "./billing-types.js";
import { toWallet, toWalletGrant } from "./billing-wire.js";
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
  /**
   * Adds credits to a user's wallet (by id or name). Idempotent by `idempotencyKey`: the same key
   * again resolves with the same grant and `created: false`, adding nothing; with another amount or
   * category it throws (`idempotency_key_reused`).
   */
  grantCredits(user: string, grant: CreditGrantRequest): Promise<CreditGrantResult>;
  /** A user's wallet (by id or name): grants, the latest `limit` transactions (1–500), totals. */
  userWallet(user: string, options?: { readonly limit?: number | undefined }): Promise<Wallet>;
}

const userPath = (ref: string): string => `/v1/admin/users/${encodeURIComponent(ref)}`;

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
      return toUser(await call("PATCH", userPath(id), UserWithQuota, body));
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
    async grantCredits(user, grant) {
      const expires = grant.expiresAt instanceof Date ? grant.expiresAt.toISOString() : grant.expiresAt;
      const body: WireCreditGrantRequest = {
        amount: grant.amount,
        category: grant.category,
        idempotency_key: grant.idempotencyKey,
        ...(expires !== undefined ? { expires_at: expires } : {}),
        ...(grant.priority !== undefined ? { priority: grant.priority } : {}),
        ...(grant.source !== undefined ? { source: grant.source } : {}),
      };
      const { status, body: answer } = await transport.jsonWithStatus(
        { method: "POST", path: `${userPath(user)}/credits`, auth: "admin", body },
        WireWalletGrant,
      );
      return { grant: toWalletGrant(answer), created: status === 201 };
    },
    async userWallet(user, options = {}) {
      return toWallet(
        await transport.json(
          { method: "GET", path: `${userPath(user)}/wallet`, auth: "admin", query: { limit: options.limit } },
          WireWallet,
        ),
      );
    },
  };
}
