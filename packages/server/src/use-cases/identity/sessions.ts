import { randomBytes } from "node:crypto";
import { fail } from "@gpupool/core";
import { hashSecret } from "../../secrets.js";
import type { Clock } from "../../clock.js";
import type { Store, UserRecord } from "../../storage/store.js";
import { audit } from "../admin/audit.js";
import type { AuditActor } from "../admin/audit.js";
import { findUser } from "../admin/directory.js";

/** How long a browser session lives. Long enough for a demo hub; revocable at any time. */
export const SESSION_TTL_MS = 30 * 24 * 3600 * 1000;

/**
 * Session secrets get their own prefix, which `secretKind` does not know: a session secret is
 * never a bearer credential for the API, only something the edge trades for a user.
 */
const SESSION_PREFIX = "gps_";

export interface OpenedSession {
  readonly session: string;
  readonly user: UserRecord;
  readonly expiresAt: number;
}

/** Viewers' edge sessions: kept here so they survive edge restarts and can be revoked centrally. */
export class Sessions {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
  ) {}

  /**
   * Trades a user token (and, from the login form, optionally the user's name, which must match)
   * for a new session. Only the session's hash is stored.
   */
  async open(input: { token: string; name?: string }): Promise<OpenedSession> {
    const now = this.clock.now();
    const secret = SESSION_PREFIX + randomBytes(32).toString("base64url");
    const expiresAt = now + SESSION_TTL_MS;
    const user = await this.store.transaction(async (tx) => {
      const found = await tx.users.findByTokenHash(hashSecret(input.token));
      // One message for "no such token" and "token of someone else": no hint which part was wrong.
      if (!found || (input.name !== undefined && input.name !== found.name)) {
        fail(
          "invalid_credentials",
          "That user token is not valid on this pool (or does not belong to that user name). Check it with your pool's operator.",
        );
      }
      await tx.sessions.insert({
        idHash: hashSecret(secret),
        userId: found.id,
        createdAt: now,
        expiresAt,
        revokedAt: null,
      });
      return found;
    });
    return { session: secret, user, expiresAt };
  }

  /** The user behind a live session; expired, revoked and unknown sessions are one error. */
  async resolve(secret: string): Promise<{ user: UserRecord; expiresAt: number }> {
    const now = this.clock.now();
    return this.store.transaction(async (tx) => {
      const s = secret.startsWith(SESSION_PREFIX) ? await tx.sessions.get(hashSecret(secret)) : null;
      if (!s || s.revokedAt !== null || s.expiresAt <= now)
        fail("invalid_session", "The session has expired or was signed out; sign in again at /login.");
      const user = await tx.users.get(s.userId);
      if (!user) fail("invalid_session", "The session's user no longer exists; sign in again at /login.");
      return { user, expiresAt: s.expiresAt };
    });
  }

  /** Revokes the session named by its secret; unknown sessions are not an error (sign-out is idempotent). */
  async revoke(secret: string): Promise<boolean> {
    const now = this.clock.now();
    return this.store.transaction((tx) => tx.sessions.revoke(hashSecret(secret), now));
  }

  /** Revokes all of a user's sessions (by id or name); an unknown user is a 404. */
  async revokeForUser(ref: string, actor: AuditActor = "admin_token"): Promise<{ user: UserRecord; revoked: number }> {
    const now = this.clock.now();
    return this.store.transaction(async (tx) => {
      const user = await findUser(tx, ref);
      if (!user) fail("not_found", `No user "${ref}".`);
      const revoked = await tx.sessions.revokeForUser(user.id, now);
      await audit(tx, { action: "sessions.revoke", target: user.id, actor, detail: { revoked } }, now);
      return { user, revoked };
    });
  }
}
