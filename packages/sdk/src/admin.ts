import {
  App as WireApp,
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
  UpdateAppRequest,
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
  /** Every user, by name (it follows the pages of `usersPage`). */
  listUsers(): Promise<User[]>;
  /** A page of users by name (`search`: name or id contains it); pass `nextCursor` as `cursor` for the next. */
  usersPage(options?: PageOptions & { readonly search?: string | undefined }): Promise<Page<"users", User>>;
  updateUser(id: string, changes: UserChanges): Promise<User>;
  /** Registers an app; the returned `key` is shown only this once. */
  createApp(app: {
    readonly name: string;
    readonly owner: string;
    readonly maxConcurrency?: number | undefined;
  }): Promise<CreatedApp>;
  /** Every app, by name (it follows the pages of `appsPage`). */
  listApps(): Promise<App[]>;
  /** A page of apps by name; pass `nextCursor` as `cursor` for the next. */
  appsPage(options?: PageOptions): Promise<Page<"apps", App>>;
  /**
   * Changes an app's (by id or name) concurrency limit: 1 to 100,000 calls at once, or null for
   * none. It holds for the next admission; leases already held keep their GPUs.
   */
  updateApp(app: string, changes: { readonly maxConcurrency: number | null }): Promise<App>;
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

/** Which page of a list: at most `limit` items (1–1000; the server's default 100), after `cursor`. */
export interface PageOptions {
  readonly limit?: number | undefined;
  /** `nextCursor` of the page before; absent: the first page. */
  readonly cursor?: string | undefined;
}

/** One page of a list: its items under `key`, and the cursor of the next page (null on the last). */
export type Page<K extends string, T> = { readonly [P in K]: T[] } & { readonly nextCursor: string | null };

/** Items of every page, following `nextCursor` (a server older than pages sends none: one page). */
async function allPages<T>(page: (cursor: string | undefined) => Promise<{ items: T[]; next: string | null }>) {
  const items: T[] = [];
  let cursor: string | undefined;
  for (;;) {
    const p = await page(cursor);
    items.push(...p.items);
    if (p.next === null) return items;
    cursor = p.next;
  }
}

const userPath = (ref: string): string => `/v1/admin/users/${encodeURIComponent(ref)}`;
const appPath = (ref: string): string => `/v1/admin/apps/${encodeURIComponent(ref)}`;

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
  const users = async (o: PageOptions & { readonly search?: string | undefined }) => {
    const query = { q: o.search, limit: o.limit, cursor: o.cursor };
    const body = await transport.json({ method: "GET", path: "/v1/admin/users", auth: "admin", query }, UserList);
    return { items: body.users.map(toUser), next: body.next_cursor ?? null };
  };
  const apps = async (o: PageOptions) => {
    const query = { limit: o.limit, cursor: o.cursor };
    const body = await transport.json({ method: "GET", path: "/v1/admin/apps", auth: "admin", query }, AppList);
    return { items: body.apps.map(toApp), next: body.next_cursor ?? null };
  };

  return {
    async createUser({ name, tier }) {
      return toCreatedUser(await call("POST", "/v1/admin/users", WireCreatedUser, { name, tier }));
    },
    listUsers: () => allPages((cursor) => users({ limit: 1000, cursor })),
    async usersPage(options = {}) {
      const p = await users(options);
      return { users: p.items, nextCursor: p.next };
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
    listApps: () => allPages((cursor) => apps({ limit: 1000, cursor })),
    async appsPage(options = {}) {
      const p = await apps(options);
      return { apps: p.items, nextCursor: p.next };
    },
    async updateApp(app, { maxConcurrency }) {
      const body: UpdateAppRequest = { max_concurrency: maxConcurrency };
      return toApp(await call("PATCH", appPath(app), WireApp, body));
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
