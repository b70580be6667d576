import type { Coordination, Stager } from "./store.js";

/** The longest payload `publish` accepts: PostgreSQL's NOTIFY takes < 8,000 bytes, so both adapters hold to one bound. */
export const MAX_PAYLOAD_BYTES = 7_000;

export function checkPayload(channel: string, payload: string): void {
  if (channel === "") throw new Error("publish: the channel name is empty");
  const bytes = Buffer.byteLength(payload, "utf8");
  if (bytes > MAX_PAYLOAD_BYTES)
    throw new Error(`publish: payload of ${bytes} bytes on "${channel}" exceeds ${MAX_PAYLOAD_BYTES} bytes`);
}

/**
 * Coordination for a store only one process uses (SQLite): this process is always the leader, so
 * its leader work goes through the store's own stager unfenced, and messages go to this process's
 * subscribers. Delivery is asynchronous (a microtask after `publish`), as it is over PostgreSQL,
 * so a publisher never re-enters its own subscriber.
 */
export class LocalCoordination implements Coordination {
  readonly shared = false;
  private readonly subscribers = new Map<string, Set<(payload: string) => void>>();

  constructor(readonly leaderStager: Stager) {}

  async lead(): Promise<void> {
    // Nobody else can hold the store, so leadership is never lost.
  }

  async publish(channel: string, payload: string): Promise<void> {
    checkPayload(channel, payload);
    const set = this.subscribers.get(channel);
    if (!set) return;
    // A snapshot: a handler subscribed after this publish does not hear it.
    for (const onMessage of [...set]) queueMicrotask(() => set.has(onMessage) && onMessage(payload));
  }

  // In-process delivery is never interrupted, so `onResumed` is never called.
  async subscribe(channel: string, onMessage: (payload: string) => void): Promise<() => Promise<void>> {
    // A wrapper per call, so the same function subscribed twice is two subscriptions.
    const handler = (payload: string): void => onMessage(payload);
    let set = this.subscribers.get(channel);
    if (!set) this.subscribers.set(channel, (set = new Set()));
    set.add(handler);
    return async () => {
      set.delete(handler);
      if (set.size === 0 && this.subscribers.get(channel) === set) this.subscribers.delete(channel);
    };
  }
}
