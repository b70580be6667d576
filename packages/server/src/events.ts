import { EventEmitter } from "node:events";
import type { Problem, WaitReason } from "@gpupool/core";
import type { LeaseRecord } from "./storage/store.js";

export type LeaseEvent =
  | {
      readonly type: "queued";
      readonly position: number;
      readonly reason: WaitReason;
      /** The bound on the wait, and the expected wait (ms; null: unknown). */
      readonly etaMs: number | null;
      readonly expectedMs?: number | null;
    }
  | { readonly type: "granted"; readonly lease: LeaseRecord }
  | { readonly type: "failed"; readonly problem: Problem; readonly lease: LeaseRecord }
  | { readonly type: "ended"; readonly lease: LeaseRecord };

/** Symbols, so no lease id can collide with them (subscribed() lists only string names). */
const SHUTDOWN = Symbol("shutdown");
const CHANGED = Symbol("changed");

/** In-process fan-out of lease state changes to SSE subscribers. */
export class LeaseEvents {
  private readonly emitter = new EventEmitter();

  constructor() {
    // One listener per open SSE stream; many streams is normal, not a leak.
    this.emitter.setMaxListeners(0);
  }

  emit(leaseId: string, event: LeaseEvent): void {
    this.emitter.emit(leaseId, event);
    this.emitter.emit(CHANGED);
  }

  /**
   * Something about leases changed here, or on the leader (a follower hears it): the dashboard's
   * live views look again (they coalesce, and compare before they send).
   */
  changed(): void {
    this.emitter.emit(CHANGED);
  }

  onChange(listener: () => void): () => void {
    this.emitter.on(CHANGED, listener);
    return () => this.emitter.off(CHANGED, listener);
  }

  subscribe(leaseId: string, listener: (event: LeaseEvent) => void): () => void {
    this.emitter.on(leaseId, listener);
    return () => this.emitter.off(leaseId, listener);
  }

  /** Called when the server shuts down: open streams must end so the HTTP server can close. */
  onShutdown(listener: () => void): () => void {
    this.emitter.on(SHUTDOWN, listener);
    return () => this.emitter.off(SHUTDOWN, listener);
  }

  shutdown(): void {
    this.emitter.emit(SHUTDOWN);
  }

  /** Lease ids with at least one subscriber. */
  subscribed(): string[] {
    return this.emitter.eventNames().filter((n): n is string => typeof n === "string");
  }
}
