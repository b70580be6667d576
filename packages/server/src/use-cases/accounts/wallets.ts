import {
  MAX_MICROS,
  billingMonth,
  billingOf,
  creditTotals,
  displayMoney,
  expireGrants,
  fail,
  includedGrant,
  includedGrantId,
  overageBlocker,
  placeHold,
  settleHold,
} from "@gpupool/core";
import type { CreditTotals, Identity, OverageBlocker, Policy, WalletState } from "@gpupool/core";
import { newOrderedId } from "../../secrets.js";
import type {
  BillingAccountRecord,
  CallWalletEntry,
  GrantRecord,
  HeldShare,
  LeaseRecord,
  Tx,
  WalletTransactionKind,
  WalletTransactionRecord,
} from "../../storage/store.js";

/** Whether credits pay past the quota for an identity, and the month's overage so far. */
export interface OverageView {
  readonly blockedBy: OverageBlocker | null;
  /** The operator offers overage to this identity (a user of a listed tier). */
  readonly available: boolean;
  readonly enabled: boolean;
  readonly pricePerMinuteMicros: number;
  readonly capMicros: number | null;
  readonly spentMicros: number;
  readonly heldMicros: number;
  readonly month: string;
  readonly monthEndsAt: number;
}

/** The billing side of an identity's quota object: its credits (null: no wallet) and overage. */
export interface BillingView {
  readonly currency: string;
  readonly credits: CreditTotals | null;
  readonly overage: OverageView;
  /** What admission needs (null: no wallet). */
  readonly wallet: WalletState | null;
}

/** A user's wallet as loaded in a transaction: grants, settings, and the view of both. */
export interface LoadedWallet {
  readonly grants: GrantRecord[];
  readonly account: BillingAccountRecord;
  readonly view: BillingView;
}

/** Live leases of a user whose holds a wallet's transactions show, per status (a user's queue is shorter than this). */
const LIVE_LEASES_SHOWN = 1000;

/**
 * The wallets seam: the only code that reads and writes credit grants, wallet transactions and
 * billing settings. Each method runs inside the caller's transaction, after the user's ledger
 * lock (PostgreSQL lock order: the identity's advisory lock, then its ledger, then its wallet).
 * A month's included credits are granted at the first load in that month; grants past their
 * expiry lose their unheld rest at load, each with an `expire` transaction.
 */
export class Wallets {
  /** The month `walletlessViews` were built in (one of `month`'s answers). */
  private walletlessMonth: ReturnType<typeof billingMonth> | null = null;
  private currentMonth: ReturnType<typeof billingMonth> | null = null;
  private readonly walletlessViews = new Map<string, BillingView>();

  constructor(private readonly policy: Policy) {}

  /** The billing view of an identity with no wallet (an IP address or an app): constant, no reads. */
  walletless(identity: Identity, now: number): BillingView {
    // The same for every identity of a kind and tier in a month, and asked for twice per call of
    // every IP address and app: built once per month, kind and tier.
    const month = this.month(now);
    if (this.walletlessMonth !== month) {
      this.walletlessMonth = month;
      this.walletlessViews.clear();
    }
    const key = `${identity.kind}:${identity.tier}`;
    const cached = this.walletlessViews.get(key);
    if (cached !== undefined) return cached;
    const billing = billingOf(this.policy);
    const view: BillingView = {
      currency: billing.currency,
      credits: null,
      wallet: null,
      overage: {
        blockedBy: overageBlocker(this.policy, identity, null),
        available: false,
        enabled: false,
        pricePerMinuteMicros: billing.overage.pricePerMinuteMicros,
        capMicros: null,
        spentMicros: 0,
        heldMicros: 0,
        month: month.name,
        monthEndsAt: month.endsAt,
      },
    };
    this.walletlessViews.set(key, view);
    return view;
  }

  /**
   * The identity's billing view (and for a user the wallet admission needs). `writes: false` (in a
   * `Store.read`): as a load would leave it, without writing it (see `load`).
   */
  async view(tx: Tx, identity: Identity, now: number, writes = true): Promise<BillingView> {
    return identity.kind === "user"
      ? (await this.load(tx, identity, now, writes)).view
      : this.walletless(identity, now);
  }

  /**
   * Loads a user's wallet as of now: grants the month's included credits and expires what has.
   * With `writes: false` (a read: no lock, nothing written) the wallet is as such a load would
   * leave it — the month's credits included, expired grants at their rest — and the next load
   * that writes records both.
   */
  async load(tx: Tx, identity: Identity, now: number, writes = true): Promise<LoadedWallet> {
    const { grants, account } = await this.rows(tx, identity, now, writes);
    return { grants, account, view: this.viewOf(identity, grants, account, now) };
  }

  /** `load` without the view. */
  private async rows(
    tx: Tx,
    identity: Identity,
    now: number,
    writes: boolean,
  ): Promise<{ grants: GrantRecord[]; account: BillingAccountRecord }> {
    const userId = identity.id;
    if (writes) await tx.wallets.lock(userId);
    const month = this.month(now);
    const billing = billingOf(this.policy);
    // Both reads sent at once (PostgreSQL pipelines them on the transaction's connection).
    const [stored, loaded] = await Promise.all([tx.wallets.account(userId), tx.wallets.grants(userId)]);
    let grants = loaded;
    const log: WalletTransactionRecord[] = [];
    const included = billing.includedMicros[identity.tier] ?? 0;
    if (included > 0 && !grants.some((g) => g.id === includedGrantId(userId, month.name))) {
      const grant: GrantRecord = {
        ...includedGrant(userId, identity.tier, included, now),
        userId,
        idempotencyKey: null,
      };
      if (!writes || (await tx.wallets.insertGrant(grant))) {
        grants = [...grants, grant];
        log.push(this.entry(userId, now, "grant", grant.amountMicros, grant.id, null));
      }
    }
    const expiry = expireGrants(grants, now);
    if (expiry.expired.length > 0) {
      grants = expiry.grants;
      if (writes)
        for (const g of grants) if (expiry.expired.some((e) => e.grantId === g.id)) await tx.wallets.updateGrant(g);
      for (const e of expiry.expired) log.push(this.entry(userId, now, "expire", e.micros, e.grantId, null));
    }
    if (writes && log.length > 0) await tx.wallets.addTransactions(log);
    const account: BillingAccountRecord =
      stored === null
        ? { userId, overageEnabled: false, monthlyCapMicros: null, month: month.name, monthSpentMicros: 0 }
        : stored.month === month.name
          ? stored
          : { ...stored, month: month.name, monthSpentMicros: 0 };
    return { grants, account };
  }

  /** The billing month of `now` (asked for several times per call: kept until it ends). */
  private month(now: number): ReturnType<typeof billingMonth> {
    const m = this.currentMonth;
    if (m !== null && now >= m.startsAt && now < m.endsAt) return m;
    this.currentMonth = billingMonth(now);
    return this.currentMonth;
  }

  /** The view of a loaded wallet. */
  viewOf(identity: Identity, grants: readonly GrantRecord[], account: BillingAccountRecord, now: number): BillingView {
    const billing = billingOf(this.policy);
    const month = this.month(now);
    const credits = creditTotals(grants, now);
    const capMicros = account.monthlyCapMicros ?? billing.overage.defaultCapMicros;
    const wallet: WalletState = {
      optedIn: account.overageEnabled,
      availableMicros: credits.availableMicros,
      capMicros,
      monthSpentMicros: account.monthSpentMicros,
      monthHeldMicros: credits.heldMicros,
      monthEndsAt: month.endsAt,
    };
    const blockedBy = overageBlocker(this.policy, identity, wallet);
    return {
      currency: billing.currency,
      credits,
      wallet,
      overage: {
        blockedBy,
        available: blockedBy === null || blockedBy === "not_opted_in",
        enabled: account.overageEnabled,
        pricePerMinuteMicros: billing.overage.pricePerMinuteMicros,
        capMicros: account.overageEnabled ? capMicros : null,
        spentMicros: account.monthSpentMicros,
        heldMicros: credits.heldMicros,
        month: month.name,
        monthEndsAt: month.endsAt,
      },
    };
  }

  /**
   * Places a new lease's hold on the user's grants in the spending order (admission decided it
   * fits, on `wallet` as loaded in the same transaction): the shares to store on the lease, and the
   * view after it. Each share names its `hold` transaction, which is written when the lease
   * settles, beside the spend and release it ends in (until then `transactions` shows it from the
   * lease): a user's transactions are indexed in the user's order, and one commit writing that
   * page per call rather than two wrote a tenth less per credits-paid call (docs/benchmarks.md).
   */
  async hold(
    tx: Tx,
    identity: Identity,
    wallet: LoadedWallet,
    leaseId: string,
    micros: number,
    now: number,
  ): Promise<{ shares: HeldShare[]; view: BillingView }> {
    if (micros === 0) return { shares: [], view: wallet.view };
    const placed = placeHold(wallet.grants, micros, now);
    if (placed === null)
      throw new Error(`hold of ${micros} for ${leaseId}: the wallet cannot cover what admission allowed`);
    const shares: HeldShare[] = [];
    for (const s of placed.shares) {
      const grant = placed.grants.find((g) => g.id === s.grantId);
      if (grant !== undefined) await tx.wallets.updateGrant(grant);
      shares.push({ grantId: s.grantId, micros: s.micros, holdTxId: newOrderedId("wt", now) });
    }
    return { shares, view: this.viewOf(identity, placed.grants, wallet.account, now) };
  }

  /** Saves a user's overage settings (the wallet was loaded, so locked); the overage view they give. */
  async saveSettings(
    tx: Tx,
    identity: Identity,
    grants: readonly GrantRecord[],
    account: BillingAccountRecord,
    now: number,
  ): Promise<OverageView> {
    await tx.wallets.putAccount(account);
    return this.viewOf(identity, grants, account, now).overage;
  }

  /**
   * An operator's grant, once per idempotency key: the key's earlier grant (created: false), or
   * this one with its `grant` transaction. A key reused with another amount or category, or a
   * balance past the largest a wallet may hold, is refused and nothing is written.
   */
  async addGrant(tx: Tx, grant: GrantRecord, currency: string): Promise<{ grant: GrantRecord; created: boolean }> {
    const key = grant.idempotencyKey;
    await tx.wallets.lock(grant.userId);
    const before = key === null ? null : await tx.wallets.grantByKey(grant.userId, key);
    if (before !== null) {
      if (before.amountMicros !== grant.amountMicros || before.category !== grant.category)
        fail(
          "idempotency_key_reused",
          `The idempotency key "${key}" already granted ${before.amountMicros} micro-units of ${before.category} credits (${before.id}); a grant with other content needs a new key. Nothing was changed.`,
          { grant: before.id },
        );
      return { grant: before, created: false };
    }
    const balance = (await tx.wallets.grants(grant.userId)).reduce((sum, g) => sum + g.remainingMicros, 0);
    if (balance + grant.amountMicros > MAX_MICROS)
      fail(
        "invalid_request",
        `This grant would take the wallet past the largest balance a wallet may hold (${displayMoney(MAX_MICROS, currency)}). Nothing was changed.`,
        { errors: [{ field: "amount", message: "would take the wallet past its largest balance" }] },
      );
    await tx.wallets.insertGrant(grant);
    const at = grant.createdAt;
    const id = newOrderedId("wt", at);
    await tx.wallets.addTransactions([
      {
        id,
        userId: grant.userId,
        at,
        kind: "grant",
        amountMicros: grant.amountMicros,
        grantId: grant.id,
        leaseId: null,
      },
    ]);
    return { grant, created: true };
  }

  /**
   * A user's latest `limit` wallet transactions, newest first: the rows written (grants, expiries,
   * and calls settled by an older release), the transactions kept on the user's usage records (a
   * call's hold, spend, release, expire: written with the record when it settles), and the holds
   * of the user's live leases (from the lease until then).
   */
  async transactions(tx: Tx, userId: string, limit: number): Promise<WalletTransactionRecord[]> {
    const identity = { kind: "user" as const, id: userId };
    const [written, settled, queued, active] = await Promise.all([
      tx.wallets.transactions(userId, limit),
      // Every record carries at least one transaction: `limit` records hold the newest `limit`.
      tx.usage.walletEntries(userId, limit),
      tx.leases.list({ identity, status: "queued", limit: LIVE_LEASES_SHOWN }),
      tx.leases.list({ identity, status: "active", limit: LIVE_LEASES_SHOWN }),
    ]);
    const pending = [...queued, ...active].flatMap((l) =>
      this.holdEntries(l).map((e) => ({ ...e, userId, leaseId: l.id })),
    );
    return [...written, ...settled, ...pending]
      .sort((a, b) => b.at - a.at || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
      .slice(0, limit);
  }

  /** The `hold` transactions of a lease's hold (written on its usage record when it settles). */
  private holdEntries(lease: LeaseRecord): CallWalletEntry[] {
    const out: CallWalletEntry[] = [];
    for (const s of lease.holdShares ?? [])
      if (s.holdTxId !== undefined)
        out.push({ id: s.holdTxId, at: lease.queuedAt, kind: "hold", amountMicros: s.micros, grantId: s.grantId });
    return out;
  }

  /**
   * Settles an ended lease's hold: its `chargedMicros` are spent from the grants it held, the rest
   * released (or expired with a grant that ended meanwhile), and the month's spend grows. Only a
   * lease that just ended comes here (its status guards against settling twice). Returns the
   * call's wallet transactions — its hold and what settled it — for its usage record, which the
   * caller writes in the same transaction (null: nothing was held). The wallet is read as stored,
   * without a load's month credits and expiries: settling needs neither (a grant that expired
   * meanwhile loses what this hold releases of it here), and the next load writes both.
   */
  async settle(tx: Tx, lease: LeaseRecord, now: number): Promise<CallWalletEntry[] | null> {
    const shares = lease.holdShares ?? [];
    if (lease.identityKind !== "user" || shares.length === 0) return null;
    const userId = lease.identityId;
    await tx.wallets.lock(userId);
    const [stored, grants] = await Promise.all([tx.wallets.account(userId), tx.wallets.grants(userId)]);
    const out = settleHold(grants, shares, lease.chargedMicros, now);
    // The writes are sent together (PostgreSQL pipelines them) and waited for at once.
    const writes: Promise<void>[] = [];
    for (const s of shares) {
      const grant = out.grants.find((g) => g.id === s.grantId);
      if (grant !== undefined) writes.push(tx.wallets.updateGrant(grant));
    }
    const entries = this.holdEntries(lease);
    let spent = 0;
    for (const s of out.spent) {
      spent += s.micros;
      entries.push(this.callEntry(now, "spend", s));
    }
    for (const s of out.released) entries.push(this.callEntry(now, "release", s));
    for (const s of out.expired) entries.push(this.callEntry(now, "expire", s));
    if (spent > 0) {
      const month = this.month(now).name;
      const account: BillingAccountRecord =
        stored === null
          ? { userId, overageEnabled: false, monthlyCapMicros: null, month, monthSpentMicros: spent }
          : { ...stored, month, monthSpentMicros: (stored.month === month ? stored.monthSpentMicros : 0) + spent };
      writes.push(tx.wallets.putAccount(account));
    }
    await Promise.all(writes);
    return entries;
  }

  private callEntry(at: number, kind: WalletTransactionKind, s: { grantId: string; micros: number }): CallWalletEntry {
    return { id: newOrderedId("wt", at), at, kind, amountMicros: s.micros, grantId: s.grantId };
  }

  private entry(
    userId: string,
    at: number,
    kind: WalletTransactionKind,
    amountMicros: number,
    grantId: string,
    leaseId: string | null,
  ): WalletTransactionRecord {
    return { id: newOrderedId("wt", at), userId, at, kind, amountMicros, grantId, leaseId };
  }
}
