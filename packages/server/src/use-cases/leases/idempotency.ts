import { createHash } from "node:crypto";
import { problem } from "@gpupool/core";
import type { Problem } from "@gpupool/core";
import type { LeaseRecord, Store, Tx } from "../../storage/store.js";
import type { ChargedParty } from "../accounts/accounts.js";

/**
 * `Idempotency-Key` on `POST /v1/leases`: a client that did not hear the answer (a dropped
 * connection, a 503 after the lease was stored) sends the same request with the same key and gets
 * the same lease back instead of a second one. A key belongs to the caller's scope — the app or
 * user that sent it and the identity charged — and lives for IDEMPOTENCY_KEY_TTL_MS; the same key
 * with a different request is refused.
 *
 * Race-free without a lock of its own: the key is read and written inside the admission
 * transaction, after the charged identity's ledger is read — which locks it on a shared store (see
 * LedgersTx.get) — so two requests with one key (same scope, so same identity) take turns, on one
 * replica or two, and the second sees the first's lease.
 */

/** How long a key names its lease: a retry within a day returns it; after that the key is new again. */
export const IDEMPOTENCY_KEY_TTL_MS = 24 * 3_600_000;

/** A key as the admission transaction uses it: scoped and hashed, with the request's fingerprint. */
export interface IdempotencyKey {
  /** sha256 of the caller's scope and the client's key (fixed length, whatever the client sent). */
  readonly scopeKey: string;
  /** What the request asked for: duration, size, queue, node. */
  readonly request: string;
}

/** The scoped key for a request, or null without one. */
export function idempotencyKey(
  key: string | null,
  caller: { kind: string; id: string },
  charged: ChargedParty,
  request: { durationMs: number; size: string; queue: boolean; node: string | null },
): IdempotencyKey | null {
  if (key === null) return null;
  const scope = `${caller.kind}:${caller.id}\n${charged.kind}:${charged.id}\n${key}`;
  return {
    scopeKey: createHash("sha256").update(scope).digest("hex"),
    request: JSON.stringify([request.durationMs, request.size, request.queue, request.node]),
  };
}

export type EarlierUse =
  | { readonly kind: "none" }
  | { readonly kind: "same"; readonly lease: LeaseRecord }
  | { readonly kind: "reused"; readonly problem: Problem };

/** Whether the key was used before (within its lifetime), and for what. Inside the admission transaction, after the ledger read. */
export async function earlierUse(tx: Tx, key: IdempotencyKey | null, now: number): Promise<EarlierUse> {
  if (key === null) return { kind: "none" };
  const used = await tx.idempotencyKeys.get(key.scopeKey);
  if (used === null || used.createdAt + IDEMPOTENCY_KEY_TTL_MS <= now) return { kind: "none" };
  if (used.request !== key.request)
    return {
      kind: "reused",
      problem: problem(
        "idempotency_key_reused",
        `This Idempotency-Key was already used for a different lease request (lease ${used.leaseId}); nothing was changed. Send a new key for a new request, or the same request to get that lease back.`,
        { lease: used.leaseId },
      ),
    };
  const lease = await tx.leases.get(used.leaseId);
  return lease === null ? { kind: "none" } : { kind: "same", lease };
}

/** Records the key's use for a lease just stored (in the same transaction). */
export async function rememberKey(tx: Tx, key: IdempotencyKey | null, leaseId: string, now: number): Promise<void> {
  if (key !== null)
    await tx.idempotencyKeys.put({ scopeKey: key.scopeKey, leaseId, request: key.request, createdAt: now });
}

/** How a lease found by its key is answered: 201 if it was granted (even if it has ended since), 202 while it waits, else 200 (it ended without a GPU; its record says why). */
export function replayKind(lease: LeaseRecord): "granted" | "queued" | "ended" {
  if (lease.status === "active" || lease.grantedAt !== null) return "granted";
  return lease.status === "queued" ? "queued" : "ended";
}

/**
 * Deletes the keys that have expired, a batch per transaction, so that the table holds about a
 * day of keys rather than every key ever sent. Run now and then by every replica (deleting the same
 * expired keys twice is harmless); an expired key names nothing (see earlierUse). How many went.
 */
export async function forgetExpiredKeys(store: Store, now: number, batch = 1_000): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await store.transaction((tx) =>
      tx.idempotencyKeys.deleteRecordedBefore(now - IDEMPOTENCY_KEY_TTL_MS, batch),
    );
    total += n;
    if (n < batch) return total;
  }
}
