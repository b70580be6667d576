import type { LedgerState } from "@gpupool/core";
import type { NewLease } from "../src/storage/store.js";

/** A ledger with nothing used or reserved, and no window started. */
export const EMPTY_LEDGER: LedgerState = { windowStartedAt: null, usedMs: 0, reservedMs: 0, bonusMs: 0, runs: 0 };

/** A queued 2-s lease of `user:<identityId>`, as a store test inserts it. */
export const queuedLease = (id: string, identityId: string): NewLease => ({
  id,
  appId: null,
  identityKind: "user",
  identityId,
  tier: "pro",
  size: "large",
  slots: 1,
  cost: 1,
  durationMs: 2_000,
  reservedMs: 2_000,
  status: "queued",
  node: null,
  deviceIndex: null,
  deviceUuid: null,
  deviceName: null,
  slotIndexes: null,
  queuedAt: 5_000,
  grantedAt: null,
  deadline: null,
  endedAt: null,
  heldMs: null,
  chargedMs: 0,
  refundedMs: 0,
  failed: false,
  windowStartedAt: null,
  problemCode: null,
  problemDetail: null,
  quotaMs: 2_000,
  overageMs: 0,
  holdMicros: 0,
  holdShares: null,
  chargedMicros: 0,
  maxWaitMs: null,
});
