/** Who a dashboard session (or a one-time sign-in code) signs in as: a user, or the operator. */
export type DashboardRole = "user" | "admin";

/**
 * A browser session of the dashboard. `idHash` is the hash of the secret in the cookie; the
 * secret is never stored. The operator's sessions have no user (`userId` null, role `admin`).
 */
export interface DashboardSessionRecord {
  readonly idHash: string;
  readonly role: DashboardRole;
  readonly userId: string | null;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly revokedAt: number | null;
}

/** A one-time sign-in code (`gpupool dashboard`): only its hash is stored; used once, then never again. */
export interface DashboardCodeRecord {
  readonly codeHash: string;
  readonly role: DashboardRole;
  readonly userId: string | null;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly usedAt: number | null;
}

/** One operator action, append-only: what was done, to whom, by which credential, and its details (JSON). */
export interface AuditRecord {
  /** Time-ordered (`au_…`): newest last in id order. */
  readonly id: string;
  readonly at: number;
  /** `user.update`, `credits.grant`, `sessions.revoke`, `app.update`, … */
  readonly action: string;
  /** The user (or app) acted on, by id. */
  readonly target: string;
  /** `admin-token` or `dashboard` (an operator's dashboard session). */
  readonly actor: string;
  /** What changed, as JSON text (never a secret). */
  readonly detail: string;
}

/** Admissions refused in one hour (`YYYY-MM-DDTHH`, UTC) with one code. */
export interface RefusalHour {
  readonly hour: string;
  readonly code: string;
  readonly count: number;
}

/** What the duration advisor and the wait percentiles read of one granted call. */
export interface GrantedCall {
  readonly queuedAt: number;
  readonly grantedAt: number;
  readonly heldMs: number;
  readonly reservedMs: number;
  readonly size: string;
}

export interface DashboardTx {
  insertSession(session: DashboardSessionRecord): Promise<void>;
  getSession(idHash: string): Promise<DashboardSessionRecord | null>;
  /** Marks the session revoked (if it was not already); true when it exists. */
  revokeSession(idHash: string, at: number): Promise<boolean>;
  insertCode(code: DashboardCodeRecord): Promise<void>;
  /**
   * Uses the code: marks it used if it exists, is unused and unexpired at `at`, and returns it;
   * otherwise null. Two concurrent uses of one code: at most one gets it.
   */
  useCode(codeHash: string, at: number): Promise<DashboardCodeRecord | null>;
  addAudit(record: AuditRecord): Promise<void>;
  /** Newest first, `limit` at most, those older than the entry `before` (its id) when given. */
  audit(before: string | null, limit: number): Promise<AuditRecord[]>;
  /** Adds to the hours' counts. */
  addRefusalHours(counts: readonly RefusalHour[]): Promise<void>;
  /**
   * Refusals per hour and code from `fromHour` to `toHour` (inclusive): admissions refused (the
   * counts above) and calls that ended without a GPU (the usage ledger's problem codes).
   */
  refusalHours(from: number, to: number): Promise<RefusalHour[]>;
  /** Granted calls that ended in [from, to) — of one app, or of every app when `appId` is null — newest first, at most `limit`. */
  grantedCalls(appId: string | null, from: number, to: number, limit: number): Promise<GrantedCall[]>;
}
