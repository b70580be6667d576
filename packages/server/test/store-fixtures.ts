import type { LedgerState } from "@gpupool/core";
import type { NewLease } from "../src/storage/store.js";

/** A ledger with nothing used or reserved, and no window started. */
export const EMPTY_LEDGER: LedgerState = { windowStartedAt: null, usedMs: 0, reservedMs: 0, bonusMs: 0, runs: 0 };

/** A queued 60-s lease of `user:u1` (a free user) through app a1; `over` changes any field. */
export const newLease = (id: string, over: Partial<NewLease> = {}): NewLease => ({
  id,
  appId: "a1",
  identityKind: "user",
  identityId: "u1",
  tier: "free",
  size: "large",
  slots: 1,
  cost: 1,
  durationMs: 60_000,
  reservedMs: 60_000,
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
  quotaMs: 60_000,
  overageMs: 0,
  holdMicros: 0,
  holdShares: null,
  chargedMicros: 0,
  maxWaitMs: null,
  ...over,
});

/** A queued 2-s lease of `user:<identityId>` (a pro user), with no app. */
export const queuedLease = (id: string, identityId: string): NewLease =>
  newLease(id, { appId: null, identityId, tier: "pro", durationMs: 2_000, reservedMs: 2_000, quotaMs: 2_000 });
