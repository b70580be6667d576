import * as z from "zod/mini";

// zod/mini rather than zod: the SDK bundles these decoders, and mini's functions tree-shake where
// the classic API's methods cannot. For the kinds of schema used here, minified: zod/mini 28 KB
// (8 KB gzip), zod 93 KB (25 KB gzip). The SDK's whole bundle went from 23 KB (8 KB gzip) to
// 77 KB (24 KB gzip) with the contract in it; about 12 KB of that is the fields' descriptions.

/** `schema` with a description (it reaches the OpenAPI document, the API reference and docs/wire.md). */
export function describe<T extends z.ZodMiniType>(schema: T, description: string): T {
  return schema.check(z.describe(description));
}

const PATTERN_WORDS = new Map<string, string>();

/**
 * A pattern check that also says in words what it accepts: a 400 then tells a person "limit must
 * be a whole number from 1 to 500" rather than quoting a regular expression, and the docs say the same.
 */
export function matching(pattern: RegExp, words: string): ReturnType<typeof z.regex> {
  PATTERN_WORDS.set(pattern.source, words);
  return z.regex(pattern);
}

/** What a pattern of the wire accepts, in words (to follow "must be"), or undefined for one that has none. */
export function patternWords(source: string): string | undefined {
  return PATTERN_WORDS.get(source);
}

/** An instant: ISO 8601 in UTC, as `Date.prototype.toISOString` writes it. */
export const Time = z.iso.datetime();

/** A time, or null while it has not happened. */
export const TimeOrNull = z.nullable(Time);

/** An amount of GPU time in seconds; may be fractional (milliseconds). */
export const Seconds = z.number();

export const Count = z.int().check(z.nonnegative());

export const IDENTITY_KINDS = ["user", "ip", "app"] as const;
export const IdentityKind = z.enum(IDENTITY_KINDS);
export type IdentityKind = z.infer<typeof IdentityKind>;

/** Who pays for a lease. */
export const Identity = z.object({
  kind: describe(
    IdentityKind,
    "`user` (signed in), `ip` (an unauthenticated viewer: IPv4 /32, IPv6 /64 prefix) or `app` (the app called with no end user).",
  ),
  id: describe(z.string(), "User id, IP address (or `…::/64` prefix) or app id."),
  tier: describe(
    z.string(),
    "Account tier: `anonymous` (ip and app identities), `free`, `pro`, `team`, `enterprise`, or one the operator configured.",
  ),
});
export type Identity = z.infer<typeof Identity>;

/** The `"<kind>:<id>"` form of an identity, used in problems and the pool view. */
export const IdentityKey = describe(z.string(), "`<kind>:<id>`, e.g. `user:u_abc`, `ip:203.0.113.7`, `app:a_xyz`.");

export const LEASE_STATUSES = ["queued", "active", "released", "expired", "cancelled", "failed"] as const;
export const LeaseStatus = z.enum(LEASE_STATUSES);
export type LeaseStatus = z.infer<typeof LeaseStatus>;

export const QUEUE_REASONS = ["node", "concurrency"] as const;
/** Why a queued lease waits: no slot fits on any node, or the app is at its concurrency limit. */
export const QueueReason = z.enum(QUEUE_REASONS);
export type QueueReason = z.infer<typeof QueueReason>;

/** A GPU slice size; `large` (half a GPU) and `xlarge` (a whole one) unless the operator configured others. */
export const Size = describe(
  z.string(),
  "GPU slice size: `large` = half a GPU (1 slot, cost ×1), `xlarge` = a whole GPU (2 slots, cost ×2), or a size the operator configured.",
);

/**
 * The ids of the records the admin API names, as the server makes them: a kind's letter, `_`, and
 * 16 base64url characters. A reference of this form is looked up as an id only, never as a name.
 */
export const ID_PATTERNS = {
  user: /^u_[A-Za-z0-9_-]{16}$/,
  app: /^a_[A-Za-z0-9_-]{16}$/,
  node: /^n_[A-Za-z0-9_-]{16}$/,
  edge: /^e_[A-Za-z0-9_-]{16}$/,
} as const;
export type RecordKind = keyof typeof ID_PATTERNS;

/** Whether `ref` has the form of a `kind`'s id (and so names no record by its name). */
export function isIdOf(kind: RecordKind, ref: string): boolean {
  return ID_PATTERNS[kind].test(ref);
}

/** Whether `ref` has the form of any record's id: no name may, or "id or name" would be ambiguous. */
export function isIdShaped(ref: string): boolean {
  return Object.values(ID_PATTERNS).some((pattern) => pattern.test(ref));
}

/**
 * A display name of a user, app, node or edge as the admin API accepts it. Never of an id's form:
 * a user named `u_…` like another user's id would otherwise be found (and edited, or given that
 * user's tokens) when someone meant the other.
 */
export const Name = z
  .string()
  .check(
    z.minLength(1),
    z.maxLength(64),
    matching(
      /^(?![uane]_[A-Za-z0-9_-]{16}$)[A-Za-z0-9][A-Za-z0-9._-]*$/,
      "letters, digits, `.`, `_` and `-`, starting with a letter or digit, and not of an id's form (`u_`, `a_`, `n_` or `e_` then 16 characters)",
    ),
  );
