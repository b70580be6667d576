import { EMPTY_LEDGER, identityKey, quotaView, rollWindow, tierOf } from "@gpupool/core";
import type { Identity, Policy, QuotaView } from "@gpupool/core";
import type { Tx } from "../storage/store.js";
import { chargedIdentity } from "./charged-identity.js";

export interface IdentityQuota {
  readonly identity: Identity;
  readonly view: QuotaView;
}

/** What an identity has left right now, and when its window resets. Reads only. */
export async function readQuota(tx: Tx, policy: Policy, charged: { kind: "user" | "ip" | "app"; id: string }, now: number): Promise<IdentityQuota> {
  const { identity, overrideMs } = await chargedIdentity(tx, policy, charged);
  const ledger = rollWindow((await tx.getLedger(identityKey(identity))) ?? EMPTY_LEDGER, now, policy.windowMs);
  return { identity, view: quotaView(ledger, tierOf(policy, identity.tier), overrideMs, policy.windowMs) };
}
