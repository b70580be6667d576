import { DomainError } from "@gpupool/core";
import type { Logger } from "pino";
import { Serial } from "../serial.js";
import { LeadershipLostError } from "../storage/store.js";
import type { Staged, Stager, Tx } from "../storage/store.js";

/** What an operation locks first, if it knows (see Stager.expect). */
export type StageHint = Parameters<NonNullable<Stager["expect"]>>[0];

export interface RunnerOptions {
  /** How the engine's transactions are written (fenced to the leadership on a shared store). */
  readonly stager: Stager;
  /**
   * Rebuilds every piece of engine memory from the store, in one staged transaction (the
   * runner calls it inside its serial section). Handed in by the composition root: the runner
   * knows no use case.
   */
  readonly rebuild: () => Promise<void>;
  /** This replica lost the leadership mid-operation: drop what only a leader keeps. */
  readonly onLeadershipLost: (err: LeadershipLostError) => void;
  readonly log: Logger;
}

/**
 * Runs the engine's operations. Each one changes the engine's memory (slots, queue, live leases,
 * nodes) and stages the transaction that records it, in one serial section — so memory and the
 * store change together — and does what follows (timers, events, the answer) only once the
 * commit is durable.
 *
 * The error policy, written once:
 * - A refusal or a not-found (`DomainError`) is thrown by an operation before it changes
 *   anything (operations check their rules first): it goes to the caller, and memory stays.
 * - Lost leadership (`LeadershipLostError`): `onLeadershipLost`, then the caller. Nothing is
 *   rebuilt: a replica that does not lead keeps no pool state.
 * - Anything else — a statement or the commit failed, or a bug — may have left memory ahead of
 *   the store. Memory is rebuilt from the store, once for all the operations of a failed commit
 *   group, and the error goes to each caller. If that rebuild fails too, memory is stale: the
 *   next operation rebuilds it before it runs, and fails if it still cannot; meanwhile the rebuild
 *   is retried in the background (0.5 s, doubling to 10 s), so that what came due while the store
 *   refused writes — a deadline, a queue timeout — is settled as soon as it accepts them, whether
 *   or not a request comes. Memory never serves ahead of the store.
 */
export class EngineRunner {
  private readonly serial = new Serial();
  /** Rebuilds started so far; an operation remembers the count it began under. */
  private started = 0;
  /** The rebuild in progress, and the count it began as. */
  private current: { readonly n: number; readonly done: Promise<void> } | null = null;
  /** The count of the last rebuild that succeeded. */
  private succeeded = 0;
  private stale = false;
  /** The background retry of a failed rebuild, and its current delay. */
  private retry: NodeJS.Timeout | null = null;
  private retryMs = 0;
  private stopped = false;

  constructor(private readonly options: RunnerOptions) {}

  /** No more background rebuilds (the server is closing). */
  stop(): void {
    this.stopped = true;
    if (this.retry !== null) clearTimeout(this.retry);
    this.retry = null;
  }

  /** This replica stopped leading: there is no memory to keep in step with the store any more. */
  reset(): void {
    this.stale = false;
    this.retryMs = 0;
    if (this.retry !== null) clearTimeout(this.retry);
    this.retry = null;
  }

  /**
   * One operation: `stage` changes memory and writes, inside the serial section (or the
   * adapter's own order: an ordered stager runs staged functions one at a time, and its group
   * commit needs several staged in one turn); `after` runs once the commit is durable. `hint`:
   * what `stage` locks first, when the caller knows it (Stager.expect).
   */
  async run<T, R>(stage: (tx: Tx) => Promise<T>, after: (value: T) => R, hint?: StageHint): Promise<R> {
    const { stager } = this.options;
    // Said while it waits for its turn, so the stager may read what it locks first ahead (ReadAhead).
    const expected = hint === undefined ? undefined : stager.expect?.(hint);
    try {
      if (this.stale) await this.rebuildSince(this.started);
    } catch (err) {
      expected?.();
      throw err;
    }
    const began = this.started;
    let staged: Staged<T>;
    try {
      try {
        staged = stager.ordered ? await stager.stage(stage) : await this.serial.run(() => stager.stage(stage));
      } finally {
        expected?.();
      }
      await staged.committed;
    } catch (err) {
      await this.failed(err, began);
      throw err;
    }
    return after(staged.value);
  }

  /** Runs `fn` alone: no operation stages while it runs (recovery when this replica takes the lead). */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.serial.run(fn);
  }

  /** Rebuilds memory from the store now (after notifications were missed, say), under the same rules. */
  refresh(): Promise<void> {
    return this.rebuildSince(this.started);
  }

  private async failed(err: unknown, began: number): Promise<void> {
    if (err instanceof DomainError) return;
    if (err instanceof LeadershipLostError) return this.options.onLeadershipLost(err);
    try {
      await this.rebuildSince(began);
    } catch (again) {
      this.options.log.error(
        { err: again },
        "rebuilding the pool's state from the store failed; the next operation rebuilds it first",
      );
    }
  }

  /**
   * A rebuild that began after the failed operation did covers it: join it, or if it is done
   * and succeeded, there is nothing to do. Otherwise start one (after the one in progress).
   */
  private rebuildSince(began: number): Promise<void> {
    const current = this.current;
    if (current !== null && current.n > began) return current.done;
    if (current === null && this.succeeded > began && !this.stale) return Promise.resolve();
    const n = ++this.started;
    const before = current?.done.catch(() => undefined) ?? Promise.resolve();
    const done = before
      .then(() => this.serial.run(this.options.rebuild))
      .then(
        () => {
          this.succeeded = Math.max(this.succeeded, n);
          this.stale = false;
          this.retryMs = 0;
        },
        (err: unknown) => {
          if (err instanceof LeadershipLostError) {
            // Not this replica's memory to rebuild any more.
            this.options.onLeadershipLost(err);
          } else {
            this.stale = true;
            this.retryLater();
          }
          throw err;
        },
      );
    const entry = { n, done };
    this.current = entry;
    done
      .finally(() => {
        if (this.current === entry) this.current = null;
      })
      .catch(() => undefined);
    return done;
  }

  /** Retries a failed rebuild in the background, backing off, until one succeeds. */
  private retryLater(): void {
    if (this.retry !== null || this.stopped) return;
    this.retryMs = Math.min(10_000, Math.max(500, this.retryMs * 2));
    this.retry = setTimeout(() => {
      this.retry = null;
      if (!this.stale || this.stopped) return;
      this.rebuildSince(this.started).then(
        () => this.options.log.info("the pool's state is rebuilt from the store again"),
        (err: unknown) =>
          this.options.log.warn({ err, retryInMs: this.retryMs }, "the store still refuses the rebuild; trying again"),
      );
    }, this.retryMs);
    this.retry.unref();
  }
}
