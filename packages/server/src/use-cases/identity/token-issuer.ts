import { fail, identityKey, normalizeIp, problem } from "@gpupool/core";
import { DomainError } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import type { IpTokens } from "../../identity/ip-tokens.js";
import type { Store } from "../../storage/store.js";
import { findApp, findUser } from "../admin/directory.js";

export interface MintedToken {
  readonly token: string;
  readonly expiresAt: number;
  readonly subject: string;
  readonly app: string;
}

/**
 * X-IP-Tokens as the edge (or an operator) gets them: minted for a viewer — a user or an IP
 * address — of one app, or re-issued for the app an app calls, with the same subject, so the end
 * user and not the calling app is charged.
 */
export class TokenIssuer {
  constructor(
    private readonly store: Store,
    private readonly ipTokens: IpTokens,
    private readonly clock: Clock,
  ) {}

  /** The public keys tokens are verified with (rotation by `kid`). */
  jwks(): ReturnType<IpTokens["jwks"]> {
    return this.ipTokens.jwks();
  }

  async mint(input: { app: string; user?: string | undefined; ip?: string | undefined }): Promise<MintedToken> {
    if ((input.user === undefined) === (input.ip === undefined)) {
      fail("invalid_request", "Name exactly one viewer: user (a user id or name) or ip (an address).", {
        errors: [
          { field: input.user === undefined ? "user" : "ip", message: "exactly one of user and ip is required" },
        ],
      });
    }
    const { app, subject } = await this.store.transaction(async (tx) => {
      const target = await findApp(tx, input.app);
      if (!target)
        fail("invalid_request", `No app "${input.app}".`, {
          errors: [{ field: "app", message: "is not a known app" }],
        });
      if (input.user !== undefined) {
        const user = await findUser(tx, input.user);
        if (!user)
          fail("invalid_request", `No user "${input.user}".`, {
            errors: [{ field: "user", message: "is not a known user" }],
          });
        return { app: target.id, subject: `user:${user.id}` };
      }
      const ip = normalizeIp(input.ip ?? "");
      if (ip === null)
        fail("invalid_request", `"${input.ip ?? ""}" is not an IP address.`, {
          errors: [{ field: "ip", message: "is not an IPv4 or IPv6 address" }],
        });
      return { app: target.id, subject: `ip:${ip}` };
    });
    const minted = await this.ipTokens.mint(subject, app, this.clock.now());
    return { token: minted.token, expiresAt: minted.expiresAt, subject, app };
  }

  /**
   * App-to-app calls: the edge presents the X-IP-Token the calling app forwarded; if the pool
   * signed it and it has not expired, the same subject gets a token for the target app.
   */
  async reissue(input: { token: string; app: string }): Promise<MintedToken> {
    const now = this.clock.now();
    // Verifying reads no storage: done first, so the one transaction below decides everything.
    const check = await this.ipTokens.verifyAnyApp(input.token, now);
    if (!check.present) throw new Error("unreachable: a token was given");
    const { target, named } = await this.store.transaction(async (tx) => {
      const app = await findApp(tx, input.app);
      if (!app)
        fail("invalid_request", `No app "${input.app}".`, {
          errors: [{ field: "app", message: "is not a known app" }],
        });
      if (!check.valid)
        throw new DomainError(
          problem("invalid_ip_token", `${check.message} It was not re-issued.`, { reason: check.reason }),
        );
      // A token naming a user who does not exist (deleted since, or never) names nobody to charge.
      if (check.subject.kind === "user" && !(await tx.users.get(check.subject.id)))
        fail(
          "invalid_ip_token",
          `The X-IP-Token names user:${check.subject.id}, who does not exist on this pool (deleted?). It was not re-issued; sign in again.`,
          { reason: "unknown_user" },
        );
      return { target: app, named: check.subject };
    });
    const subject = identityKey(named);
    const minted = await this.ipTokens.mint(subject, target.id, now);
    return { token: minted.token, expiresAt: minted.expiresAt, subject, app: target.id };
  }
}
