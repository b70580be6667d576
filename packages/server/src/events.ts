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

/** A symbol, so no lease id can collide with it (subscribed() lists only string names). */
const SHUTDOWN = Symbol("shutdown");

/** In-process fan-out of lease state changes to SSE subscribers. */
export class LeaseEvents {
  private readonly emitter = new EventEmitter();

  constructor() {
    // One listener per open SSE stream; many streams is normal, not a leak.
    this.emitter.setMaxListeners(0);
  }

  emit(leaseId: string, event: LeaseEvent): void {
    this.emitter.emit(leaseId, event);
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
