import { ANONYMOUS_TIER, fail } from "@gpupool/core";
import type { Identity, Policy } from "@gpupool/core";
import type { Tx } from "../storage/store.js";

/**
 * The charged identity with its tier: users have theirs (and maybe a quota override); IP
 * addresses and apps are anonymous. A token naming a user who no longer exists is refused.
 */
export async function chargedIdentity(tx: Tx, policy: Policy, charged: { kind: "user" | "ip" | "app"; id: string }): Promise<{ identity: Identity; overrideMs: number | null }> {
  if (charged.kind !== "user") return { identity: { kind: charged.kind, id: charged.id, tier: ANONYMOUS_TIER }, overrideMs: null };
  const user = await tx.users.get(charged.id);
  if (!user) fail("invalid_ip_token", `The token names user:${charged.id}, who does not exist on this pool (deleted?). Sign in again.`, { reason: "unknown_user" });
  const tier = policy.tiers[user.tier] ? user.tier : ANONYMOUS_TIER;
  return { identity: { kind: "user", id: user.id, tier }, overrideMs: user.quotaOverrideMs };
}
