import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** What the pool's gauges read: the leader's memory of the pool. */
export interface PoolGauges {
  queueDepth(): number;
  busySlots(): number;
  totalSlots(): number;
  activeLeases(): number;
  /** Queued requests per tier (a tier with none may be left out). */
  queuedByTier?(): ReadonlyMap<string, number>;
  /** Each node's slots: how many it has and how many active leases hold. */
  nodeSlots?(): readonly { node: string; total: number; busy: number }[];
}

/**
 * Prometheus metrics of one server instance (its own registries, so tests can run many). Every
 * replica exports `gpupool_leader` (1 on the one that runs the scheduler); the pool's gauges
 * (slots, queue depth, active leases) only the leader knows, so only the leader exports them — a
 * replica that does not lead has no pool state, and zeros there would read as an idle pool.
 */
export class Metrics {
  readonly registry = new Registry();
  /** The pool's gauges: in the exposition only while this replica leads. */
  private readonly pool = new Registry();
  private readonly grants: Counter<"size">;
  private readonly denials: Counter<"code">;
  private readonly ended: Counter<"status">;
  private readonly held: Histogram<"size">;
  private readonly waited: Histogram;
  private readonly ledger: Histogram<"op">;
  private readonly retained: Counter<"table">;

  constructor(
    state: PoolGauges,
    private readonly leads: () => boolean,
  ) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: "gpupool_process_" });
    this.grants = new Counter({
      name: "gpupool_grants_total",
      help: "Leases granted a GPU slot",
      labelNames: ["size"],
      registers,
    });
    this.denials = new Counter({
      name: "gpupool_denials_total",
      help: "Lease requests refused, by problem code",
      labelNames: ["code"],
      registers,
    });
    this.ended = new Counter({
      name: "gpupool_leases_ended_total",
      help: "Leases that ended, by final status",
      labelNames: ["status"],
      registers,
    });
    this.held = new Histogram({
      name: "gpupool_lease_held_seconds",
      help: "Time a lease held its GPU slot (grant to release or expiry)",
      labelNames: ["size"],
      buckets: [1, 5, 10, 20, 30, 60, 120, 180, 300, 600],
      registers,
    });
    this.waited = new Histogram({
      name: "gpupool_queue_wait_seconds",
      help: "Time from request to grant",
      buckets: [0.01, 0.1, 1, 5, 10, 20, 30, 60, 120],
      registers,
    });
    this.ledger = new Histogram({
      name: "gpupool_ledger_transaction_seconds",
      help: "Duration of ledger transactions (admit, release, expire)",
      labelNames: ["op"],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5],
      registers,
    });
    this.retained = new Counter({
      name: "gpupool_retention_deleted_rows_total",
      help: "Rows the retention job deleted, by table",
      labelNames: ["table"],
      registers,
    });
    new Gauge({
      name: "gpupool_leader",
      help: "1 on the replica that runs the scheduler (its pool gauges are the pool's), 0 on the others",
      registers,
      collect() {
        this.set(leads() ? 1 : 0);
      },
    });
    this.poolGauges(state);
  }

  /** The Prometheus text exposition: this replica's metrics, and the pool's gauges if it leads. */
  async text(): Promise<string> {
    const own = await this.registry.metrics();
    return this.leads() ? `${own}${own.endsWith("\n") ? "" : "\n"}${await this.pool.metrics()}` : own;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private poolGauges(state: PoolGauges): void {
    const registers = [this.pool];
    new Gauge({
      name: "gpupool_queue_depth_by_tier",
      help: "Requests waiting for a slot, by the tier of whom they are for",
      labelNames: ["tier"],
      registers,
      collect() {
        this.reset();
        for (const [tier, n] of state.queuedByTier?.() ?? []) this.set({ tier }, n);
      },
    });
    new Gauge({
      name: "gpupool_node_slots_busy",
      help: "Slots of a node held by active leases",
      labelNames: ["node"],
      registers,
      collect() {
        this.reset();
        for (const n of state.nodeSlots?.() ?? []) this.set({ node: n.node }, n.busy);
      },
    });
    new Gauge({
      name: "gpupool_node_slots_total",
      help: "Slots of a node (its devices' slots)",
      labelNames: ["node"],
      registers,
      collect() {
        this.reset();
        for (const n of state.nodeSlots?.() ?? []) this.set({ node: n.node }, n.total);
      },
    });
    new Gauge({
      name: "gpupool_queue_depth",
      help: "Requests waiting for a slot",
      registers,
      collect() {
        this.set(state.queueDepth());
      },
    });
    new Gauge({
      name: "gpupool_slots_busy",
      help: "Slots held by active leases",
      registers,
      collect() {
        this.set(state.busySlots());
      },
    });
    new Gauge({
      name: "gpupool_slots_total",
      help: "Slots in the pool",
      registers,
      collect() {
        this.set(state.totalSlots());
      },
    });
    new Gauge({
      name: "gpupool_slot_utilization",
      help: "Fraction of slots held by active leases",
      registers,
      collect() {
        const total = state.totalSlots();
        this.set(total === 0 ? 0 : state.busySlots() / total);
      },
    });
    new Gauge({
      name: "gpupool_active_leases",
      help: "Leases holding a slot",
      registers,
      collect() {
        this.set(state.activeLeases());
      },
    });
  }

  grant(size: string, waitedMs: number): void {
    this.grants.inc({ size });
    this.waited.observe(waitedMs / 1000);
  }

  denial(code: string): void {
    this.denials.inc({ code });
  }

  end(status: string, size: string, heldMs: number | null): void {
    this.ended.inc({ status });
    if (heldMs !== null) this.held.observe({ size }, heldMs / 1000);
  }

  retentionDeleted(table: string, rows: number): void {
    this.retained.inc({ table }, rows);
  }

  ledgerTransaction(op: string, seconds: number): void {
    this.ledger.observe({ op }, seconds);
  }
}
