import type postgres from "postgres";
import { checkPayload } from "../local-coordination.js";
import { storageError } from "./errors.js";
import type { InFlight } from "./in-flight.js";
import type { SessionPool } from "./session.js";

/** A channel the driver listens on: `first` is its first LISTEN; `ready` once any LISTEN succeeded. */
interface Listen {
  ready: boolean;
  first: Promise<unknown>;
}

/** NOTIFY channel names are identifiers: at most 63 bytes. */
const MAX_CHANNEL_BYTES = 63;

export interface PostgresChannelsOptions {
  /** Sessions for NOTIFY. */
  readonly pool: SessionPool;
  /** The driver instance whose LISTEN connection is used. */
  readonly listener: postgres.Sql;
  readonly schema: string;
  readonly inFlight: InFlight;
}

/** Wake-ups between the replicas of one schema: NOTIFY and LISTEN, channel names prefixed with the schema. */
export class PostgresChannels {
  /** Handlers by channel (as the caller names it); one LISTEN per channel for the store's lifetime. */
  private readonly handlers = new Map<string, Set<(payload: string) => void>>();
  private readonly resumers = new Map<string, Set<() => void>>();
  private readonly listens = new Map<string, Listen>();
  private closed = false;

  constructor(private readonly o: PostgresChannelsOptions) {}

  private channel(channel: string): string {
    const name = `${this.o.schema}.${channel}`;
    if (channel === "" || Buffer.byteLength(name) > MAX_CHANNEL_BYTES) {
      throw new Error(`channel "${channel}": schema and channel together must fit in ${MAX_CHANNEL_BYTES} bytes`);
    }
    return name;
  }

  async publish(channel: string, payload: string): Promise<void> {
    checkPayload(channel, payload);
    const name = this.channel(channel);
    await this.o.inFlight.run(async () => {
      try {
        await this.o.pool.run((session) => session.sql`SELECT pg_notify(${name}, ${payload})`);
      } catch (err) {
        throw storageError(err);
      }
    });
  }

  async subscribe(
    channel: string,
    onMessage: (payload: string) => void,
    onResumed?: () => void,
  ): Promise<() => Promise<void>> {
    const name = this.channel(channel);
    if (this.closed) throw new Error("The store is closed.");
    // A wrapper per call, so the same function subscribed twice is two subscriptions.
    const handler = (payload: string): void => onMessage(payload);
    let set = this.handlers.get(channel);
    if (!set) this.handlers.set(channel, (set = new Set()));
    set.add(handler);
    const resumed = onResumed === undefined ? null : (): void => onResumed();
    if (resumed !== null) {
      let r = this.resumers.get(channel);
      if (!r) this.resumers.set(channel, (r = new Set()));
      r.add(resumed);
    }
    const listen = this.listens.get(channel) ?? this.listen(channel, name);
    if (!listen.ready) {
      try {
        await listen.first;
      } catch (err) {
        set.delete(handler);
        if (resumed !== null) this.resumers.get(channel)?.delete(resumed);
        throw storageError(err);
      }
    }
    return async () => {
      set.delete(handler);
      if (resumed !== null) this.resumers.get(channel)?.delete(resumed);
    };
  }

  /**
   * LISTENs on a channel, once for the store's lifetime. postgres.js keeps one connection for
   * LISTEN, re-issues every LISTEN after it reconnects (also after a first attempt that failed),
   * and reports each success through `onlisten`. Its own unlisten does not survive such a
   * reconnect, and a second listen() on a channel would deliver twice, so the driver is asked once
   * and `handlers` decides who hears what. Delivery is on a microtask, never inside the driver.
   */
  private listen(channel: string, name: string): Listen {
    const dispatch = (payload: string): void => {
      for (const h of [...(this.handlers.get(channel) ?? [])])
        queueMicrotask(() => this.handlers.get(channel)?.has(h) && h(payload));
    };
    const listen: Listen = { ready: false, first: Promise.resolve() };
    // onlisten runs at the first LISTEN and again after every reconnect: the later ones mean
    // notifications may have been missed while the connection was down.
    listen.first = this.o.listener.listen(name, dispatch, () => {
      if (listen.ready) for (const r of [...(this.resumers.get(channel) ?? [])]) queueMicrotask(r);
      listen.ready = true;
    });
    listen.first.catch(() => undefined);
    this.listens.set(channel, listen);
    return listen;
  }

  close(): void {
    this.closed = true;
    this.handlers.clear();
  }
}
