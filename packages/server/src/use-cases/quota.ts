import { EMPTY_LEDGER, identityKey, quotaView, reserve, rollWindow, tierOf } from "@gpupool/core";
import type { Identity, Policy, QuotaView, ReserveInput, ReserveOutcome } from "@gpupool/core";
import type { Tx } from "../storage/store.js";
import { chargedIdentity } from "./charged-identity.js";

export interface IdentityQuota {
  readonly identity: Identity;
  readonly view: QuotaView;
}

/** What an identity has left right now, and when its window resets. Reads only. */
export async function readQuota(tx: Tx, policy: Policy, charged: { kind: "user" | "ip" | "app"; id: string }, now: number): Promise<IdentityQuota> {
  const { identity, overrideMs } = await chargedIdentity(tx, policy, charged);
  const ledger = rollWindow((await tx.ledgers.get(identityKey(identity))) ?? EMPTY_LEDGER, now, policy.windowMs);
  return { identity, view: quotaView(ledger, tierOf(policy, identity.tier), overrideMs, policy.windowMs) };
}

/**
 * `reserve`, looking up the identity's earliest lease deadline only when a refusal needs it for
 * an honest retry time — never on the admission fast path.
 */
export async function reserveWithRetryTime(tx: Tx, input: Omit<ReserveInput, "earliestInFlightEnd">): Promise<ReserveOutcome> {
  const first = reserve({ ...input, earliestInFlightEnd: null });
  if (first.ok || first.problem.code !== "quota_exceeded" || input.ledger.reservedMs === 0) return first;
  return reserve({ ...input, earliestInFlightEnd: await tx.leases.earliestEnd(input.identity, input.policy.queueTimeoutMs) });
}
