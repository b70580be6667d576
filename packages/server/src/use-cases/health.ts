import type { Store } from "../storage/store.js";
import type { PoolState } from "./leases/pool-state.js";

export interface Readiness {
  readonly storage: Store["kind"];
  readonly leader: boolean;
  /** The queue and the slots live in the leader's memory: a replica that does not lead says it does not know. */
  readonly queue: number | null;
  readonly slots: { readonly total: number; readonly busy: number } | null;
}

/** Whether this replica can serve: its database answers. Throws the storage's error when it does not. */
export class Health {
  constructor(
    private readonly store: Store,
    private readonly leading: () => boolean,
    private readonly state: PoolState,
  ) {}

  async ready(): Promise<Readiness> {
    await this.store.ping();
    const leader = this.leading();
    return {
      storage: this.store.kind,
      leader,
      queue: leader ? this.state.queueDepth : null,
      slots: leader ? { total: this.state.totalSlots, busy: this.state.busySlots } : null,
    };
  }
}
