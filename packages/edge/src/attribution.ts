import type { IncomingMessage } from "node:http";
import type { ControlPlane, MintedToken, SessionUser } from "./control-plane.js";
import { ControlPlaneRefusal } from "./control-plane.js";
import { SESSION_COOKIE, parseCookies } from "./cookies.js";

/** Who a proxied request is charged to, and the token that says so to the app. */
export interface ViewerAttribution {
  readonly token: MintedToken;
  /** `user:<id>` or `ip:<addr>`, as in the token's `sub`. */
  readonly subject: string;
  /** Why a presented X-IP-Token was not used (forged, expired…), when one was dropped. */
  readonly dropped: string | null;
  /** A gpupool user token sent as Bearer: consumed here, never forwarded to the app. */
  readonly consumedBearer: boolean;
}

const USER_TOKEN = /^Bearer\s+(gpu_u_\S{1,500})\s*$/i;

/** The signed-in viewer: a Bearer user token first (API clients), else the session cookie. */
async function viewerUser(req: IncomingMessage, cp: ControlPlane, now: number): Promise<{ user: SessionUser | null; consumedBearer: boolean }> {
  const bearer = USER_TOKEN.exec(req.headers.authorization ?? "")?.[1];
  if (bearer !== undefined) return { user: await cp.tokenUser(bearer, now), consumedBearer: true };
  const session = parseCookies(req.headers.cookie).get(SESSION_COOKIE);
  if (session === undefined || session === "") return { user: null, consumedBearer: false };
  return { user: await cp.sessionUser(session, now), consumedBearer: false };
}

/**
 * SPEC §5 at the edge. A valid pool-signed X-IP-Token (an app calling another app, forwarding
 * what it received) is re-issued for the target app with the same subject, so the end user pays.
 * Any other presented token is dropped — never forwarded — and the request is charged as the
 * viewer: the signed-in user (Bearer user token or session cookie), else the client address.
 */
export async function attribute(req: IncomingMessage, app: string, address: string, cp: ControlPlane, now: number): Promise<ViewerAttribution> {
  const presented = req.headers["x-ip-token"];
  let dropped: string | null = null;
  if (typeof presented === "string" && presented !== "") {
    try {
      const token = await cp.reissue(presented, app, now);
      // The token decides; a user token alongside it is still the viewer's secret, not the app's.
      return { token, subject: token.subject, dropped: null, consumedBearer: USER_TOKEN.test(req.headers.authorization ?? "") };
    } catch (err) {
      if (!(err instanceof ControlPlaneRefusal) || err.problem.code !== "invalid_ip_token") throw err;
      dropped = typeof err.problem["reason"] === "string" ? err.problem["reason"] : "invalid";
    }
  } else if (Array.isArray(presented)) dropped = "duplicated";
  const { user, consumedBearer } = await viewerUser(req, cp, now);
  const subject = user === null ? `ip:${address}` : `user:${user.id}`;
  return { token: await cp.tokenFor(subject, app, now), subject, dropped, consumedBearer };
}
