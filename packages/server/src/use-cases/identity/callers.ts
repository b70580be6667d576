import { fail } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import { hashSecret, secretEquals, secretKind } from "../../secrets.js";
import type { AppRecord, KeyedRecord, Store, UserRecord } from "../../storage/store.js";

export type Caller =
  | { readonly kind: "admin" }
  | { readonly kind: "user"; readonly user: UserRecord }
  | { readonly kind: "app"; readonly app: AppRecord }
  | { readonly kind: "edge"; readonly edge: KeyedRecord }
  | { readonly kind: "node"; readonly node: KeyedRecord };

export type CallerKind = Caller["kind"];

const WHAT: Record<CallerKind, string> = {
  admin: "the admin token ($GPUPOOL_ADMIN_TOKEN)",
  user: "a user token",
  app: "an app key",
  edge: "an edge key",
  node: "a node key",
};

/**
 * Who is calling: the principal a bearer secret belongs to. Generated keys (user tokens,
 * app/edge/node keys) are looked up by hash and cached a few seconds; the admin token is
 * compared in constant time.
 */
export class Callers {
  constructor(
    private readonly store: Store,
    /** Null disables the admin API. */
    private readonly adminToken: string | null,
    private readonly clock: Clock,
    private readonly cache = new CallerCache(),
  ) {}

  /**
   * The caller behind `secret`, restricted to the kinds the route accepts. A missing or unknown
   * credential is 401; a valid one of the wrong kind is 403, saying which kinds the route takes.
   */
  async authenticate(secret: string | null, accepted: readonly CallerKind[]): Promise<Caller> {
    const wanted = accepted.map((k) => WHAT[k]).join(" or ");
    if (secret === null) fail("unauthorized", `Send Authorization: Bearer <${wanted}>.`);
    let caller: Caller | null = null;
    if (secretKind(secret) === null) {
      if (this.adminToken !== null && secretEquals(secret, this.adminToken)) caller = { kind: "admin" };
      else if (this.adminToken === null && accepted.length === 1 && accepted[0] === "admin") {
        fail("admin_disabled", "The admin API is disabled on this server: start it with GPUPOOL_ADMIN_TOKEN set.");
      }
    } else {
      caller = await this.keyed(secret);
    }
    if (caller === null)
      fail(
        "unauthorized",
        `The bearer token is not valid on this server (revoked, mistyped, or from another pool). Send ${wanted}.`,
      );
    if (!accepted.includes(caller.kind)) fail("forbidden", `This endpoint takes ${wanted}, not ${WHAT[caller.kind]}.`);
    return caller;
  }

  /** The node whose key an agent sent on behalf of an app on its host (null: none sent); any other value is a 401. */
  async nodeByKey(key: string | null): Promise<KeyedRecord | null> {
    if (key === null) return null;
    const caller = key.length <= 512 && secretKind(key) === "node" ? await this.keyed(key) : null;
    if (caller?.kind !== "node")
      fail(
        "unauthorized",
        "X-Gpupool-Node-Key is not a valid node key on this server (revoked, mistyped, or from another pool).",
      );
    return caller.node;
  }

  /** An admin change (a tier, a concurrency limit) must apply to cached callers at once. */
  forgetCached(): void {
    this.cache.clear();
  }

  /** The principal a generated key belongs to, cached a few seconds. */
  private async keyed(secret: string): Promise<Caller | null> {
    const kind = secretKind(secret);
    // Keyed by the secret itself, which is in this process's memory anyway while the request is:
    // hashing it on every request was a tenth of a lease request's CPU. Only hashes are stored.
    const cached = this.cache.get(secret, this.clock.now());
    if (cached !== null) return cached;
    const hash = hashSecret(secret);
    const caller = await this.store.transaction(async (tx): Promise<Caller | null> => {
      switch (kind) {
        case "user": {
          const user = await tx.users.findByTokenHash(hash);
          return user ? { kind, user } : null;
        }
        case "app": {
          const app = await tx.apps.findByKeyHash(hash);
          return app ? { kind, app } : null;
        }
        case "edge": {
          const edge = await tx.edges.findByKeyHash(hash);
          return edge ? { kind, edge } : null;
        }
        case "node": {
          const node = await tx.nodes.findByKeyHash(hash);
          return node ? { kind, node } : null;
        }
        case null:
          return null;
      }
    });
    if (caller !== null) this.cache.set(secret, caller, this.clock.now());
    return caller;
  }
}

/**
 * Recently verified keys of one server, by the presented secret (kept in memory only, never
 * written), so a busy app costs neither a database read nor a hash per request. Entries live a
 * few seconds: an admin change is seen within that time, and the admin use cases clear the cache
 * when a change must apply at once. Unknown keys are never cached, so a new key works at once.
 */
export class CallerCache {
  private readonly entries = new Map<string, { caller: Caller; until: number }>();

  constructor(
    private readonly ttlMs = 5_000,
    private readonly max = 10_000,
  ) {}

  get(secret: string, now: number): Caller | null {
    const hit = this.entries.get(secret);
    if (!hit) return null;
    if (hit.until <= now) {
      this.entries.delete(secret);
      return null;
    }
    return hit.caller;
  }

  set(secret: string, caller: Caller, now: number): void {
    if (this.entries.size >= this.max) this.entries.clear();
    this.entries.set(secret, { caller, until: now + this.ttlMs });
  }

  clear(): void {
    this.entries.clear();
  }
}
