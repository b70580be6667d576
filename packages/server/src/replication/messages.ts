import type { Coordination, LeaseRecord } from "../storage/store.js";
import type { Announcement } from "../use-cases/leases/announcer.js";

/**
 * What control-plane replicas on one PostgreSQL database tell each other (LISTEN/NOTIFY payloads,
 * JSON). Ids and small facts, and the lease as the sender wrote it in the transaction the word
 * was sent in (delivered at its COMMIT), so the receiver need not read it again; a word without
 * it (an older replica's) makes the receiver read the lease from the database.
 */

/** To the leader: something changed that its scheduler must know about. */
export type LeaderMessage =
  /**
   * A follower admitted (reserved and stored) a queued lease: place it. `queue: false` = grant now
   * or give up; `max_wait_ms`: how long it may wait (absent or null: its tier's queue timeout);
   * `refuse_long_wait`: refuse it if it is expected to wait longer (predicted_wait). `lease`: as
   * stored (the word is sent in the admission's transaction); `share`: what its identity had left
   * of its quota before it (the scheduler's quota-left share).
   */
  | {
      readonly op: "admitted";
      readonly id: string;
      readonly queue: boolean;
      readonly max_wait_ms?: number | null;
      readonly refuse_long_wait?: boolean;
      readonly lease?: LeaseRecord;
      readonly share?: number;
    }
  /**
   * A follower ended a lease (release or cancel): free its slots / take it out of the queue. (A
   * replica of this version says so on EVENTS_CHANNEL instead, in the transaction that ended it.)
   */
  | { readonly op: "ended"; readonly id: string }
  /** Someone on a follower watches this queued lease: announce its place. */
  | { readonly op: "watch"; readonly id: string }
  /** A node registered (its state is in the database) or heartbeat. */
  | { readonly op: "node"; readonly name: string }
  | { readonly op: "heartbeat"; readonly name: string; readonly at: number }
  /** An app's concurrency limit changed. */
  | { readonly op: "limit"; readonly app: string; readonly limit: number | null };

/** From the leader to every replica: a lease's state changed (what the leader announced). */
export type LeaseBroadcast = Announcement;

export const LEADER_CHANNEL = "gpupool_leader";
export const EVENTS_CHANNEL = "gpupool_events";

/** Parses a payload; null for anything malformed (a replica never crashes on another's message). */
export function parseMessage<T extends { readonly op: string } | { readonly type: string }>(
  payload: string,
  key: "op" | "type",
): T | null {
  try {
    const v = JSON.parse(payload) as unknown;
    return typeof v === "object" && v !== null && typeof (v as Record<string, unknown>)[key] === "string"
      ? (v as T)
      : null;
  } catch {
    return null;
  }
}

/** Sends a message to whichever replica leads (it acts on it only while it leads). */
export function tellLeader(coordination: Pick<Coordination, "publish">, m: LeaderMessage): Promise<void> {
  return coordination.publish(LEADER_CHANNEL, JSON.stringify(m));
}
