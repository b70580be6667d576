import type { Logger } from "pino";
import { Counter, Histogram } from "prom-client";
import type { Registry } from "prom-client";

/** What a follower's group commit reports to (Store.observe); each part optional. */
export interface GroupObserver {
  /** Failed groups are logged here, at warn, at most one line per LOG_EVERY_MS (see GroupReport). */
  readonly log?: Logger;
  /** The replica's metrics registry: the group sizes and the members that ran alone are registered in it. */
  readonly registry?: Registry;
}

/** Why a member of a follower's group ran alone after all. */
export type FallbackReason = "lock_busy" | "group_failed";

/** At most one log line about failed groups per this many ms; what fails meanwhile is summed into the next. */
export const LOG_EVERY_MS = 60_000;

/** Counts a registry already holds (a second store observed into one registry) are reused. */
function metric<M>(registry: Registry, name: string, make: () => M): M {
  return (registry.getSingleMetric(name) as M | undefined) ?? make();
}

/**
 * What a replica's follower groups (follower-groups.ts) report: how big the groups that committed
 * were, and which members ran again alone — because a lock they tried was taken (ordinary under
 * contention: counted only), or because their whole group did not commit (its session broke, a
 * write or the COMMIT failed: counted and logged). A burst of failed groups gives one log line:
 * the first at once, with its cause; those in the next LOG_EVERY_MS summed into one line at its end.
 */
export class GroupReport {
  private log: Logger | null = null;
  private sizes: Histogram | null = null;
  private fallbacks: Counter<"reason"> | null = null;
  private loggedAt = -Infinity;
  /** Failed groups not yet logged (since the last line), and a timer that logs them. */
  private pending: { groups: number; members: number; outcomeUnknown: number; err: unknown } | null = null;
  private timer: NodeJS.Timeout | null = null;

  observe(o: GroupObserver): void {
    if (o.log !== undefined) this.log = o.log;
    const registry = o.registry;
    if (registry === undefined) return;
    const registers = [registry];
    this.sizes = metric(
      registry,
      "gpupool_follower_group_members",
      () =>
        new Histogram({
          name: "gpupool_follower_group_members",
          help: "Transactions that shared one commit in a follower's group (groups that committed)",
          buckets: [1, 2, 4, 8, 16, 32, 64],
          registers,
        }),
    );
    this.fallbacks = metric(
      registry,
      "gpupool_follower_group_fallbacks_total",
      () =>
        new Counter({
          name: "gpupool_follower_group_fallbacks_total",
          help: "Members of a follower's group that ran again alone, by reason (lock_busy: a lock they tried was taken; group_failed: their group did not commit)",
          labelNames: ["reason"],
          registers,
        }),
    );
  }

  /** A group committed with `members` members. */
  committed(members: number): void {
    if (members > 0) this.sizes?.observe(members);
  }

  /** A member runs again alone. */
  fellBack(reason: FallbackReason): void {
    this.fallbacks?.inc({ reason });
  }

  /**
   * A group ended without committing (`err`), `members` members run in it; `outcomeUnknown`: its
   * COMMIT's answer was lost, so its members got 503 instead of running again.
   */
  failed(members: number, err: unknown, outcomeUnknown: boolean): void {
    const p = (this.pending ??= { groups: 0, members: 0, outcomeUnknown: 0, err });
    p.groups++;
    if (outcomeUnknown) p.outcomeUnknown += members;
    else p.members += members;
    const now = performance.now();
    if (now - this.loggedAt >= LOG_EVERY_MS) this.flush(now);
    else
      this.timer ??= setTimeout(
        () => this.flush(performance.now()),
        Math.max(0, this.loggedAt + LOG_EVERY_MS - now),
      ).unref();
  }

  /** Logs the failed groups not yet logged, in one line. */
  private flush(now: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const p = this.pending;
    this.pending = null;
    if (p === null) return;
    this.loggedAt = now;
    this.log?.warn(
      {
        err: p.err,
        groups: p.groups,
        members: p.members,
        ...(p.outcomeUnknown > 0 ? { outcomeUnknown: p.outcomeUnknown } : {}),
      },
      p.outcomeUnknown > 0
        ? "follower transaction groups did not commit: their members ran again alone, but the commit of some was cut off (those got 503, outcome unknown)"
        : "follower transaction groups did not commit: their members ran again alone, each in a transaction of its own",
    );
  }
}
