import { createHash } from "node:crypto";
import { IpToken, Quota, SessionOpened, SessionResolved, decodeWire } from "@gpupool/contract";
import type { SessionUser, WireSchema, WireType } from "@gpupool/contract";
import { problem } from "@gpupool/core";
import type { Problem } from "@gpupool/core";

export type { SessionUser } from "@gpupool/contract";

export interface MintedToken {
  readonly token: string;
  readonly expiresAt: number;
  readonly subject: string;
}

/** The control plane answered with a problem the edge should act on (bad credentials, bad token). */
export class ControlPlaneRefusal extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail);
    this.name = "ControlPlaneRefusal";
  }
}

/** The control plane could not be reached or failed: the edge must not forward unattributed. */
export class ControlPlaneDown extends Error {
  override readonly name = "ControlPlaneDown";
}

const hash = (s: string): string => createHash("sha256").update(s).digest("base64url");

/**
 * The edge's only link to the pool: HTTP with its edge key. Answers that are asked for on every
 * request (tokens, sessions, user tokens) are cached so a page load costs no round trip:
 * minted tokens until shortly before they expire, session and user-token lookups for a few
 * seconds (so a revocation from elsewhere is seen within that time; /logout on this edge drops
 * its own entry at once). Caches are keyed by hashes, never by the secrets themselves.
 */
export class ControlPlane {
  private readonly tokens = new Map<string, MintedToken>();
  private readonly viewers = new Map<string, { user: SessionUser | null; until: number }>();
  /** Refused re-issues, so a client repeating a forged token costs one round trip per few seconds. */
  private readonly refusals = new Map<string, { problem: Problem; until: number }>();

  constructor(
    private readonly baseUrl: string,
    private readonly edgeKey: string,
    /** A refusal the edge should not have provoked (its own checks let bad input through). */
    private readonly warn: (line: string) => void = () => undefined,
    private readonly lookupTtlMs = 5_000,
    private readonly max = 50_000,
  ) {}

  /** A token naming `subject` (`user:<id>` or `ip:<addr>`) for app `app`, from cache when fresh. */
  async tokenFor(subject: string, app: string, now: number): Promise<MintedToken> {
    const key = `${subject}\n${app}`;
    const hit = this.fresh(this.tokens.get(key), now);
    if (hit) return hit;
    const colon = subject.indexOf(":");
    const who =
      subject.slice(0, colon) === "user" ? { user: subject.slice(colon + 1) } : { ip: subject.slice(colon + 1) };
    const minted = await this.mintCall("/v1/ip-tokens", { app, ...who });
    this.remember(this.tokens, key, minted);
    return minted;
  }

  /** Re-issues a presented token for `app`; a refusal carries the reason (forged, expired…). */
  async reissue(token: string, app: string, now: number): Promise<MintedToken> {
    const key = `reissue\n${hash(token)}\n${app}`;
    const hit = this.fresh(this.tokens.get(key), now);
    if (hit) return hit;
    const refused = this.refusals.get(key);
    if (refused && refused.until > now) throw new ControlPlaneRefusal(refused.problem);
    let minted: MintedToken;
    try {
      minted = await this.mintCall("/v1/ip-tokens/reissue", { token, app });
    } catch (err) {
      if (err instanceof ControlPlaneRefusal && err.problem.code === "invalid_ip_token") {
        if (this.refusals.size >= this.max) this.refusals.clear();
        this.refusals.set(key, { problem: err.problem, until: now + this.lookupTtlMs });
      }
      throw err;
    }
    this.remember(this.tokens, key, minted);
    return minted;
  }

  async openSession(
    token: string,
    name: string | undefined,
  ): Promise<{ session: string; user: SessionUser; expiresAt: number }> {
    const body = await this.call("POST", "/v1/sessions", SessionOpened, {
      token,
      ...(name !== undefined ? { name } : {}),
    });
    return { session: body.session, user: body.user, expiresAt: Date.parse(body.expires_at) };
  }

  /** The session's user, or null when it is unknown, expired or revoked. */
  async sessionUser(session: string, now: number): Promise<SessionUser | null> {
    return this.lookup(`s\n${hash(session)}`, now, ["invalid_session", "invalid_request"], async () => {
      const body = await this.call("POST", "/v1/sessions/resolve", SessionResolved, { session });
      return body.user;
    });
  }

  /**
   * The owner of a user token (sent as a Bearer by API clients), or null when not valid. The call
   * is made with the user's token, not the edge key, so any refusal is about that token.
   */
  async tokenUser(userToken: string, now: number): Promise<SessionUser | null> {
    return this.lookup(`u\n${hash(userToken)}`, now, "any", async () => {
      const body = await this.call("GET", "/v1/quota", Quota, undefined, userToken);
      return body.identity.kind === "user"
        ? { id: body.identity.id, name: body.identity.id, tier: body.identity.tier }
        : null;
    });
  }

  async revokeSession(session: string): Promise<void> {
    this.viewers.delete(`s\n${hash(session)}`);
    await this.call("POST", "/v1/sessions/revoke", null, { session });
  }

  /**
   * `invalid`: the problem codes meaning "no such viewer" (`any`: every refusal); any other
   * refusal (a bad edge key) is thrown. `invalid_request` means the edge sent something its own
   * checks should have kept back: still no such viewer, and worth a warning.
   */
  private async lookup(
    key: string,
    now: number,
    invalid: readonly string[] | "any",
    fetchUser: () => Promise<SessionUser | null>,
  ): Promise<SessionUser | null> {
    const hit = this.viewers.get(key);
    if (hit && hit.until > now) return hit.user;
    let user: SessionUser | null;
    try {
      user = await fetchUser();
    } catch (err) {
      if (!(err instanceof ControlPlaneRefusal) || (invalid !== "any" && !invalid.includes(err.problem.code)))
        throw err;
      if (err.problem.code === "invalid_request")
        this.warn(`edge: the control plane refused a viewer lookup as malformed: ${err.problem.detail}`);
      user = null; // an invalid session or token: remembered too, so it cannot hammer the pool
    }
    if (this.viewers.size >= this.max) this.viewers.clear();
    this.viewers.set(key, { user, until: now + this.lookupTtlMs });
    return user;
  }

  /** Cached until a minute (or a quarter of its life) before expiry, so an app never gets a stale token. */
  private fresh(t: MintedToken | undefined, now: number): MintedToken | undefined {
    return t && t.expiresAt - now > 60_000 ? t : undefined;
  }

  private remember(map: Map<string, MintedToken>, key: string, t: MintedToken): void {
    if (map.size >= this.max) map.clear();
    map.set(key, t);
  }

  private async mintCall(path: string, body: Record<string, unknown>): Promise<MintedToken> {
    const r = await this.call("POST", path, IpToken, body);
    return { token: r.token, expiresAt: Date.parse(r.expires_at), subject: r.subject };
  }

  /** One call: the answer read as `schema` says (the wire format of @gpupool/contract); null: no answer wanted. */
  private async call<S extends WireSchema>(
    method: string,
    path: string,
    schema: S,
    body?: unknown,
    bearer?: string,
  ): Promise<WireType<S>>;
  private async call(method: string, path: string, schema: null, body?: unknown, bearer?: string): Promise<void>;
  private async call(
    method: string,
    path: string,
    schema: WireSchema | null,
    body?: unknown,
    bearer = this.edgeKey,
  ): Promise<unknown> {
    let res: Response;
    try {
      res = await fetch(new URL(path, this.baseUrl), {
        method,
        headers: {
          authorization: `Bearer ${bearer}`,
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(10_000),
      });
    } catch (err) {
      throw new ControlPlaneDown(
        `cannot reach the control plane at ${this.baseUrl}: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
    const text = await res.text();
    let json: unknown = null;
    try {
      json = text === "" ? null : JSON.parse(text);
    } catch {
      /* not JSON: handled below */
    }
    if (res.ok) {
      if (schema === null) return undefined;
      const decoded = decodeWire(schema, json);
      // An answer the edge cannot read is the pool's fault (another version?), not the viewer's.
      if (!decoded.ok)
        throw new ControlPlaneDown(
          `the control plane's answer to ${method} ${path} is not in the wire format: ${decoded.message}`,
        );
      return decoded.value;
    }
    const p = json as Partial<Problem> | null;
    // 4xx with a problem body is an answer about the input; anything else means the pool is unwell.
    if (res.status >= 400 && res.status < 500 && p && typeof p.code === "string" && typeof p.detail === "string") {
      throw new ControlPlaneRefusal({ ...(p as Problem) });
    }
    throw new ControlPlaneDown(`the control plane answered ${res.status} to ${method} ${path}`);
  }
}

/** What the viewer is told; the details (the pool's address, the error) go to the operator's log. */
export function controlPlaneProblem(): Problem {
  return problem(
    "control_plane_unavailable",
    "The edge cannot reach the GPU pool to identify you; nothing was forwarded. Try again shortly.",
  );
}
