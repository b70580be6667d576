import { randomBytes } from "node:crypto";
import { parseSubject } from "@gpupool/core";
import type { InvalidTokenReason, IpTokenCheck } from "@gpupool/core";
import { SignJWT, errors, exportJWK, generateKeyPair, importJWK, jwtVerify } from "jose";
import type { CryptoKey, JWK } from "jose";
import type { SigningKeyRecord, Store } from "../storage/store.js";

const ALG = "EdDSA";
/** A header larger than this is not a token we issued; refuse before parsing. */
const MAX_TOKEN_LENGTH = 4096;
/**
 * How far the clocks of the replicas that mint and verify a token may disagree: a token may be
 * issued this much in the future, and live this much longer than `identity.ip_token_ttl`.
 */
export const CLOCK_SKEW_S = 30;

interface KeyPair {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  readonly publicJwk: JWK;
}

/** At most one re-read of the keys per this many ms, however many tokens name an unknown kid. */
const RELOAD_EVERY_MS = 2_000;

async function keyPair(r: SigningKeyRecord): Promise<KeyPair> {
  const publicJwk = JSON.parse(r.publicJwk) as JWK;
  return {
    kid: r.kid,
    privateKey: (await importJWK(JSON.parse(r.privateJwk) as JWK, ALG)) as CryptoKey,
    publicKey: (await importJWK(publicJwk, ALG)) as CryptoKey,
    publicJwk,
  };
}

/**
 * Signs and verifies X-IP-Tokens. The EdDSA key is generated on first start and kept in the
 * store, so tokens survive restarts; keys are looked up by `kid` so a rotation can add keys
 * while old tokens still verify. Verification pins the algorithm: `alg: none` or HS256 with the
 * public key as secret are refused, whatever the header says.
 *
 * Replicas sharing a database share the keys: the first key is made under the signing keys' lock
 * (replicas starting together on an empty database make one between them), and a token naming a
 * kid this replica does not know makes it re-read the keys (at most every RELOAD_EVERY_MS) before
 * it is refused, so a key another replica added is served and accepted here too.
 */
export class IpTokens {
  private reloading: Promise<void> | null = null;
  private reloadedAt = 0;

  private constructor(
    private readonly store: Store,
    private readonly keys: Map<string, KeyPair>,
    private readonly current: KeyPair,
    private readonly issuer: string,
    private readonly ttlMs: number,
  ) {}

  static async open(store: Store, issuer: string, ttlMs: number, now: number): Promise<IpTokens> {
    const records = await store.transaction(async (tx) => {
      await tx.signingKeys.lock();
      const existing = await tx.signingKeys.list();
      if (existing.length > 0) return existing;
      const { privateKey, publicKey } = await generateKeyPair(ALG, { extractable: true });
      const kid = randomBytes(9).toString("base64url");
      const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: ALG, use: "sig" };
      const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: ALG };
      const record = {
        kid,
        privateJwk: JSON.stringify(privateJwk),
        publicJwk: JSON.stringify(publicJwk),
        createdAt: now,
      };
      await tx.signingKeys.insert(record);
      return [record];
    });
    const keys = new Map<string, KeyPair>();
    let current: KeyPair | null = null;
    for (const r of records) {
      const pair = await keyPair(r);
      keys.set(r.kid, pair);
      current = pair; // newest last
    }
    if (!current) throw new Error("no signing key");
    return new IpTokens(store, keys, current, issuer, ttlMs);
  }

  /** Re-reads the keys from the store (shared by concurrent callers; at most every RELOAD_EVERY_MS). Never throws. */
  private reload(): Promise<void> {
    if (this.reloading !== null) return this.reloading;
    if (Date.now() - this.reloadedAt < RELOAD_EVERY_MS) return Promise.resolve();
    this.reloadedAt = Date.now();
    this.reloading = (async () => {
      try {
        const records = await this.store.transaction((tx) => tx.signingKeys.list());
        for (const r of records) if (!this.keys.has(r.kid)) this.keys.set(r.kid, await keyPair(r));
      } catch {
        // The store is away: the token is refused as unknown, as it would have been.
      } finally {
        this.reloading = null;
      }
    })();
    return this.reloading;
  }

  jwks(): { keys: JWK[] } {
    return { keys: [...this.keys.values()].map((k) => k.publicJwk) };
  }

  /** A token naming `subject` (`user:<id>` or `ip:<addr>`) for app `appId`. */
  async mint(subject: string, appId: string, now: number): Promise<{ token: string; expiresAt: number }> {
    const iat = Math.floor(now / 1000);
    const exp = Math.floor((now + this.ttlMs) / 1000);
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: ALG, kid: this.current.kid, typ: "JWT" })
      .setIssuer(this.issuer)
      .setSubject(subject)
      .setAudience(appId)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(randomBytes(9).toString("base64url"))
      .sign(this.current.privateKey);
    return { token, expiresAt: exp * 1000 };
  }

  /** Checks a presented token for app `appId` at time `now`. Never throws for bad input. */
  async verify(token: string | undefined, appId: string, now: number): Promise<IpTokenCheck> {
    return this.check(token, appId, now);
  }

  /**
   * Checks a token minted for any app of this pool (the edge re-issues an app's token for the app
   * it calls). Everything but the audience is checked as in `verify`: signature, pinned EdDSA,
   * known kid, issuer, issue time and lifetime, expiry, subject. The audience only says which app received it.
   */
  async verifyAnyApp(token: string, now: number): Promise<IpTokenCheck> {
    return this.check(token, null, now);
  }

  private async check(token: string | undefined, appId: string | null, now: number): Promise<IpTokenCheck> {
    if (token === undefined) return { present: false };
    const bad = (reason: InvalidTokenReason, message: string): IpTokenCheck => ({
      present: true,
      valid: false,
      reason,
      message,
    });
    if (token.length === 0 || token.length > MAX_TOKEN_LENGTH)
      return bad("malformed", "The X-IP-Token header is empty or too long to be a token.");
    try {
      const { payload } = await jwtVerify(
        token,
        async (header) => {
          const kid = header.kid;
          if (kid === undefined) throw new UnknownKid();
          if (!this.keys.has(kid)) await this.reload();
          const key = this.keys.get(kid);
          if (!key) throw new UnknownKid();
          return key.publicKey;
        },
        {
          algorithms: [ALG],
          issuer: this.issuer,
          ...(appId === null ? {} : { audience: appId }),
          currentDate: new Date(now),
          requiredClaims: ["exp", "iat", "sub", "aud"],
        },
      );
      // Signed by this pool, but not as this pool signs: not in the future, and no longer-lived
      // than the configured ttl (a leaked signing key, or a bug, must not yield a token for years).
      const nowS = Math.floor(now / 1000);
      const iat = payload.iat ?? 0;
      const exp = payload.exp ?? 0;
      if (iat > nowS + CLOCK_SKEW_S)
        return bad(
          "malformed",
          `The X-IP-Token was issued in the future (${iat - nowS} s ahead of this pool's clock, more than the ${CLOCK_SKEW_S} s of clock skew allowed).`,
        );
      if (exp - iat > Math.ceil(this.ttlMs / 1000) + CLOCK_SKEW_S)
        return bad(
          "malformed",
          `The X-IP-Token claims to live ${exp - iat} s, longer than this pool's tokens ever do (identity.ip_token_ttl, ${Math.ceil(this.ttlMs / 1000)} s).`,
        );
      const subject = parseSubject(payload.sub);
      if (!subject)
        return bad(
          "bad_subject",
          `The X-IP-Token names "${String(payload.sub)}", which is not a user or an IP address.`,
        );
      return { present: true, valid: true, subject, expiresAt: exp * 1000 };
    } catch (err) {
      if (err instanceof UnknownKid)
        return bad(
          "unknown_key",
          "The X-IP-Token was signed with a key this pool does not know (kid unknown): it was not issued by this pool.",
        );
      if (err instanceof errors.JWTExpired)
        return bad(
          "expired",
          "The X-IP-Token has expired; the edge issues a fresh one with every request, so reload the page or mint a new one.",
        );
      if (err instanceof errors.JOSEAlgNotAllowed)
        return bad(
          "alg_not_allowed",
          `The X-IP-Token uses a signing algorithm other than ${ALG}; only ${ALG} tokens from this pool are accepted.`,
        );
      if (err instanceof errors.JWSSignatureVerificationFailed)
        return bad("bad_signature", "The X-IP-Token's signature does not verify: it was altered or forged.");
      if (err instanceof errors.JWTClaimValidationFailed) {
        if (err.claim === "aud")
          return bad(
            "wrong_app",
            "The X-IP-Token was issued for another app; a token is only valid for the app it was minted for.",
          );
        if (err.claim === "iss")
          return bad("wrong_issuer", "The X-IP-Token was issued by someone other than this pool.");
        if (err.claim === "nbf" && err.reason === "check_failed")
          return bad("malformed", "The X-IP-Token is not valid yet (its nbf is in the future).");
        return bad("malformed", `The X-IP-Token is missing or has an invalid "${err.claim}" claim.`);
      }
      return bad("malformed", "The X-IP-Token is not a well-formed signed token.");
    }
  }
}

class UnknownKid extends Error {}
