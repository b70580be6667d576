import type { AdmissionDecision, AdmissionRequest, SizePolicy } from "@gpupool/core";
import type { NewLease, Tx } from "../../storage/store.js";
import type { Accounts, LoadedAccount } from "../accounts/accounts.js";
import type { BillingView } from "../accounts/wallets.js";
import { admitted } from "./lease-transitions.js";
import type { AdmitInput } from "./leases.js";

/** The call an admission is for, as the lease records it. */
export interface AdmittedCall {
  readonly id: string;
  readonly appId: string | null;
  readonly size: SizePolicy;
  readonly durationMs: number;
  readonly node: string | null;
  /** The max_wait the caller named (ms), stored with the lease; null or absent: none. */
  readonly maxWaitMs?: number | null;
}

/**
 * What an admission writes besides the ledger, in its transaction, on the leader and on a replica
 * that does not lead alike: the credit hold of the call's overage (if any) and the new lease,
 * queued, carrying how it is paid. Returns the billing view after the hold, for the answer.
 */
export async function admittedLease(
  tx: Tx,
  accounts: Accounts,
  account: LoadedAccount,
  decision: AdmissionDecision & { kind: "admitted" },
  call: AdmittedCall,
  now: number,
): Promise<{ lease: NewLease; billing: BillingView }> {
  // Most calls hold nothing: no wallet round trip (nor an await) for them.
  const held =
    decision.split.holdMicros === 0
      ? { shares: [], billing: account.billing }
      : await accounts.hold(tx, account, call.id, decision.split.holdMicros, now);
  const lease = admitted({
    ...call,
    identity: account.identity,
    reservedMs: decision.reservedMs,
    now,
    windowStartedAt: decision.ledger.windowStartedAt,
    split: decision.split,
    holdShares: held.shares,
  });
  return { lease, billing: held.billing };
}

/**
 * The admission request of a lease request made at `now`. `decidesWait`: this replica places the
 * call, so it also judges the call's predicted wait (a replica that does not lead leaves that to
 * the leader, which hears the call's max_wait with it).
 */
export function admissionRequestOf(input: AdmitInput, now: number, decidesWait: boolean): AdmissionRequest {
  return {
    durationMs: input.durationMs,
    size: input.size,
    queue: input.queue,
    via: input.via,
    node: input.node,
    now,
    ...(decidesWait && input.refuseLongWait === true ? { maxWaitMs: input.maxWaitMs ?? null } : {}),
  };
}
