import { createHmac, randomBytes } from "node:crypto";
import { DomainError, fail } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import { hashSecret, secretEquals } from "../../secrets.js";
import type { DashboardRole, Store, UserRecord } from "../../storage/store.js";
import type { Caller, Callers } from "./callers.js";

/** How long a one-time sign-in code (`gpupool dashboard`) may wait to be used. */
export const SIGN_IN_CODE_TTL_MS = 5 * 60_000;

/**
 * Dashboard secrets get prefixes `secretKind` does not know: neither is ever a bearer credential
 * for the API. A session secret travels only in an HttpOnly cookie; a code only in a URL fragment.
 */
const SESSION_PREFIX = "gpd_";
const CODE_PREFIX = "gpc_";

/** A live dashboard session: who it stands for, and what the page needs to know of it. */
export interface DashboardPrincipal {
  readonly role: DashboardRole;
  readonly caller: Caller & { kind: "user" | "admin" };
  readonly user: UserRecord | null;
  readonly csrfToken: string;
  readonly expiresAt: number;
}

export interface OpenedDashboardSession extends DashboardPrincipal {
  /** The secret for the cookie: never stored, never in a body. */
  readonly secret: string;
}

/**
 * The CSRF token of a session, derived from its secret (so nothing more is stored): a page reads
 * it from `GET /v1/dashboard/session` and sends it back as a header, which a cross-site form or
 * image cannot. Knowing it tells nothing of the secret.
 */
export function csrfTokenOf(secret: string): string {
  return createHmac("sha256", secret).update("gpupool dashboard csrf").digest("base64url");
}

/** Whether `presented` is the session's CSRF token (constant time). */
export function csrfMatches(presented: string, secret: string): boolean {
  return secretEquals(presented, csrfTokenOf(secret));
}

const WRONG =
  "That is not a user token, the admin token, or an unused sign-in code of this pool (codes work once, within 5 minutes). Check it and sign in again.";

/**
 * The dashboard's browser sessions: opened with a user token, the admin token or a one-time code;
 * only hashes of the secrets are stored; they expire and are revocable. The operator's session is
 * a session too (role `admin`, no user).
 */
export class DashboardSessions {
  constructor(
    private readonly store: Store,
    private readonly callers: Callers,
    private readonly clock: Clock,
    private readonly ttlMs: number,
  ) {}

  /** Signs in with a token (user or admin) or a one-time code; any other credential is 401 invalid_credentials. */
  async open(input: { token?: string | undefined; code?: string | undefined }): Promise<OpenedDashboardSession> {
    const now = this.clock.now();
    let who: { role: DashboardRole; userId: string | null };
    if (input.token !== undefined) {
      const caller = await this.callers.authenticate(input.token, ["user", "admin"]).catch((err: unknown) => {
        // Not a token of a user or the operator (an app key, say): one answer for every wrong credential.
        if (err instanceof DomainError && err.code !== "storage_unavailable") fail("invalid_credentials", WRONG);
        throw err;
      });
      who = caller.kind === "user" ? { role: "user", userId: caller.user.id } : { role: "admin", userId: null };
    } else if (input.code !== undefined && input.code.startsWith(CODE_PREFIX)) {
      const code = input.code;
      const used = await this.store.transaction((tx) => tx.dashboard.useCode(hashSecret(code), now));
      if (used === null) fail("invalid_credentials", WRONG);
      who = { role: used.role, userId: used.userId };
    } else {
      fail("invalid_credentials", WRONG);
    }
    const secret = SESSION_PREFIX + randomBytes(32).toString("base64url");
    const expiresAt = now + this.ttlMs;
    const user = await this.store.transaction(async (tx) => {
      const found = who.userId === null ? null : await tx.users.get(who.userId);
      if (who.userId !== null && found === null) fail("invalid_credentials", WRONG);
      await tx.dashboard.insertSession({
        idHash: hashSecret(secret),
        role: who.role,
        userId: who.userId,
        createdAt: now,
        expiresAt,
        revokedAt: null,
      });
      return found;
    });
    return { secret, ...principal(who.role, user, secret, expiresAt) };
  }

  /** Who a cookie's session stands for now; null when it is unknown, expired or revoked (or its user is gone). */
  async resolve(secret: string): Promise<DashboardPrincipal | null> {
    if (!secret.startsWith(SESSION_PREFIX) || secret.length > 200) return null;
    const now = this.clock.now();
    return this.store.transaction(async (tx) => {
      const s = await tx.dashboard.getSession(hashSecret(secret));
      if (s === null || s.revokedAt !== null || s.expiresAt <= now) return null;
      if (s.role === "admin") return principal("admin", null, secret, s.expiresAt);
      const user = s.userId === null ? null : await tx.users.get(s.userId);
      return user === null ? null : principal("user", user, secret, s.expiresAt);
    });
  }

  /**
   * Signs a browser out: a live session is revoked once `check` (the request's CSRF check, which
   * throws) passes; an unknown, expired or revoked one needs nothing.
   */
  async signOut(secret: string, check: () => void): Promise<void> {
    if ((await this.resolve(secret)) === null) return;
    check();
    await this.revoke(secret);
  }

  /** Signs the session out (idempotent): its cookie is no good on any replica after this. */
  private async revoke(secret: string): Promise<void> {
    if (!secret.startsWith(SESSION_PREFIX) || secret.length > 200) return;
    const now = this.clock.now();
    await this.store.transaction((tx) => tx.dashboard.revokeSession(hashSecret(secret), now));
  }

  /** A one-time sign-in code for the caller; only its hash is stored. */
  async signInCode(caller: Caller & { kind: "user" | "admin" }): Promise<{ code: string; expiresAt: number }> {
    const now = this.clock.now();
    const code = CODE_PREFIX + randomBytes(24).toString("base64url");
    const expiresAt = now + SIGN_IN_CODE_TTL_MS;
    await this.store.transaction((tx) =>
      tx.dashboard.insertCode({
        codeHash: hashSecret(code),
        role: caller.kind,
        userId: caller.kind === "user" ? caller.user.id : null,
        createdAt: now,
        expiresAt,
        usedAt: null,
      }),
    );
    return { code, expiresAt };
  }
}

function principal(
  role: DashboardRole,
  user: UserRecord | null,
  secret: string,
  expiresAt: number,
): DashboardPrincipal {
  const caller: Caller & { kind: "user" | "admin" } = user === null ? { kind: "admin" } : { kind: "user", user };
  return { role, caller, user, csrfToken: csrfTokenOf(secret), expiresAt };
}
