import { StorageUnavailableError } from "../storage/store.js";
import type { Store } from "../storage/store.js";
import type { PoolState } from "./leases/pool-state.js";

export interface Readiness {
  readonly storage: Store["kind"];
  readonly leader: boolean;
  /** The queue and the slots live in the leader's memory: a replica that does not lead says it does not know. */
  readonly queue: number | null;
  readonly slots: { readonly total: number; readonly busy: number } | null;
}

/**
 * Whether this replica can serve: its state is restored and its database takes writes (on
 * SQLite: the file is still the one opened, its disk has room, the last commit did not fail).
 * Throws the storage's error, with its reason, when it cannot.
 */
export class Health {
  private up = false;

  constructor(
    private readonly store: Store,
    private readonly leading: () => boolean,
    private readonly state: PoolState,
  ) {}

  /** The pool's state is restored: requests may be served. */
  started(): void {
    this.up = true;
  }

  /** Null once started; else why nothing but liveness may be answered yet. */
  notStarted(): StorageUnavailableError | null {
    return this.up
      ? null
      : new StorageUnavailableError("the server is still restoring its state", { reason: "starting" });
  }

  async ready(): Promise<Readiness> {
    const starting = this.notStarted();
    if (starting) throw starting;
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
