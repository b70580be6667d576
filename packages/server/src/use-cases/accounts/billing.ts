import { billingOf, fail, parseMoney } from "@gpupool/core";
import type { Policy } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import { newId } from "../../secrets.js";
import type { GrantRecord, Store, UserRecord, WalletTransactionRecord } from "../../storage/store.js";
import { audit } from "../admin/audit.js";
import type { AuditActor } from "../admin/audit.js";
import { findUser } from "../admin/directory.js";
import type { Accounts, IdentityQuota } from "./accounts.js";
import type { OverageView } from "./wallets.js";

export interface CreditGrantInput {
  readonly amount: string;
  readonly category: "promotional" | "purchased";
  readonly expiresAt: number | null;
  /** Spent before grants of a lower priority; default 10. */
  readonly priority: number | undefined;
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
 * The billing use cases (docs/billing.md): a person's view of their quota and credits, their wallet,
 * their overage settings; an operator's credit grants. Each opens one
 * transaction; wallets are read and written through Accounts' wallet seam only.
 */
export class Billing {
  constructor(
    private readonly store: Store,
    private readonly accounts: Accounts,
    private readonly policy: Policy,
    private readonly clock: Clock,
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
    if (change.overage === undefined && change.monthlyCap === undefined)
      fail("invalid_request", "Name `overage` or `monthly_cap` (or both). Nothing was changed.", {
        errors: [{ field: "body", message: "must name overage or monthly_cap" }],
      });
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
      return this.accounts.wallets.saveSettings(tx, identity, wallet.grants, account, now);
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
      const { grant, created } = await this.accounts.wallets.addGrant(
        tx,
        {
          id: newId("cg"),
          userId: user.id,
          category: input.category,
          amountMicros: amount.micros,
          remainingMicros: amount.micros,
          heldMicros: 0,
          priority: input.priority ?? 10,
          effectiveAt: now,
          expiresAt: input.expiresAt,
          source: input.source ?? `${input.category} credits from the operator`,
          createdAt: now,
          idempotencyKey: input.idempotencyKey,
        },
        this.currency,
      );
      if (!created) return { grant, created };
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

  get currency(): string {
    return billingOf(this.policy).currency;
  }
}
