import type { Pool, SlotAssignment } from "./pool.js";

export type WaitReason = "node" | "concurrency";

/** What the scheduler needs to know of a queued lease. */
export interface QueuedRequest {
  readonly leaseId: string;
  readonly appId: string | null;
  readonly identity: string;
  readonly slots: number;
  readonly priority: number;
  readonly durationMs: number;
  /** Arrival order; ties on everything else are broken by it. */
  readonly seq: number;
  readonly queuedAt: number;
}

export interface Grant {
  readonly leaseId: string;
  readonly assignment: SlotAssignment;
}

/** Per-app concurrency: how many leases each app holds, and its limit. */
export interface Concurrency {
  active(appId: string): number;
  limit(appId: string): number | null;
}

/**
 * The queue in front of the pool. This first scheduler is strict FIFO: the head waits for a
 * device that fits, and everything behind it waits too (no backfill yet), except that a request
 * held back by its own app's concurrency limit never blocks other apps' requests.
 */
export class FifoScheduler {
  private readonly queue = new Map<string, QueuedRequest>();
  private readonly reasons = new Map<string, WaitReason>();

  get size(): number {
    return this.queue.size;
  }

  enqueue(request: QueuedRequest): void {
    if (this.queue.has(request.leaseId)) throw new Error(`lease ${request.leaseId} is already queued`);
    this.queue.set(request.leaseId, request);
    this.reasons.set(request.leaseId, "node");
  }

  remove(leaseId: string): boolean {
    this.reasons.delete(leaseId);
    return this.queue.delete(leaseId);
  }

  has(leaseId: string): boolean {
    return this.queue.has(leaseId);
  }

  /** 1-based place in line, or null when not queued. */
  position(leaseId: string): number | null {
    if (!this.queue.has(leaseId)) return null;
    let i = 1;
    for (const id of this.queue.keys()) {
      if (id === leaseId) return i;
      i++;
    }
    return null;
  }

  reason(leaseId: string): WaitReason | null {
    return this.reasons.get(leaseId) ?? null;
  }

  /** Queued requests in serving order with their place and why they wait. */
  *waiting(): Generator<{ request: QueuedRequest; position: number; reason: WaitReason }> {
    let position = 1;
    for (const request of this.queue.values()) {
      yield { request, position: position++, reason: this.reasons.get(request.leaseId) ?? "node" };
    }
  }

  /**
   * Whether a request arriving now would be granted at once by enqueue + dispatch: only when no
   * request ahead of it waits for a device (those held back by their app's limit never block) and
   * its own app is under its limit and a device fits it. Changes nothing.
   */
  wouldGrantNow(request: QueuedRequest, pool: Pool, concurrency: Concurrency): boolean {
    for (const waiting of this.queue.values()) if (!atLimit(concurrency, waiting.appId)) return false;
    return !atLimit(concurrency, request.appId) && pool.fits(request.slots);
  }

  /**
   * Grants what can be granted now, in order, assigning slots in `pool` and counting them in
   * `concurrency` through `onGrant`. Stops at the first request no device can take.
   */
  dispatch(pool: Pool, concurrency: Concurrency, onGrant: (grant: Grant, request: QueuedRequest) => void): Grant[] {
    const grants: Grant[] = [];
    // Deleting the entry being visited is safe while iterating a Map.
    for (const request of this.queue.values()) {
      if (request.appId !== null) {
        const limit = concurrency.limit(request.appId);
        if (limit !== null && concurrency.active(request.appId) >= limit) {
          this.reasons.set(request.leaseId, "concurrency");
          continue;
        }
      }
      const assignment = pool.assign(request.leaseId, request.slots);
      if (!assignment) {
        this.reasons.set(request.leaseId, "node");
        break;
      }
      this.remove(request.leaseId);
      const grant = { leaseId: request.leaseId, assignment };
      grants.push(grant);
      onGrant(grant, request);
    }
    return grants;
  }
}

function atLimit(concurrency: Concurrency, appId: string | null): boolean {
  if (appId === null) return false;
  const limit = concurrency.limit(appId);
  return limit !== null && concurrency.active(appId) >= limit;
}
