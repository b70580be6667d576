import type { LeaseEvents } from "../events.js";

/** One event of a live stream, serialized once for every stream that sends it. */
export interface SentEvent {
  readonly event: string;
  /** The event's data as JSON. */
  readonly json: string;
}

/**
 * A view that many live streams show (the operator's pool; one user's meter in several tabs),
 * produced and serialized once for all of them rather than once per stream: a thousand open pool
 * pages cost one read of the pool per change, not a thousand.
 *
 * A stream gets the last view produced if nothing changed since it was asked for (no lease event
 * here or from the leader) and it is younger than `maxAgeMs` (what no lease event announces, a
 * heartbeat or a grant of credits, shows within that much more); otherwise a new one. Streams that
 * ask while one is being produced share it.
 */
export class SharedView {
  private generation = 0;
  private last: { generation: number; at: number; events: Promise<readonly SentEvent[]> } | null = null;
  private readonly stop: () => void;

  constructor(
    events: Pick<LeaseEvents, "onChange">,
    private readonly produce: () => Promise<readonly { event: string; data: unknown }[]>,
    private readonly maxAgeMs: number,
  ) {
    this.stop = events.onChange(() => {
      this.generation++;
    });
  }

  get(): Promise<readonly SentEvent[]> {
    const now = performance.now();
    const last = this.last;
    if (last !== null && last.generation === this.generation && now - last.at < this.maxAgeMs) return last.events;
    const events = this.produce().then((list) => list.map((e) => ({ event: e.event, json: JSON.stringify(e.data) })));
    const entry = { generation: this.generation, at: now, events };
    this.last = entry;
    // A failed read is not kept: the next stream to ask tries again.
    events.catch(() => {
      if (this.last === entry) this.last = null;
    });
    return events;
  }

  close(): void {
    this.stop();
    this.last = null;
  }
}

/** Shared views by key (a user's id), each kept while at least one stream shows it. */
export class SharedViews {
  private readonly views = new Map<string, { view: SharedView; streams: number }>();

  constructor(
    private readonly events: Pick<LeaseEvents, "onChange">,
    private readonly maxAgeMs: number,
  ) {}

  /** The view of `key` for one more stream; call the returned `release` when that stream ends. */
  open(
    key: string,
    produce: () => Promise<readonly { event: string; data: unknown }[]>,
  ): { view: SharedView; release: () => void } {
    let entry = this.views.get(key);
    if (entry === undefined) {
      entry = { view: new SharedView(this.events, produce, this.maxAgeMs), streams: 0 };
      this.views.set(key, entry);
    }
    entry.streams++;
    const held = entry;
    let released = false;
    return {
      view: held.view,
      release: () => {
        if (released) return;
        released = true;
        held.streams--;
        if (held.streams === 0 && this.views.get(key) === held) {
          this.views.delete(key);
          held.view.close();
        }
      },
    };
  }

  /** Open views (for tests and metrics). */
  get size(): number {
    return this.views.size;
  }
}
