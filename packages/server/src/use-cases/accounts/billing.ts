import { MAX_MICROS, billingOf, displayMoney, fail, parseMoney } from "@gpupool/core";
import type { Policy } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import { newId, newOrderedId } from "../../secrets.js";
import type {
  GrantRecord,
  Store,
  UsageFilter,
  UsageGroupBy,
  UsageRecordRow,
  UsageScope,
  UserRecord,
  WalletTransactionRecord,
} from "../../storage/store.js";
import { audit } from "../admin/audit.js";
import type { AuditActor } from "../admin/audit.js";
import { findUser } from "../admin/directory.js";
import type { Accounts, IdentityQuota } from "./accounts.js";
import type { RefusalLog } from "./refusals.js";
import type { OverageView } from "./wallets.js";

export interface CreditGrantInput {
  readonly amount: string;
  readonly category: "promotional" | "purchased";
  readonly expiresAt: number | null;
  readonly priority: number;
  readonly source: string | null;
  readonly idempotencyKey: string;
}

export interface WalletContents {
  readonly userId: string;
  readonly grants: GrantRecord[];
  readonly transactions: WalletTransactionRecord[];
  readonly now: number;
}

/**
 * The billing use cases (SPEC §9–§10): a person's view of their quota and credits, their wallet,
 * their overage settings; an operator's credit grants; the usage ledger. Each opens one
 * transaction; wallets are read and written through Accounts' wallet seam only.
 */
export class Billing {
  constructor(
    private readonly store: Store,
    private readonly accounts: Accounts,
    private readonly policy: Policy,
    private readonly clock: Clock,
    private readonly refusals: RefusalLog | null = null,
  ) {}

  /** `GET /v1/me`: the user, their quota with credits and overage (this month's included credits counted; a read, nothing written). */
  me(userId: string): Promise<{ user: UserRecord; quota: IdentityQuota }> {
    const now = this.clock.now();
    return this.store.read(async (tx) => {
      const user = await tx.users.get(userId);
      if (!user) fail("not_found", "Your user no longer exists on this pool.");
      return { user, quota: await this.accounts.quota(tx, { kind: "user", id: user.id }, now, false) };
    });
  }

  /** A user's wallet (by id or, for the admin, by name): grants and the latest transactions. */
  wallet(ref: string, limit: number): Promise<WalletContents> {
    const now = this.clock.now();
    return this.store.transaction(async (tx) => {
      const user = await findUser(tx, ref);
      if (!user) fail("not_found", `No user "${ref}".`);
      const identity = await this.accounts.identity(tx, { kind: "user", id: user.id });
      // Loading grants the month's included credits and expires what has (the ledger lock first).
      await this.accounts.quota(tx, { kind: "user", id: user.id }, now);
      const loaded = await this.accounts.wallets.load(tx, identity.identity, now);
      return {
        userId: user.id,
        grants: loaded.grants,
        transactions: await this.accounts.wallets.transactions(tx, user.id, limit),
        now,
      };
    });
  }

  /** `PATCH /v1/me/billing`: overage on or off, and the monthly cap (null: the operator's default). */
  setBilling(userId: string, change: { overage?: boolean; monthlyCap?: string | null }): Promise<OverageView> {
    const now = this.clock.now();
    const cap =
      change.monthlyCap === undefined || change.monthlyCap === null ? change.monthlyCap : parseMoney(change.monthlyCap);
    if (cap !== undefined && cap !== null && !cap.ok)
      fail("invalid_request", `monthly_cap ${cap.message}. Nothing was changed.`, {
        errors: [{ field: "monthly_cap", message: cap.message }],
      });
    return this.store.transaction(async (tx) => {
      const { identity } = await this.accounts.identity(tx, { kind: "user", id: userId });
      await this.accounts.quota(tx, { kind: "user", id: userId }, now);
      const wallet = await this.accounts.wallets.load(tx, identity, now);
      const blocked = wallet.view.overage.blockedBy;
      if (change.overage === true && (blocked === "operator_disabled" || blocked === "tier_without_overage"))
        fail(
          "overage_not_available",
          blocked === "operator_disabled"
            ? "This pool does not offer overage: its operator has not enabled it (billing.overage.enabled), so credits cannot pay past the GPU quota. Nothing was changed."
            : `This pool does not offer overage to the ${identity.tier} tier (billing.overage.tiers), so credits cannot pay past its GPU quota. Nothing was changed.`,
          { blocked_by: blocked, tier: identity.tier },
        );
      const account = {
        ...wallet.account,
        ...(change.overage === undefined ? {} : { overageEnabled: change.overage }),
        ...(cap === undefined ? {} : { monthlyCapMicros: cap === null ? null : cap.ok ? cap.micros : null }),
      };
      await tx.wallets.putAccount(account);
      return this.accounts.wallets.viewOf(identity, wallet.grants, account, now).overage;
    });
  }

  /** `POST /v1/admin/users/:id/credits`: a grant, once per idempotency key. */
  grantCredits(
    ref: string,
    input: CreditGrantInput,
    actor: AuditActor = "admin_token",
  ): Promise<{ grant: GrantRecord; created: boolean }> {
    const now = this.clock.now();
    const amount = parseMoney(input.amount, { positive: true });
    if (!amount.ok)
      fail("invalid_request", `amount ${amount.message}. Nothing was changed.`, {
        errors: [{ field: "amount", message: amount.message }],
      });
    if (input.expiresAt !== null && input.expiresAt <= now)
      fail("invalid_request", "expires_at must be in the future. Nothing was changed.", {
        errors: [{ field: "expires_at", message: "must be in the future" }],
      });
    return this.store.transaction(async (tx) => {
      const user = await findUser(tx, ref);
      if (!user) fail("not_found", `No user "${ref}".`);
      await tx.wallets.lock(user.id);
      const before = await tx.wallets.grantByKey(user.id, input.idempotencyKey);
      if (before !== null) {
        if (before.amountMicros !== amount.micros || before.category !== input.category)
          fail(
            "idempotency_key_reused",
            `The idempotency key "${input.idempotencyKey}" already granted ${before.amountMicros} micro-units of ${before.category} credits (${before.id}); a grant with other content needs a new key. Nothing was changed.`,
            { grant: before.id },
          );
        return { grant: before, created: false };
      }
      const held = (await tx.wallets.grants(user.id)).reduce((sum, g) => sum + g.remainingMicros, 0);
      if (held + amount.micros > MAX_MICROS)
        fail(
          "invalid_request",
          `This grant would take the wallet past the largest balance a wallet may hold (${displayMoney(MAX_MICROS, this.currency)}). Nothing was changed.`,
          { errors: [{ field: "amount", message: "would take the wallet past its largest balance" }] },
        );
      const grant: GrantRecord = {
        id: newId("cg"),
        userId: user.id,
        category: input.category,
        amountMicros: amount.micros,
        remainingMicros: amount.micros,
        heldMicros: 0,
        priority: input.priority,
        effectiveAt: now,
        expiresAt: input.expiresAt,
        source: input.source ?? `${input.category} credits from the operator`,
        createdAt: now,
        idempotencyKey: input.idempotencyKey,
      };
      await tx.wallets.insertGrant(grant);
      await tx.wallets.addTransactions([
        {
          id: newOrderedId("wt", now),
          userId: user.id,
          at: now,
          kind: "grant",
          amountMicros: grant.amountMicros,
          grantId: grant.id,
          leaseId: null,
        },
      ]);
      const detail = {
        grant: grant.id,
        amount_micros: grant.amountMicros,
        category: grant.category,
        expires_at: grant.expiresAt,
      };
      await audit(tx, { action: "credits.grant", target: user.id, actor, detail }, now);
      return { grant, created: true };
    });
  }

  /** Who may see which usage records: the admin all; a user their own and their apps'. */
  async scope(caller: { kind: "admin" } | { kind: "user"; userId: string }): Promise<UsageScope> {
    if (caller.kind === "admin") return { kind: "all" };
    const apps = await this.store.transaction((tx) => tx.apps.list());
    return {
      kind: "user",
      userId: caller.userId,
      appIds: apps.filter((a) => a.ownerId === caller.userId).map((a) => a.id),
    };
  }

  usagePage(
    filter: UsageFilter,
    after: { endedAt: number; id: string } | null,
    limit: number,
    order: "asc" | "desc" = "asc",
  ): Promise<UsageRecordRow[]> {
    return this.store.transaction((tx) => tx.usage.list(filter, after, limit, order));
  }

  /**
   * Every app's name by id. Usage records and summaries name the apps a user called with these —
   * only the name, which the app's own pages show its visitors; nothing else of an app the user
   * does not own.
   */
  async appNames(): Promise<ReadonlyMap<string, string>> {
    const apps = await this.store.transaction((tx) => tx.apps.list());
    return new Map(apps.map((a) => [a.id, a.name]));
  }

  async usageSummary(filter: UsageFilter, groupBy: UsageGroupBy) {
    // What this replica counted so far is written first, so the summary includes it.
    await this.refusals?.flush();
    return this.store.transaction(async (tx) => ({
      groups: await tx.usage.summary(filter, groupBy),
      refusals: await tx.usage.refusals(filter, groupBy),
    }));
  }

  /** The server's clock (a usage range ends now by default). */
  now(): number {
    return this.clock.now();
  }

  get currency(): string {
    return billingOf(this.policy).currency;
  }
}
