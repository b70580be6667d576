import { EMPTY_LEDGER, fail, identityKey, rollWindow } from "@gpupool/core";
import type { Policy } from "@gpupool/core";
import { hashSecret, newId, newSecret } from "../secrets.js";
import type { AppRecord, KeyedRecord, Store, Tx, UserRecord } from "../storage/store.js";

/** Finds a user by id or by name. */
export async function findUser(tx: Tx, ref: string): Promise<UserRecord | null> {
  return (await tx.users.get(ref)) ?? (await tx.users.getByName(ref));
}

export async function findApp(tx: Tx, ref: string): Promise<AppRecord | null> {
  return (await tx.apps.get(ref)) ?? (await tx.apps.getByName(ref));
}

function knownTier(policy: Policy, tier: string): void {
  if (!policy.tiers[tier]) fail("invalid_request", `Unknown tier "${tier}"; this pool's tiers are ${Object.keys(policy.tiers).join(", ")}.`, { errors: [{ field: "tier", message: "is not a configured tier" }] });
}

export async function createUser(store: Store, policy: Policy, input: { name: string; tier: string }, now: number): Promise<{ user: UserRecord; token: string }> {
  knownTier(policy, input.tier);
  const token = newSecret("user");
  const user: UserRecord = { id: newId("u"), name: input.name, tier: input.tier, tokenHash: hashSecret(token), quotaOverrideMs: null, createdAt: now };
  await store.transaction(async (tx) => {
    if (await tx.users.getByName(input.name)) fail("conflict", `A user named "${input.name}" already exists.`);
    await tx.users.insert(user);
  });
  return { user, token };
}

export interface UserUpdate {
  readonly tier?: string;
  /** Seconds; null clears the override. */
  readonly quotaS?: number | null;
  /** Seconds added to the current window only. */
  readonly bonusS?: number;
}

export async function updateUser(store: Store, policy: Policy, ref: string, update: UserUpdate, now: number): Promise<UserRecord> {
  if (update.tier !== undefined) knownTier(policy, update.tier);
  return store.transaction(async (tx) => {
    const user = await findUser(tx, ref);
    if (!user) fail("not_found", `No user "${ref}".`);
    const next: UserRecord = {
      ...user,
      ...(update.tier !== undefined ? { tier: update.tier } : {}),
      ...(update.quotaS !== undefined ? { quotaOverrideMs: update.quotaS === null ? null : Math.round(update.quotaS * 1000) } : {}),
    };
    await tx.users.update(next);
    if (update.bonusS !== undefined && update.bonusS !== 0) {
      const key = identityKey({ kind: "user", id: user.id });
      const ledger = rollWindow((await tx.ledgers.get(key)) ?? EMPTY_LEDGER, now, policy.windowMs);
      await tx.ledgers.put(key, { ...ledger, bonusMs: Math.max(0, ledger.bonusMs + Math.round(update.bonusS * 1000)) });
    }
    return next;
  });
}

export async function createApp(store: Store, input: { name: string; owner: string; maxConcurrency: number | null }, now: number): Promise<{ app: AppRecord; key: string }> {
  const key = newSecret("app");
  return store.transaction(async (tx) => {
    const owner = await findUser(tx, input.owner);
    if (!owner) fail("invalid_request", `No user "${input.owner}" to own the app; create the user first.`, { errors: [{ field: "owner", message: "is not a known user" }] });
    if (await tx.apps.getByName(input.name)) fail("conflict", `An app named "${input.name}" already exists.`);
    const app: AppRecord = { id: newId("a"), name: input.name, ownerId: owner.id, keyHash: hashSecret(key), maxConcurrency: input.maxConcurrency, createdAt: now };
    await tx.apps.insert(app);
    return { app, key };
  });
}

export async function createKeyed(store: Store, kind: "node" | "edge", name: string, now: number): Promise<{ record: KeyedRecord; key: string }> {
  const key = newSecret(kind);
  const record: KeyedRecord = { id: newId(kind === "node" ? "n" : "e"), name, keyHash: hashSecret(key), createdAt: now };
  await store.transaction(async (tx) => {
    const existing = kind === "node" ? await tx.nodes.getByName(name) : await tx.edges.getByName(name);
    if (existing) fail("conflict", `A ${kind} named "${name}" already exists.`);
    if (kind === "node") await tx.nodes.insert(record);
    else await tx.edges.insert(record);
  });
  return { record, key };
}
