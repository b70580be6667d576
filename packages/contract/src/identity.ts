import * as z from "zod/mini";
import { Time, describe } from "./common.js";

const Ref = z.string().check(z.minLength(1), z.maxLength(64));
const Secret = z.string().check(z.minLength(1), z.maxLength(512));

/** `POST /v1/ip-tokens`: name exactly one of `user` and `ip`. */
export const IpTokenRequest = z.strictObject({
  app: describe(Ref, "The app (id or name; `a_` then 16 characters is an id only) the token is for: its `aud`."),
  user: describe(z.optional(Ref), "A signed-in viewer: user id or name (`u_` then 16 characters is an id only)."),
  ip: describe(z.optional(Ref), "An anonymous viewer's address (IPv6 is reduced to its /64)."),
});
export type IpTokenRequest = z.infer<typeof IpTokenRequest>;

export const IpToken = z.object({
  token: describe(
    z.string(),
    "The X-IP-Token: an EdDSA JWT (`kid` in its header) naming `sub`, `aud` (the app) and a short `exp`.",
  ),
  expires_at: Time,
  subject: describe(z.string(), "`user:<id>` or `ip:<address>`."),
  app: describe(z.string(), "The app's id (the token's audience)."),
});
export type IpToken = z.infer<typeof IpToken>;

/** `POST /v1/ip-tokens/reissue`: the same subject, for another app (app-to-app calls). */
export const IpTokenReissueRequest = z.strictObject({
  token: describe(z.string().check(z.maxLength(8192)), "A token of this pool, for any app, unexpired."),
  app: describe(Ref, "The app (id or name) called."),
});
export type IpTokenReissueRequest = z.infer<typeof IpTokenReissueRequest>;

export const Jwk = z.object({
  kty: z.literal("OKP"),
  crv: z.literal("Ed25519"),
  x: z.string(),
  kid: z.string(),
  alg: z.literal("EdDSA"),
  use: z.literal("sig"),
});
export type Jwk = z.infer<typeof Jwk>;

export const Jwks = z.object({
  keys: describe(z.array(Jwk), "The keys that verify X-IP-Tokens, current first; rotation by `kid`."),
});
export type Jwks = z.infer<typeof Jwks>;

export const SessionUser = z.object({ id: z.string(), name: z.string(), tier: z.string() });
export type SessionUser = z.infer<typeof SessionUser>;

export const SessionOpenRequest = z.strictObject({
  token: describe(Secret, "The user's access token, as typed at the edge's sign-in."),
  name: describe(z.optional(Ref), "The user name it must belong to, if given."),
});
export type SessionOpenRequest = z.infer<typeof SessionOpenRequest>;

export const SessionOpened = z.object({
  session: describe(z.string(), "The session secret (the edge keeps it in an HttpOnly cookie)."),
  user: SessionUser,
  expires_at: Time,
});
export type SessionOpened = z.infer<typeof SessionOpened>;

/** `POST /v1/sessions/resolve` and `/revoke`: the secret goes in the body, not the path (paths end up in logs). */
export const SessionRequest = z.strictObject({ session: Secret });
export type SessionRequest = z.infer<typeof SessionRequest>;

export const SessionResolved = z.object({ user: SessionUser, expires_at: Time });
export type SessionResolved = z.infer<typeof SessionResolved>;

export const SessionRevoked = z.object({
  revoked: describe(z.boolean(), "False when the session was unknown or already revoked."),
});
export type SessionRevoked = z.infer<typeof SessionRevoked>;
