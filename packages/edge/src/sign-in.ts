import type { IncomingMessage, ServerResponse } from "node:http";
import { problem } from "@gpupool/core";
import type { Problem } from "@gpupool/core";
import type { AppTable } from "./apps.js";
import { plausibleSession, plausibleUserToken } from "./viewer-token.js";
import type { ControlPlane } from "./control-plane.js";
import { ControlPlaneRefusal } from "./control-plane.js";
import { APP_SESSION, SESSION, SIGN_IN_STATE, clearedCookie, cookieName, cookieValue, edgeCookie } from "./cookies.js";
import type { Incoming, PublicUrl } from "./incoming.js";
import { indexPage, loginPage, pageHeaders, safeNext } from "./login-page.js";
import type { SignedIn } from "./login-page.js";
import { sendProblem } from "./proxy.js";
import { crossSiteReason } from "@gpupool/contract";
import type { Sealed } from "./sealed.js";
import { Sealer, randomState, sameSecret, signOutToken } from "./sealed.js";

const FORM_LIMIT = 8 * 1024;
const TICKET_TTL_MS = 60_000;
/**
 * An app host's cookie for a signed-in viewer (the session itself is checked on every request).
 * Short, then the host asks the sign-in host again: a ticket the app stole on its own host (see
 * docs/edge.md, threat model) signs a browser in there for no longer than this.
 */
const APP_SESSION_TTL_S = 12 * 3600;
/** "Not signed in", as an app host last heard from the sign-in host: asked again after this. */
const ANONYMOUS_TTL_S = 600;
const STATE_TTL_S = 600;
const STATE = /^[A-Za-z0-9_-]{16,64}$/;

export interface SignInDeps {
  readonly cp: ControlPlane;
  readonly edgeKey: string;
  readonly apps: AppTable;
  readonly pub: PublicUrl | null;
  readonly now: () => number;
  /** The problem for an unexpected failure (it is logged there). */
  readonly failure: (err: unknown) => Problem;
}

/**
 * A top-level navigation of a browser tab: the only request worth a sign-in round trip. Browsers
 * send Sec-Fetch-* to HTTPS (and localhost) only; over plain HTTP, `Upgrade-Insecure-Requests: 1`
 * (sent on navigations only) and an HTML Accept stand in for it.
 */
export function isNavigation(req: IncomingMessage): boolean {
  if (req.method !== "GET") return false;
  const mode = req.headers["sec-fetch-mode"];
  if (mode !== undefined) return mode === "navigate" && req.headers["sec-fetch-dest"] === "document";
  return req.headers["upgrade-insecure-requests"] === "1" && String(req.headers.accept ?? "").includes("text/html");
}

/**
 * Signing viewers in and out, and carrying a sign-in over to apps on hosts of their own.
 *
 * The session cookie lives on the sign-in host only (host-only, `__Host-` over TLS), where no app
 * runs: an app on its own host cannot read it, set it, or post the sign-out form there (its
 * Origin is not the sign-in host's, and it cannot read the form's token). Each app host gets its
 * own cookie through a round trip to the sign-in host, made on a top-level navigation:
 *
 *   app host, no cookie → 303 sign-in host /.gpupool/enter?host&state&next
 *   sign-in host        → 303 app host /.gpupool/enter?ticket&next   (ticket: the session, sealed for that host)
 *   app host            → Set-Cookie (the session, sealed for that host) → 303 next
 *
 * `state` is a random value the app host also put in a cookie: a ticket someone else obtained
 * cannot sign this browser in as them (login CSRF). The sealed values (sealed.ts) are readable
 * only by edges holding the edge key, and bound to one host.
 */
export class SignIn {
  private readonly sealer: Sealer;
  private readonly formTargets: string[];

  constructor(private readonly d: SignInDeps) {
    this.sealer = new Sealer(d.edgeKey);
    const pub = d.pub;
    this.formTargets =
      pub === null
        ? []
        : d.apps.all.flatMap((a) => {
            const host = d.apps.hostOf(a);
            return host === null ? [] : [`${pub.scheme}//${host}${pub.port}`];
          });
  }

  /** The session secret a request to the sign-in host presents, if it could be one. */
  session(inc: Incoming): string | null {
    return plausibleSession(cookieValue(inc.req.headers.cookie, cookieName(SESSION, inc.secure)));
  }

  /** What an app host's cookie says (null: no valid cookie, or none). */
  held(inc: Incoming): Sealed | null {
    const v = cookieValue(inc.req.headers.cookie, cookieName(APP_SESSION, inc.secure));
    if (v === null) return null;
    const opened = this.sealer.open("app", inc.hostname, v, this.d.now());
    return opened === null ? null : { ...opened, session: plausibleSession(opened.session) };
  }

  appOrigin(host: string): string {
    const pub = this.d.pub;
    return pub === null ? "" : `${pub.scheme}//${host}${pub.port}`;
  }

  private html(res: ServerResponse, status: number, body: string, extra: Record<string, string | string[]> = {}): void {
    res.writeHead(status, { ...extra, ...pageHeaders(this.formTargets) });
    res.end(body);
  }

  private redirect(res: ServerResponse, location: string, cookies: string[] = []): void {
    res.writeHead(303, {
      location,
      "cache-control": "no-store",
      "referrer-policy": "no-referrer",
      ...(cookies.length > 0 ? { "set-cookie": cookies } : {}),
    });
    res.end();
  }

  private async signedIn(inc: Incoming): Promise<SignedIn | undefined> {
    const s = this.session(inc);
    if (s === null) return undefined;
    const user = await this.d.cp.sessionUser(s, this.d.now()).catch(() => null);
    return user === null ? undefined : { who: `${user.name} (user:${user.id})`, signOutToken: signOutToken(s) };
  }

  /** The sign-in page, with an error when something was refused; `action`: "" or "/.gpupool". */
  async page(
    inc: Incoming,
    res: ServerResponse,
    action: string,
    next: string,
    error?: string,
    status = 200,
  ): Promise<void> {
    const signedIn = await this.signedIn(inc);
    this.html(
      res,
      status,
      loginPage({
        next,
        action,
        ...(error !== undefined ? { error } : {}),
        ...(signedIn !== undefined ? { signedIn } : {}),
      }),
    );
  }

  async login(inc: Incoming, res: ServerResponse, action: string): Promise<void> {
    const next = safeNext(new URLSearchParams(inc.query).get("next"));
    if (inc.req.method !== "POST") return this.page(inc, res, action, next);
    const forged = crossSiteReason(inc.req.headers, inc.host, this.d.pub?.origin ?? null);
    if (forged !== null)
      return this.page(
        inc,
        res,
        action,
        next,
        `This sign-in was refused: ${forged}. Sign in with the form on this page.`,
        403,
      );
    const form = await readForm(inc.req);
    if (form === null) return this.page(inc, res, action, next, "The sign-in form is larger than 8 KiB.", 413);
    const to = safeNext(form.get("next"));
    const token = (form.get("token") ?? "").trim();
    const name = (form.get("name") ?? "").trim();
    if (token === "") return this.page(inc, res, action, to, "Enter your user token.", 400);
    if (name.length > 64) return this.page(inc, res, action, to, "A user name is at most 64 characters.", 400);
    // Checked here, so no typo or junk reaches the pool as a request it would refuse as malformed.
    if (!plausibleUserToken(token))
      return this.page(
        inc,
        res,
        action,
        to,
        "That is not a gpupool user token: they begin with gpu_u_ and are at most 512 characters. Check it with your pool's operator.",
        401,
      );
    try {
      const s = await this.d.cp.openSession(token, name === "" ? undefined : name);
      this.redirect(res, to, [edgeCookie(SESSION, s.session, (s.expiresAt - this.d.now()) / 1000, inc.secure)]);
    } catch (err) {
      if (err instanceof ControlPlaneRefusal && err.problem.code === "invalid_credentials")
        return this.page(inc, res, action, to, err.problem.detail, 401);
      if (err instanceof ControlPlaneRefusal && err.problem.code === "invalid_request")
        return this.page(
          inc,
          res,
          action,
          to,
          "The pool refused this sign-in as malformed; check the token and the user name.",
          400,
        );
      const p = this.d.failure(err);
      return this.page(inc, res, action, to, p.detail, p.status);
    }
  }

  /** POST only, from this origin, with the form's token: a sign-out no other page can cause. */
  async logout(inc: Incoming, res: ServerResponse, action: string): Promise<void> {
    if (inc.req.method !== "POST")
      return this.page(
        inc,
        res,
        action,
        "/",
        inc.req.method === "GET" || inc.req.method === "HEAD" ? undefined : "Sign out with the button on this page.",
      );
    const forged = crossSiteReason(inc.req.headers, inc.host, this.d.pub?.origin ?? null);
    if (forged !== null)
      return this.page(
        inc,
        res,
        action,
        "/",
        `This sign-out was refused: ${forged}. To sign out, press Sign out on this page.`,
        403,
      );
    const form = await readForm(inc.req);
    if (form === null) return this.page(inc, res, action, "/", "The sign-out form is larger than 8 KiB.", 413);
    const session = this.session(inc);
    if (session !== null) {
      if (!sameSecret(form.get("csrf") ?? "", signOutToken(session))) {
        return this.page(
          inc,
          res,
          action,
          "/",
          "This sign-out was refused: it did not come from this edge's Sign out button. To sign out, press Sign out on this page.",
          403,
        );
      }
      try {
        await this.d.cp.revokeSession(session);
      } catch (err) {
        // The cookie stays: cleared without the revocation, a copy of it would still work.
        const p = this.d.failure(err);
        return this.page(inc, res, action, "/", `You are still signed in: ${p.detail}`, p.status);
      }
    }
    this.redirect(res, `${action}/login`, [clearedCookie(SESSION, inc.secure)]);
  }

  async index(inc: Incoming, res: ServerResponse): Promise<void> {
    const apps = this.d.apps.all.map((a) => {
      const host = this.d.apps.hostOf(a);
      return {
        name: a.name,
        href:
          host === null ? `/apps/${encodeURIComponent(a.name)}/` : `${this.appOrigin(host)}/.gpupool/enter?next=%2F`,
      };
    });
    this.html(res, 200, indexPage(apps, await this.signedIn(inc)));
  }

  /** Sign-in host, `/.gpupool/enter?host&state&next[&login=1]`: a ticket for an app host, or the form first. */
  async issueTicket(inc: Incoming, res: ServerResponse): Promise<void> {
    const q = new URLSearchParams(inc.query);
    const host = (q.get("host") ?? "").toLowerCase();
    const state = q.get("state") ?? "";
    const next = safeNext(q.get("next"));
    if (this.d.pub === null || this.d.apps.forHost(host) === undefined) {
      return sendProblem(
        res,
        problem("invalid_request", "That is not the host of an app behind this edge.", { reason: "not_an_app_host" }),
      );
    }
    if (!STATE.test(state))
      return sendProblem(
        res,
        problem("invalid_request", "The sign-in round trip lost its state; open the app again.", {
          reason: "bad_state",
        }),
      );
    const session = this.session(inc);
    const user = session === null ? null : await this.d.cp.sessionUser(session, this.d.now());
    if (user === null && q.get("login") === "1") {
      return this.redirect(
        res,
        `/login?next=${encodeURIComponent(`/.gpupool/enter?host=${encodeURIComponent(host)}&state=${state}&next=${encodeURIComponent(next)}`)}`,
      );
    }
    const ticket = this.sealer.seal("ticket", host, {
      session: user === null ? null : session,
      state,
      expiresAt: this.d.now() + TICKET_TTL_MS,
    });
    this.redirect(res, `${this.appOrigin(host)}/.gpupool/enter?ticket=${ticket}&next=${encodeURIComponent(next)}`);
  }

  /** App host: off to the sign-in host for a ticket (`login`: through the sign-in form if need be). */
  startHostSignIn(inc: Incoming, res: ServerResponse, next: string, login: boolean): void {
    const pub = this.d.pub;
    if (pub === null) return sendProblem(res, problem("not_found", "This edge has no sign-in host."));
    const held = cookieValue(inc.req.headers.cookie, cookieName(SIGN_IN_STATE, inc.secure));
    // Reused while it lasts, so two tabs signing in at once do not undo each other's state.
    const state = held !== null && STATE.test(held) ? held : randomState();
    const cookies = state === held ? [] : [edgeCookie(SIGN_IN_STATE, state, STATE_TTL_S, inc.secure)];
    const q = `host=${encodeURIComponent(inc.hostname)}&state=${state}&next=${encodeURIComponent(safeNext(next))}${login ? "&login=1" : ""}`;
    this.redirect(res, `${pub.origin}/.gpupool/enter?${q}`, cookies);
  }

  /** App host, `/.gpupool/enter?ticket&next`: the ticket becomes this host's cookie. */
  finishHostSignIn(inc: Incoming, res: ServerResponse): void {
    const q = new URLSearchParams(inc.query);
    const ticket = q.get("ticket");
    if (ticket === null) return this.startHostSignIn(inc, res, q.get("next") ?? "/", false);
    const t = this.sealer.open("ticket", inc.hostname, ticket, this.d.now());
    if (t === null)
      return sendProblem(
        res,
        problem("invalid_request", "This sign-in link has expired or is not for this host; open the app again.", {
          reason: "bad_ticket",
        }),
      );
    const state = cookieValue(inc.req.headers.cookie, cookieName(SIGN_IN_STATE, inc.secure));
    if (state === null || t.state === undefined || !sameSecret(state, t.state)) {
      return sendProblem(
        res,
        problem(
          "invalid_request",
          "This sign-in was not started in this browser (or the browser did not keep the edge's cookie); open the app again.",
          { reason: "state_mismatch" },
        ),
      );
    }
    const ttlS = t.session === null ? ANONYMOUS_TTL_S : APP_SESSION_TTL_S;
    const sealed = this.sealer.seal("app", inc.hostname, { session: t.session, expiresAt: this.d.now() + ttlS * 1000 });
    this.redirect(res, safeNext(q.get("next")), [
      edgeCookie(APP_SESSION, sealed, ttlS, inc.secure),
      clearedCookie(SIGN_IN_STATE, inc.secure),
    ]);
  }
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams | null> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > FORM_LIMIT) return null;
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}
