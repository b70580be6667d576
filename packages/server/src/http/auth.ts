import { fail } from "@gpupool/core";
import type { FastifyRequest } from "fastify";
import { hashSecret, secretEquals, secretKind } from "../secrets.js";
import type { AppRecord, KeyedRecord, UserRecord } from "../storage/store.js";
import type { ServerContext } from "./context.js";

export type Caller =
  | { readonly kind: "admin" }
  | { readonly kind: "user"; readonly user: UserRecord }
  | { readonly kind: "app"; readonly app: AppRecord }
  | { readonly kind: "edge"; readonly edge: KeyedRecord }
  | { readonly kind: "node"; readonly node: KeyedRecord };

const WHAT: Record<Caller["kind"], string> = {
  admin: "the admin token ($GPUPOOL_ADMIN_TOKEN)",
  user: "a user token",
  app: "an app key",
  edge: "an edge key",
  node: "a node key",
};

function bearer(req: FastifyRequest): string | null {
  const h = req.headers.authorization;
  if (typeof h !== "string") return null;
  const m = /^Bearer\s+(\S{1,512})\s*$/i.exec(h);
  return m?.[1] ?? null;
}

/**
 * Who is calling, restricted to the kinds the route accepts. Unknown or missing credentials are
 * 401; a valid credential of the wrong kind is 403, saying which kinds the route takes.
 */
export async function authenticate(ctx: ServerContext, req: FastifyRequest, accepted: readonly Caller["kind"][]): Promise<Caller> {
  const wanted = accepted.map((k) => WHAT[k]).join(" or ");
  const secret = bearer(req);
  if (secret === null) fail("unauthorized", `Send Authorization: Bearer <${wanted}>.`);
  let caller: Caller | null = null;
  if (secretKind(secret) === null) {
    if (ctx.adminToken !== null && secretEquals(secret, ctx.adminToken)) caller = { kind: "admin" };
    else if (ctx.adminToken === null && accepted.length === 1 && accepted[0] === "admin") {
      fail("admin_disabled", "The admin API is disabled on this server: start it with GPUPOOL_ADMIN_TOKEN set.");
    }
  } else {
    caller = await keyedCaller(ctx, secret);
  }
  if (caller === null) fail("unauthorized", `The bearer token is not valid on this server (revoked, mistyped, or from another pool). Send ${wanted}.`);
  if (!accepted.includes(caller.kind)) fail("forbidden", `This endpoint takes ${wanted}, not ${WHAT[caller.kind]}.`);
  return caller;
}

/**
 * The node whose key is in `X-Gpupool-Node-Key` (an agent asking on behalf of an app running on
 * its host), or null when the header is absent. A key that is not a valid node key is a 401.
 */
export async function nodeFromHeader(ctx: ServerContext, req: FastifyRequest): Promise<KeyedRecord | null> {
  const v = req.headers["x-gpupool-node-key"];
  if (v === undefined) return null;
  const caller = typeof v === "string" && v.length <= 512 && secretKind(v) === "node" ? await keyedCaller(ctx, v) : null;
  if (caller?.kind !== "node") fail("unauthorized", "X-Gpupool-Node-Key is not a valid node key on this server (revoked, mistyped, or from another pool).");
  return caller.node;
}

/** The principal a generated key (user token, app/edge/node key) belongs to, cached a few seconds. */
async function keyedCaller(ctx: ServerContext, secret: string): Promise<Caller | null> {
  const kind = secretKind(secret);
  // Keyed by the secret itself, which is in this process's memory anyway while the request is:
  // hashing it on every request was a tenth of a lease request's CPU. Only hashes are stored.
  const cached = ctx.callers.get(secret, ctx.clock.now());
  if (cached !== null) return cached;
  const hash = hashSecret(secret);
  const caller = await ctx.store.transaction(async (tx): Promise<Caller | null> => {
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
  if (caller !== null) ctx.callers.set(secret, caller, ctx.clock.now());
  return caller;
}

/**
 * Recently verified keys of one server, by the presented secret (kept in memory only, never
 * written), so a busy app costs neither a database read nor a hash per request.
 * Entries live a few seconds: an admin change (a tier, a concurrency limit) is seen within that
 * time, and the admin routes clear the cache when a change must apply at once. Unknown keys are
 * never cached, so a key that was just created works at once.
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

/** The single X-IP-Token value, or undefined; several copies of the header are refused. */
export function ipTokenHeader(req: FastifyRequest): string | undefined | { duplicated: true } {
  const v = req.headers["x-ip-token"];
  if (Array.isArray(v)) return { duplicated: true };
  return v;
}
