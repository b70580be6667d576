import { createHash, randomBytes, randomFillSync, timingSafeEqual } from "node:crypto";

export type SecretKind = "user" | "app" | "node" | "edge";

const PREFIX: Record<SecretKind, string> = { user: "gpu_u_", app: "gpu_a_", node: "gpu_n_", edge: "gpu_e_" };

/** A new random bearer secret, e.g. `gpu_a_…` for an app key. Shown once; only its hash is kept. */
export function newSecret(kind: SecretKind): string {
  return PREFIX[kind] + randomBytes(24).toString("base64url");
}

const PREFIXES = Object.entries(PREFIX) as [SecretKind, string][];

export function secretKind(secret: string): SecretKind | null {
  for (const [kind, prefix] of PREFIXES) if (secret.startsWith(prefix)) return kind;
  return null;
}

/**
 * Stored form of a secret. The secrets are 192 random bits, so a fast hash is enough (no
 * password stretching needed) and lookups by hash leak nothing useful through timing.
 */
export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

/** Constant-time comparison of a presented secret with the expected one. */
export function secretEquals(presented: string, expected: string): boolean {
  const a = createHash("sha256").update(presented).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

/** Short random ids for records: `u_…`, `a_…` (12 bytes: 16 characters, the form of the contract's ID_PATTERNS). */
export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(12).toString("base64url")}`;
}

let lastMs = -1;
let lastTime = "";
let counter = 0;
/**
 * Time-ordered ids (`ls_` + 9 base36 chars of milliseconds + a counter + 48 random bits): new
 * ids land at the right edge of the unique index instead of a random page, so each insert
 * dirties fewer pages; the random part keeps them unguessable.
 */
export function newOrderedId(prefix: string, now: number): string {
  if (now === lastMs) counter++;
  else {
    lastMs = now;
    lastTime = Math.max(0, Math.floor(now)).toString(36).padStart(9, "0");
    counter = 0;
  }
  return `${prefix}_${lastTime}${counter.toString(36).padStart(3, "0")}${randomChars()}`;
}

// One 4 KiB getrandom call, encoded once, serves 683 ids: a syscall per id, and then a base64url
// encoding per id, showed up in profiles (a call paid from credits draws four ids). 6 random bytes
// are 8 base64url characters, so each aligned slice of the pool's text is one id's 48 bits.
const POOL = Buffer.alloc(683 * 6);
let poolText = "";
let poolAt = 0;
function randomChars(): string {
  if (poolAt + 8 > poolText.length) {
    randomFillSync(POOL);
    poolText = POOL.toString("base64url");
    poolAt = 0;
  }
  const out = poolText.slice(poolAt, poolAt + 8);
  poolAt += 8;
  return out;
}
