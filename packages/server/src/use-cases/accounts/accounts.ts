import {
  ANONYMOUS_TIER,
  EMPTY_LEDGER,
  fail,
  identityKey,
  needsInFlightEnd,
  quotaView,
  rollWindow,
  tierOf,
} from "@gpupool/core";
import type {
  AdmissionAccount,
  AdmissionRequest,
  Identity,
  IdentityKind,
  LedgerState,
  Policy,
  QuotaView,
} from "@gpupool/core";
import type { HeldShare, LeaseRecord, Tx } from "../../storage/store.js";
import { usageRecordOf } from "./usage-records.js";
import type { BillingView, LoadedWallet } from "./wallets.js";
import { Wallets } from "./wallets.js";

/** Who a call is charged to, before their tier is known. */
export interface ChargedParty {
  readonly kind: IdentityKind;
  readonly id: string;
}

/** An identity and its quota, as `GET /v1/quota` and every lease answer show them, with its credits and overage. */
export interface IdentityQuota {
  readonly identity: Identity;
  readonly view: QuotaView;
  readonly billing: BillingView;
}

/** The account as admission needs it, with its billing view (for the answer). */
export interface LoadedAccount extends AdmissionAccount {
  readonly billing: BillingView;
  /** A user's wallet as loaded in the admission's transaction (null: no wallet). */
  readonly loadedWallet: LoadedWallet | null;
}

/** What a lease and its identity's ledger become at one step of the lease's life (see lease-transitions). */
export interface LedgerStep<L> {
  readonly lease: L;
  readonly ledger: LedgerState;
}

/**
 * The accounts seam: the only code that loads, rolls and saves an identity's ledger. An account
 * is the charged identity with its tier and quota override, and its ledger rolled to now (a
 * window that ended restarts from zero). Every use case that charges, reserves, refunds or shows
 * quota goes through here, in its own transaction.
 */
export class Accounts {
  readonly wallets: Wallets;

  constructor(private readonly policy: Policy) {
    this.wallets = new Wallets(policy);
  }

  /**
   * The charged identity with its tier: users have theirs (and maybe a quota override); IP
   * addresses and apps are anonymous. A token naming a user who no longer exists is refused.
   */
  async identity(tx: Tx, charged: ChargedParty): Promise<{ identity: Identity; overrideMs: number | null }> {
    if (charged.kind !== "user")
      return { identity: { kind: charged.kind, id: charged.id, tier: ANONYMOUS_TIER }, overrideMs: null };
    const user = await tx.users.get(charged.id);
    if (!user)
      fail(
        "invalid_ip_token",
        `The token names user:${charged.id}, who does not exist on this pool (deleted?). Sign in again.`,
        { reason: "unknown_user" },
      );
    const tier = this.policy.tiers[user.tier] ? user.tier : ANONYMOUS_TIER;
    return { identity: { kind: "user", id: user.id, tier }, overrideMs: user.quotaOverrideMs };
  }

  /**
   * The account as admission needs it. The in-flight end (for an honest retry time) is read only
   * when the decision would be a quota refusal that depends on it — never on the way to a grant.
   */
  async forAdmission(tx: Tx, charged: ChargedParty, request: AdmissionRequest, writes = true): Promise<LoadedAccount> {
    const { identity, overrideMs } = await this.identity(tx, charged);
    // The ledger first: on PostgreSQL its lock is the identity's, which the wallet's rows come after.
    const ledger = await this.ledger(tx, identity, request.now);
    const loadedWallet = identity.kind === "user" ? await this.wallets.load(tx, identity, request.now, writes) : null;
    const billing = loadedWallet?.view ?? this.wallets.walletless(identity, request.now);
    const account: LoadedAccount = {
      identity,
      tier: tierOf(this.policy, identity.tier),
      overrideMs,
      ledger,
      inFlightEnd: null,
      wallet: billing.wallet,
      billing,
      loadedWallet,
    };
    if (!needsInFlightEnd(this.policy, account, request)) return account;
    return { ...account, inFlightEnd: await tx.leases.earliestEnd(identity, this.policy.queueTimeoutMs) };
  }

  /**
   * What the identity has left right now, and when its window resets. The ledger is rolled to now
   * in memory only (a window that ended reads as a fresh one; the next write stores it), so with
   * `writes: false` — in a `Store.read` — this writes nothing and takes no lock.
   */
  async quota(tx: Tx, charged: ChargedParty, now: number, writes = true): Promise<IdentityQuota> {
    const { identity, overrideMs } = await this.identity(tx, charged);
    const ledger = await this.ledger(tx, identity, now);
    return this.view(identity, overrideMs, ledger, await this.wallets.view(tx, identity, now, writes));
  }

  /** The quota object for an account whose ledger is `ledger` (rolled to now). */
  view(identity: Identity, overrideMs: number | null, ledger: LedgerState, billing: BillingView): IdentityQuota {
    return {
      identity,
      view: quotaView(ledger, tierOf(this.policy, identity.tier), overrideMs, this.policy.windowMs),
      billing,
    };
  }

  /**
   * Places an admitted call's credit hold (its overage), in the admission's transaction: the
   * shares of grants to store on the lease. Nothing for a call the quota pays alone.
   */
  async hold(
    tx: Tx,
    account: LoadedAccount,
    leaseId: string,
    micros: number,
    now: number,
  ): Promise<{ shares: HeldShare[]; billing: BillingView }> {
    if (micros === 0 || account.loadedWallet === null) return { shares: [], billing: account.billing };
    const held = await this.wallets.hold(tx, account.identity, account.loadedWallet, leaseId, micros, now);
    return { shares: held.shares, billing: held.view };
  }

  /** Writes an account's ledger as admission (or an adjustment) left it. */
  async save(tx: Tx, identity: { kind: IdentityKind; id: string }, ledger: LedgerState): Promise<void> {
    await tx.ledgers.put(identityKey(identity), ledger);
  }

  /**
   * One step of a lease's life: reads the lease's identity's ledger (rolled to now), applies
   * `step`, and writes both the ledger and the lease.
   */
  async step(
    tx: Tx,
    lease: LeaseRecord,
    now: number,
    step: (ledger: LedgerState) => LedgerStep<LeaseRecord>,
  ): Promise<LeaseRecord> {
    const identity = { kind: lease.identityKind, id: lease.identityId };
    const stored = await tx.ledgers.get(identityKey(identity));
    const ledger = rollWindow(stored ?? EMPTY_LEDGER, now, this.policy.windowMs);
    const next = step(ledger);
    // A step that leaves the stored ledger as it was (a grant in a window already started) writes only the lease.
    if (stored === null || next.ledger !== stored) await tx.ledgers.put(identityKey(identity), next.ledger);
    if (isLive(lease) && !isLive(next.lease)) {
      // It ended: its hold is settled and its usage record written, in the same transaction. The
      // wallet is settled while the lease is still stored live: a store that counts what grants
      // hold from the live leases (SQLite, when it loads a wallet) must still count this one's.
      const wallet = await this.wallets.settle(tx, next.lease, now);
      await tx.leases.update(next.lease);
      await tx.usage.insert({ ...usageRecordOf(next.lease), wallet });
    } else await tx.leases.update(next.lease);
    return next.lease;
  }

  /** Extra seconds for the user's current window only (an operator's bonus; never below zero). */
  async addBonus(tx: Tx, userId: string, bonusMs: number, now: number): Promise<void> {
    const identity = { kind: "user" as const, id: userId };
    const ledger = await this.ledger(tx, identity, now);
    await tx.ledgers.put(identityKey(identity), { ...ledger, bonusMs: Math.max(0, ledger.bonusMs + bonusMs) });
  }

  private async ledger(tx: Tx, identity: { kind: IdentityKind; id: string }, now: number): Promise<LedgerState> {
    return rollWindow((await tx.ledgers.get(identityKey(identity))) ?? EMPTY_LEDGER, now, this.policy.windowMs);
  }
}

function isLive(lease: LeaseRecord): boolean {
  return lease.status === "queued" || lease.status === "active";
}
