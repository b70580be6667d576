import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * What an app's own host holds about its viewer: the viewer's session secret (or null: not
 * signed in, checked at the sign-in host), sealed so that neither the app nor anyone else can
 * read it or make one up. `state` ties a sign-in ticket to the browser that asked for it.
 */
export interface Sealed {
  readonly session: string | null;
  readonly state?: string;
  /** Milliseconds since the epoch; after it the value is worthless. */
  readonly expiresAt: number;
}

/** `ticket`: carried in a redirect from the sign-in host to an app host; `app`: the app host's cookie. */
export type SealedKind = "ticket" | "app";

const MAX_SEALED = 1024;

/**
 * AES-256-GCM under a key derived from the edge key (HKDF-SHA256), so edges sharing an edge key
 * read each other's tickets and cookies, and nothing else can. The kind and the host are bound
 * as associated data: a ticket is not a cookie, and what one app's host holds is worthless on
 * another's.
 */
export class Sealer {
  private readonly key: Buffer;

  constructor(edgeKey: string) {
    this.key = Buffer.from(hkdfSync("sha256", edgeKey, "gpupool-edge", "app-host sign-in v1", 32));
  }

  seal(kind: SealedKind, host: string, value: Sealed): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.key, iv);
    cipher.setAAD(Buffer.from(`${kind}\n${host}`));
    const body = Buffer.concat([
      cipher.update(JSON.stringify({ s: value.session, t: value.state, e: value.expiresAt })),
      cipher.final(),
    ]);
    return Buffer.concat([iv, body, cipher.getAuthTag()]).toString("base64url");
  }

  /** The sealed value, or null when it is not one of ours for this kind and host, or has expired. Never throws. */
  open(kind: SealedKind, host: string, sealed: string, now: number): Sealed | null {
    if (sealed.length > MAX_SEALED || !/^[A-Za-z0-9_-]+$/.test(sealed)) return null;
    const raw = Buffer.from(sealed, "base64url");
    if (raw.length < 12 + 16 + 2) return null;
    try {
      const decipher = createDecipheriv("aes-256-gcm", this.key, raw.subarray(0, 12));
      decipher.setAAD(Buffer.from(`${kind}\n${host}`));
      decipher.setAuthTag(raw.subarray(raw.length - 16));
      const text = Buffer.concat([decipher.update(raw.subarray(12, raw.length - 16)), decipher.final()]).toString(
        "utf8",
      );
      const v = JSON.parse(text) as { s?: unknown; t?: unknown; e?: unknown };
      if (typeof v.e !== "number" || v.e <= now) return null;
      if (v.s !== null && typeof v.s !== "string") return null;
      return { session: v.s, expiresAt: v.e, ...(typeof v.t === "string" ? { state: v.t } : {}) };
    } catch {
      return null; // forged, truncated, or sealed under another key
    }
  }
}

/**
 * The sign-out form's CSRF token: a hash of the session secret, under a label of its own (so it
 * is not the hash the control plane stores). Only a page that knows the session can show it, and
 * it says nothing about the secret; edges need no shared state to check it.
 */
export function signOutToken(session: string): string {
  return createHash("sha256").update(`gpupool-edge sign-out\n${session}`).digest("base64url");
}

/** Constant-time equality of two secrets of any length. */
export function sameSecret(presented: string, expected: string): boolean {
  const a = createHash("sha256").update(presented).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

export function randomState(): string {
  return randomBytes(18).toString("base64url");
}
