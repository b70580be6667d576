import postgres from "postgres";
import type { Acknowledged } from "./pg-fault-kit.js";
import { WALLET_QUERIES, allWalletTransactions, walletViolations } from "./wallet-invariants.js";
import type { BilledLeaseRow, GrantRow, UsageWalletRow, WalletTxRow } from "./wallet-invariants.js";

/**
 * The ledger's and the leases' invariants, checked over a PostgreSQL schema in one snapshot, plus
 * what the clients were told (every 2xx the load saw). Each violation is a sentence naming what
 * broke; none may appear, whatever the fault.
 */

export interface InvariantOptions {
  /** The storage URL (`postgres://…?schema=…`). */
  readonly url: string;
  /** Quota in ms of each tier (by the name the leases record). */
  readonly quotaMs: Readonly<Record<string, number>>;
  readonly queueTimeoutMs: number;
  /** How long past its queue timeout a lease may still be queued (the leader's timers, a takeover). */
  readonly graceMs: number;
  /** The leases the clients were told of (taken before the snapshot: each was committed before its answer). */
  readonly acked: ReadonlyMap<string, Acknowledged>;
  /**
   * The Idempotency-Keys (as stored: idempotency_keys.scope_key) of the admissions the clients were
   * told failed, each with what they were told: none may name a lease (failedScopeKeys).
   */
  readonly toldFailed?: ReadonlyMap<string, string>;
  /** The keys (as stored) of acknowledged admissions, each with its lease: each must name it (and shows the keys are read right). */
  readonly keysMade?: ReadonlyMap<string, string>;
}

export interface InvariantReport {
  readonly leases: number;
  readonly identities: number;
  /** Violations of every invariant but the queue timeout's. */
  readonly violations: string[];
  /** Leases queued past their queue timeout + grace (issue 14 item 5: a new leader re-scanning the queue). */
  readonly stuckQueued: string[];
  /** Leases in the database that no client was told of (their request failed, or its answer was cut off). */
  readonly unacknowledged: number;
}

const ENDED_CHARGED = new Set(["released", "expired", "failed"]);
const AFTER_GRANT = new Set(["active", "released", "expired", "failed"]);

export interface LeaseRow {
  id: string;
  identity_kind: string;
  identity_id: string;
  tier: string;
  status: string;
  reserved_ms: string;
  /** What the ledger holds of the reservation (the rest is overage, held on the wallet). */
  quota_ms: string;
  charged_ms: string;
  window_started_at: string | null;
  node: string | null;
  device_index: number | null;
  slot_indexes: string | null;
  queued_at: string;
}

export interface LedgerRow {
  identity: string;
  used_ms: string;
  reserved_ms: string;
  bonus_ms: string;
  window_started_at: string | null;
}

export async function checkInvariants(o: InvariantOptions): Promise<InvariantReport> {
  const q = o.url.indexOf("?");
  const params = new URLSearchParams(o.url.slice(q + 1));
  const schema = params.get("schema") ?? "public";
  for (const p of [...params.keys()]) if (p !== "schema") params.delete(p);
  const acked = new Map(o.acked);
  const sql = postgres(o.url.slice(0, q), {
    max: 1,
    onnotice: () => undefined,
    connection: { search_path: schema },
  });
  try {
    const { leases, ledgers, keys, wallets, now } = await sql.begin("isolation level repeatable read", async (tx) => {
      const leases = await tx.unsafe<LeaseRow[]>(
        "SELECT id, identity_kind, identity_id, tier, status, reserved_ms, quota_ms, charged_ms, window_started_at, node, device_index, slot_indexes, queued_at FROM leases",
      );
      const ledgers = await tx.unsafe<LedgerRow[]>(
        "SELECT identity, used_ms, reserved_ms, bonus_ms, window_started_at FROM ledgers",
      );
      const wallets = {
        grants: [...(await tx.unsafe<GrantRow[]>(WALLET_QUERIES.grants))],
        txs: allWalletTransactions(
          [...(await tx.unsafe<WalletTxRow[]>(WALLET_QUERIES.transactions))],
          [...(await tx.unsafe<UsageWalletRow[]>(WALLET_QUERIES.usageWallets))],
        ),
        leases: [...(await tx.unsafe<BilledLeaseRow[]>(WALLET_QUERIES.leases))],
      };
      const keys = await tx.unsafe<KeyRow[]>("SELECT scope_key, lease_id FROM idempotency_keys");
      return { leases: [...leases], ledgers: [...ledgers], keys: [...keys], wallets, now: Date.now() };
    });
    const report = judge(o, leases, ledgers, acked, now);
    report.violations.push(...keyViolations(o, keys, leases));
    report.violations.push(...walletViolations(wallets.grants, wallets.txs, wallets.leases));
    return report;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** A row of idempotency_keys: the lease a key made. */
export interface KeyRow {
  scope_key: string;
  lease_id: string;
}

/**
 * "No lease exists that the client was told failed": a key whose admission was answered as failed
 * names no lease; and every acknowledged admission's key names the lease it was told of.
 */
export function keyViolations(
  o: Pick<InvariantOptions, "toldFailed" | "keysMade">,
  keys: readonly KeyRow[],
  leases: readonly LeaseRow[],
): string[] {
  const ids = new Set(leases.map((l) => l.id));
  const stored = new Map(keys.map((k) => [k.scope_key, k.lease_id]));
  const violations: string[] = [];
  for (const [key, said] of o.toldFailed ?? []) {
    const lease = stored.get(key);
    if (lease !== undefined && ids.has(lease))
      violations.push(`lease ${lease} exists, but its admission was answered ${said}`);
  }
  for (const [key, id] of o.keysMade ?? [])
    if (stored.get(key) !== id) violations.push(`lease ${id}'s Idempotency-Key names ${stored.get(key) ?? "nothing"}`);
  return violations;
}

/** The invariants over rows read in one snapshot (also used by the SQLite backup test). */
export function judge(
  o: Omit<InvariantOptions, "url">,
  leases: LeaseRow[],
  ledgers: LedgerRow[],
  acked: Map<string, Acknowledged>,
  now: number,
): InvariantReport {
  const violations: string[] = [];
  const stuckQueued: string[] = [];
  const byIdentity = new Map<string, LeaseRow[]>();
  const slots = new Map<string, string>();
  const byId = new Map<string, LeaseRow>();
  for (const l of leases) {
    byId.set(l.id, l);
    const identity = `${l.identity_kind}:${l.identity_id}`;
    byIdentity.set(identity, [...(byIdentity.get(identity) ?? []), l]);
    if (l.status === "active") {
      for (const slot of (l.slot_indexes ?? "").split(",").filter((x) => x !== "")) {
        const key = `${l.node}/${l.device_index}/${slot}`;
        const holder = slots.get(key);
        if (holder !== undefined) violations.push(`slot ${key} is held by two active leases: ${holder} and ${l.id}`);
        slots.set(key, l.id);
      }
    }
    if (l.status === "queued" && now - Number(l.queued_at) > o.queueTimeoutMs + o.graceMs)
      stuckQueued.push(`${l.id} queued for ${((now - Number(l.queued_at)) / 1000).toFixed(1)} s`);
  }
  for (const g of ledgers) {
    const own = byIdentity.get(g.identity) ?? [];
    const used = Number(g.used_ms);
    const reserved = Number(g.reserved_ms);
    const live = own.filter((l) => l.status === "queued" || l.status === "active");
    const liveReserved = live.reduce((n, l) => n + Number(l.quota_ms), 0);
    if (reserved !== liveReserved)
      violations.push(`${g.identity}: reserved ${reserved} ms, but its live leases reserve ${liveReserved} ms`);
    const charged = own
      .filter((l) => ENDED_CHARGED.has(l.status) && l.window_started_at === g.window_started_at)
      // The ledger counts the quota's part of a charge; the rest was overage, paid from credits.
      .reduce((n, l) => n + Math.min(Number(l.charged_ms), Number(l.quota_ms)), 0);
    if (used !== charged) violations.push(`${g.identity}: used ${used} ms, but its leases were charged ${charged} ms`);
    const tier = own[0]?.tier;
    const quota = tier === undefined ? undefined : o.quotaMs[tier];
    if (quota !== undefined && used + reserved > quota + Number(g.bonus_ms))
      violations.push(`${g.identity}: used ${used} + reserved ${reserved} ms is over its ${quota} ms quota`);
  }
  for (const a of acked.values()) {
    const l = byId.get(a.id);
    if (l === undefined) {
      violations.push(`lease ${a.id} was acknowledged (${a.status}) but is not in the database`);
      continue;
    }
    if (a.status === "active" && !AFTER_GRANT.has(l.status))
      violations.push(`lease ${a.id} was acknowledged active but is ${l.status}`);
    if (a.charged !== null) {
      if (l.status !== a.status) violations.push(`lease ${a.id} was acknowledged ${a.status} but is ${l.status}`);
      if (Number(l.charged_ms) !== Math.round(a.charged * 1000))
        violations.push(
          `lease ${a.id}: the client was told ${a.charged} s charged, the database says ${l.charged_ms} ms`,
        );
    }
  }
  return {
    leases: leases.length,
    identities: ledgers.length,
    violations,
    stuckQueued,
    unacknowledged: leases.filter((l) => !acked.has(l.id)).length,
  };
}
