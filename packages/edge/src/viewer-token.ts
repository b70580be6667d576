import type { IncomingHttpHeaders } from "node:http";
import type { ControlPlane, MintedToken, SessionUser } from "./control-plane.js";
import { ControlPlaneRefusal } from "./control-plane.js";

/** Who a proxied request is charged to, and the token that says so to the app. */
export interface ViewerToken {
  readonly token: MintedToken;
  /** `user:<id>` or `ip:<addr>`, as in the token's `sub`. */
  readonly subject: string;
  /** Why a presented X-IP-Token was not used (forged, expired, too large…), when one was dropped. */
  readonly dropped: string | null;
  /** A gpupool user token sent as Bearer: consumed here, never forwarded to the app. */
  readonly consumedBearer: boolean;
}

/**
 * Sizes the edge checks itself, so that no client input reaches the control plane in a form it
 * refuses as malformed (a refusal the edge would otherwise have to tell apart from an outage).
 * The control plane takes secrets of up to 512 characters and X-IP-Tokens of up to 8 KiB; a
 * token the pool signs is about 400.
 */
export const MAX_SECRET = 512;
export const MAX_IP_TOKEN = 8192;
const SESSION_SECRET = /^gps_[A-Za-z0-9_-]+$/;
const USER_TOKEN = /^gpu_u_[A-Za-z0-9_-]+$/;
const JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const BEARER_USER_TOKEN = /^Bearer\s+(gpu_u_\S*)\s*$/i;

/** A session cookie's value as the control plane could know it; anything else is no session. */
export function plausibleSession(value: string | null): string | null {
  return value !== null && value.length <= MAX_SECRET && SESSION_SECRET.test(value) ? value : null;
}

/** A user token typed into the sign-in form, as the control plane could know it. */
export function plausibleUserToken(value: string): boolean {
  return value.length <= MAX_SECRET && USER_TOKEN.test(value);
}

/**
 * `Authorization: Bearer gpu_u_…`: a gpupool user token, the viewer's secret — consumed, never
 * passed to the app, whether or not it is valid. `token` is null when it cannot be valid.
 */
export function bearerUserToken(headers: IncomingHttpHeaders): { token: string | null } | null {
  const m = BEARER_USER_TOKEN.exec(headers.authorization ?? "");
  if (!m) return null;
  const token = m[1] ?? "";
  return { token: plausibleUserToken(token) ? token : null };
}

/** What a request presents: an X-IP-Token (or several), a Bearer user token, a session secret. */
export interface Presented {
  readonly ipToken: string | string[] | undefined;
  readonly bearer: { token: string | null } | null;
  readonly session: string | null;
}

/** Why a presented X-IP-Token cannot be one the pool signed, without asking the pool. */
function locallyRefused(token: string): string | null {
  if (token.length > MAX_IP_TOKEN) return "too_large";
  if (!JWS.test(token)) return "malformed";
  return null;
}

/** The signed-in viewer: a Bearer user token first (API clients), else the session. */
async function viewerUser(p: Presented, cp: ControlPlane, now: number): Promise<SessionUser | null> {
  if (p.bearer !== null) return p.bearer.token === null ? null : cp.tokenUser(p.bearer.token, now);
  return p.session === null ? null : cp.sessionUser(p.session, now);
}

/**
 * The token an app gets for this request (docs/edge.md). A valid pool-signed X-IP-Token (an app calling another app, forwarding
 * what it received) is re-issued for the target app with the same subject, so the end user pays.
 * Any other presented token is dropped — never forwarded — and the request is charged as the
 * viewer: the signed-in user (Bearer user token or session), else the client address.
 */
export async function viewerToken(
  p: Presented,
  app: string,
  address: string,
  cp: ControlPlane,
  now: number,
): Promise<ViewerToken> {
  const presented = p.ipToken;
  const consumedBearer = p.bearer !== null;
  let dropped: string | null = null;
  if (typeof presented === "string" && presented !== "") {
    dropped = locallyRefused(presented);
    if (dropped === null) {
      try {
        const token = await cp.reissue(presented, app, now);
        // The token decides; a user token alongside it is still the viewer's secret, not the app's.
        return { token, subject: token.subject, dropped: null, consumedBearer };
      } catch (err) {
        if (!(err instanceof ControlPlaneRefusal) || err.problem.code !== "invalid_ip_token") throw err;
        dropped = typeof err.problem["reason"] === "string" ? err.problem["reason"] : "invalid";
      }
    }
  } else if (Array.isArray(presented)) dropped = "duplicated";
  const user = await viewerUser(p, cp, now);
  const subject = user === null ? `ip:${address}` : `user:${user.id}`;
  return { token: await cp.tokenFor(subject, app, now), subject, dropped, consumedBearer };
}
