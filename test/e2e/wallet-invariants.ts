/**
 * The wallets' invariants (docs/billing.md), over rows read in one snapshot — for the fault suites of
 * both stores: a grant never goes below zero or holds more than it has; what it held is exactly
 * the holds of its live leases; what it lost is exactly its spend and expire transactions; no
 * lease is charged more than it held; every hold is settled once (spend + release + expire of a
 * lease's hold = the hold, for every ended lease). Each violation is a sentence naming what broke.
 */

export interface GrantRow {
  id: string;
  amount_micros: string | number;
  remaining_micros: string | number;
  held_micros: string | number;
}

export interface WalletTxRow {
  kind: string;
  amount_micros: string | number;
  grant_id: string;
  lease_id: string | null;
}

export interface BilledLeaseRow {
  id: string;
  status: string;
  hold_micros: string | number;
  hold_shares: string | null;
  charged_micros: string | number;
}

/** A usage record carrying its call's wallet transactions (JSON: `[[id, at, kind, amountMicros, grantId], …]`). */
export interface UsageWalletRow {
  id: string;
  wallet: string;
}

export const WALLET_QUERIES = {
  grants: "SELECT id, amount_micros, remaining_micros, held_micros FROM credit_grants",
  transactions: "SELECT kind, amount_micros, grant_id, lease_id FROM wallet_transactions",
  /** A call's own transactions are kept on its usage record (migration 13). */
  usageWallets: "SELECT id, wallet FROM usage_records WHERE wallet IS NOT NULL",
  leases: "SELECT id, status, hold_micros, hold_shares, charged_micros FROM leases WHERE hold_micros > 0",
} as const;

const LIVE = new Set(["queued", "active"]);

/** The wallet transactions: the rows, and those on usage records, as one list. */
export function allWalletTransactions(rows: WalletTxRow[], usage: UsageWalletRow[]): WalletTxRow[] {
  const onRecords = usage.flatMap((u) =>
    (JSON.parse(u.wallet) as [string, number, string, number, string][]).map(([, , kind, micros, grantId]) => ({
      kind,
      amount_micros: micros,
      grant_id: grantId,
      lease_id: u.id,
    })),
  );
  return [...rows, ...onRecords];
}

/**
 * `heldStored`: the store keeps `held_micros` up to date with every hold (PostgreSQL). SQLite counts
 * what a grant holds from its live leases when it loads a wallet and writes the column only with
 * the grant's other changes: there the grant's holds are its live leases' (checked against what it
 * has left), and the column is not compared.
 */
export function walletViolations(
  grants: GrantRow[],
  txs: WalletTxRow[],
  leases: BilledLeaseRow[],
  heldStored = true,
): string[] {
  const out: string[] = [];
  const n = (v: string | number | null | undefined): number => Number(v ?? 0);
  const heldBy = new Map<string, number>();
  for (const l of leases) {
    if (n(l.charged_micros) > n(l.hold_micros))
      out.push(`lease ${l.id} was charged ${l.charged_micros} micros but held only ${l.hold_micros}`);
    const shares = l.hold_shares === null ? [] : (JSON.parse(l.hold_shares) as { grantId: string; micros: number }[]);
    const total = shares.reduce((s, x) => s + x.micros, 0);
    if (total !== n(l.hold_micros))
      out.push(`lease ${l.id}: its hold shares sum to ${total}, its hold is ${l.hold_micros}`);
    if (LIVE.has(l.status)) for (const s of shares) heldBy.set(s.grantId, (heldBy.get(s.grantId) ?? 0) + s.micros);
    else {
      const settled = txs
        .filter((t) => t.lease_id === l.id && (t.kind === "spend" || t.kind === "release" || t.kind === "expire"))
        .reduce((s, t) => s + n(t.amount_micros), 0);
      if (settled !== total) out.push(`lease ${l.id} ended, but ${settled} of its ${total} micros hold were settled`);
      const spent = txs
        .filter((t) => t.lease_id === l.id && t.kind === "spend")
        .reduce((s, t) => s + n(t.amount_micros), 0);
      if (spent !== n(l.charged_micros))
        out.push(`lease ${l.id} was charged ${l.charged_micros} micros, its spends say ${spent}`);
    }
  }
  for (const g of grants) {
    const amount = n(g.amount_micros);
    const remaining = n(g.remaining_micros);
    const live = heldBy.get(g.id) ?? 0;
    const held = heldStored ? n(g.held_micros) : live;
    if (!(held >= 0 && held <= remaining && remaining <= amount))
      out.push(`grant ${g.id}: held ${held}, remaining ${remaining}, amount ${amount} are out of order`);
    if (held !== live) out.push(`grant ${g.id} holds ${held} micros, but its live leases hold ${live}`);
    const gone = txs
      .filter((t) => t.grant_id === g.id && (t.kind === "spend" || t.kind === "expire"))
      .reduce((s, t) => s + n(t.amount_micros), 0);
    if (amount - remaining !== gone)
      out.push(`grant ${g.id} lost ${amount - remaining} micros, but its spend and expire transactions say ${gone}`);
  }
  return out;
}
