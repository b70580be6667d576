import { isIdOf, isIdShaped } from "@gpupool/contract";
import { fail } from "@gpupool/core";
import type { Policy } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import { hashSecret, newId, newSecret } from "../../secrets.js";
import type { AppRecord, KeyedRecord, Store, Tx, UserRecord } from "../../storage/store.js";
import type { Accounts, IdentityQuota } from "../accounts/accounts.js";
import { audit } from "./audit.js";
import type { AuditActor } from "./audit.js";

/**
 * Finds a user by id or by name, unambiguously: a reference of an id's form is looked up as an id
 * only (no name may have that form, and one that did before the rule cannot shadow an id).
 */
export async function findUser(tx: Tx, ref: string): Promise<UserRecord | null> {
  return isIdOf("user", ref) ? tx.users.get(ref) : tx.users.getByName(ref);
}

/** Finds an app by id or by name, as findUser does. */
export async function findApp(tx: Tx, ref: string): Promise<AppRecord | null> {
  return isIdOf("app", ref) ? tx.apps.get(ref) : tx.apps.getByName(ref);
}

/** Refuses a name of an id's form (the admin API's schema does too; this holds for any caller). */
function nameNotAnId(name: string): void {
  if (isIdShaped(name))
    fail(
      "invalid_request",
      `"${name}" has the form of an id (u_, a_, n_ or e_ then 16 characters), so it cannot be a name: lookups by "id or name" would find the record with that id. Choose another name.`,
      { errors: [{ field: "name", message: "must not be of an id's form" }] },
    );
}

export interface UserUpdate {
  readonly tier?: string;
  /** Seconds; null clears the override. */
  readonly quotaS?: number | null;
  /** Seconds added to the current window only. */
  readonly bonusS?: number;
}

/** What changes elsewhere when the directory changes: cached callers, and the scheduler's app limits. */
export interface DirectoryListeners {
  /** A user's tier or an app changed: cached callers must not keep the old one. */
  callersChanged(): void;
  /** Settles once the scheduler applies it (on the leader), or the leader has been told (elsewhere). */
  appLimitChanged(appId: string, limit: number | null): Promise<void>;
}

/**
 * The operator's directory: users, apps, nodes and edges, each created with a secret shown once
 * (only its hash is kept), and a user's tier, quota override and bonus.
 */
export class Directory {
  constructor(
    private readonly store: Store,
    private readonly accounts: Accounts,
    private readonly policy: Policy,
    private readonly clock: Clock,
    private readonly listeners: DirectoryListeners,
  ) {}

  async createUser(input: { name: string; tier: string }): Promise<{ user: UserRecord; token: string }> {
    nameNotAnId(input.name);
    this.knownTier(input.tier);
    const token = newSecret("user");
    const user: UserRecord = {
      id: newId("u"),
      name: input.name,
      tier: input.tier,
      tokenHash: hashSecret(token),
      quotaOverrideMs: null,
      createdAt: this.clock.now(),
    };
    await this.store.transaction(async (tx) => {
      if (await tx.users.getByName(input.name)) fail("conflict", `A user named "${input.name}" already exists.`);
      await tx.users.insert(user);
    });
    return { user, token };
  }

  /**
   * A page of users by name: those whose name or id contains `q` (case-insensitive), after the
   * name `after`. A read of one range of the name index (see UsersTx.page). `next`: the name to
   * list the next page after (null on the last page).
   */
  async findUsers(
    q: string | null,
    after: string | null,
    limit: number,
  ): Promise<{ users: UserRecord[]; next: string | null }> {
    const rows = await this.store.read((tx) => tx.users.page(q, { after, limit: limit + 1 }));
    const users = rows.slice(0, limit);
    return { users, next: rows.length > limit ? (users[users.length - 1]?.name ?? null) : null };
  }

  /** A user (by id or name) with their quota now. */
  async user(ref: string): Promise<{ user: UserRecord; quota: IdentityQuota }> {
    const now = this.clock.now();
    return this.store.read(async (tx) => {
      const user = await findUser(tx, ref);
      if (!user) fail("not_found", `No user "${ref}".`);
      return { user, quota: await this.accounts.quota(tx, { kind: "user", id: user.id }, now, false) };
    });
  }

  async updateUser(
    ref: string,
    update: UserUpdate,
    actor: AuditActor = "admin_token",
  ): Promise<{ user: UserRecord; quota: IdentityQuota }> {
    if (update.tier !== undefined) this.knownTier(update.tier);
    const now = this.clock.now();
    const out = await this.store.transaction(async (tx) => {
      const user = await findUser(tx, ref);
      if (!user) fail("not_found", `No user "${ref}".`);
      const next: UserRecord = {
        ...user,
        ...(update.tier !== undefined ? { tier: update.tier } : {}),
        ...(update.quotaS !== undefined
          ? { quotaOverrideMs: update.quotaS === null ? null : Math.round(update.quotaS * 1000) }
          : {}),
      };
      await tx.users.update(next);
      if (update.bonusS !== undefined && update.bonusS !== 0)
        await this.accounts.addBonus(tx, user.id, Math.round(update.bonusS * 1000), now);
      const detail = {
        ...(update.tier !== undefined ? { tier: { from: user.tier, to: update.tier } } : {}),
        ...(update.quotaS !== undefined
          ? {
              quota_override_s: {
                from: user.quotaOverrideMs === null ? null : user.quotaOverrideMs / 1000,
                to: update.quotaS,
              },
            }
          : {}),
        ...(update.bonusS !== undefined ? { bonus_s: update.bonusS } : {}),
      };
      await audit(tx, { action: "user.update", target: user.id, actor, detail }, now);
      return { user: next, quota: await this.accounts.quota(tx, { kind: "user", id: user.id }, now) };
    });
    // A changed tier applies to the user's token at once.
    this.listeners.callersChanged();
    return out;
  }

  async createApp(input: {
    name: string;
    owner: string;
    maxConcurrency: number | null;
  }): Promise<{ app: AppRecord; key: string }> {
    nameNotAnId(input.name);
    const key = newSecret("app");
    const created = await this.store.transaction(async (tx) => {
      const owner = await findUser(tx, input.owner);
      if (!owner)
        fail("invalid_request", `No user "${input.owner}" to own the app; create the user first.`, {
          errors: [{ field: "owner", message: "is not a known user" }],
        });
      if (await tx.apps.getByName(input.name)) fail("conflict", `An app named "${input.name}" already exists.`);
      const app: AppRecord = {
        id: newId("a"),
        name: input.name,
        ownerId: owner.id,
        keyHash: hashSecret(key),
        maxConcurrency: input.maxConcurrency,
        createdAt: this.clock.now(),
      };
      await tx.apps.insert(app);
      return app;
    });
    await this.listeners.appLimitChanged(created.id, created.maxConcurrency);
    return { app: created, key };
  }

  /**
   * Changes an app's concurrency limit (null: none), recorded in the audit log. It applies to
   * admissions from the answer on: calls beyond it wait (reason `concurrency`); leases already
   * held keep their GPUs; calls waiting only for it may go at once.
   */
  async updateApp(
    ref: string,
    update: { maxConcurrency: number | null },
    actor: AuditActor = "admin_token",
  ): Promise<AppRecord> {
    const now = this.clock.now();
    const updated = await this.store.transaction(async (tx) => {
      const app = await findApp(tx, ref);
      if (!app) fail("not_found", `No app "${ref}".`);
      const next: AppRecord = { ...app, maxConcurrency: update.maxConcurrency };
      await tx.apps.update(next);
      const detail = { max_concurrency: { from: app.maxConcurrency, to: update.maxConcurrency } };
      await audit(tx, { action: "app.update", target: app.id, actor, detail }, now);
      return next;
    });
    this.listeners.callersChanged();
    await this.listeners.appLimitChanged(updated.id, updated.maxConcurrency);
    return updated;
  }

  /** A page of apps by name, after the name `after`; `next` as for findUsers. */
  async apps(after: string | null, limit: number): Promise<{ apps: AppRecord[]; next: string | null }> {
    const rows = await this.store.read((tx) => tx.apps.page({ after, limit: limit + 1 }));
    const apps = rows.slice(0, limit);
    return { apps, next: rows.length > limit ? (apps[apps.length - 1]?.name ?? null) : null };
  }

  async createKeyed(kind: "node" | "edge", name: string): Promise<{ record: KeyedRecord; key: string }> {
    nameNotAnId(name);
    const key = newSecret(kind);
    const record: KeyedRecord = {
      id: newId(kind === "node" ? "n" : "e"),
      name,
      keyHash: hashSecret(key),
      createdAt: this.clock.now(),
    };
    await this.store.transaction(async (tx) => {
      const existing = kind === "node" ? await tx.nodes.getByName(name) : await tx.edges.getByName(name);
      if (existing) fail("conflict", `A ${kind} named "${name}" already exists.`);
      if (kind === "node") await tx.nodes.insert(record);
      else await tx.edges.insert(record);
    });
    return { record, key };
  }

  private knownTier(tier: string): void {
    if (!this.policy.tiers[tier])
      fail(
        "invalid_request",
        `Unknown tier "${tier}"; this pool's tiers are ${Object.keys(this.policy.tiers).join(", ")}.`,
        { errors: [{ field: "tier", message: "is not a configured tier" }] },
      );
  }
}
