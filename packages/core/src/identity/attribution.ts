import { identityKey } from "./identity.js";
import type { Problem } from "../problem.js";
import { problem } from "../problem.js";

/** Who is calling the API. */
export type Principal =
  | { readonly kind: "app"; readonly appId: string; readonly appName: string }
  | { readonly kind: "user"; readonly userId: string; readonly userName: string };

export type InvalidTokenReason =
  | "malformed"
  | "expired"
  | "wrong_app"
  | "bad_signature"
  | "alg_not_allowed"
  | "unknown_key"
  | "wrong_issuer"
  | "bad_subject"
  | "unknown_user"
  | "not_accepted";

/** What verifying the X-IP-Token header found (verification itself is I/O and lives in the server). */
export type IpTokenCheck =
  | { readonly present: false }
  | {
      readonly present: true;
      readonly valid: true;
      readonly subject: { kind: "user" | "ip"; id: string };
      readonly expiresAt: number;
    }
  | { readonly present: true; readonly valid: false; readonly reason: InvalidTokenReason; readonly message: string };

export interface AttributionStep {
  readonly step: string;
  readonly outcome: "ok" | "fallback" | "rejected" | "info";
  readonly detail: string;
}

export type Via = "ip-token" | "app-key" | "user-token";

export type Attribution =
  | {
      readonly ok: true;
      readonly charged: { kind: "user" | "ip" | "app"; id: string };
      readonly via: Via;
      readonly steps: AttributionStep[];
    }
  | { readonly ok: false; readonly problem: Problem; readonly steps: AttributionStep[] };

/**
 * Decides who a call is charged to, recording each step so `diagnose` can show it. A token that
 * is present but not valid is an error — never a silent fallback to a cheaper identity.
 */
export function attribute(principal: Principal, token: IpTokenCheck): Attribution {
  const steps: AttributionStep[] = [];
  if (principal.kind === "user") {
    steps.push({
      step: "authorization",
      outcome: "ok",
      detail: `Bearer user token of ${principal.userName} (user:${principal.userId}).`,
    });
    if (token.present) {
      const message =
        "X-IP-Token is for apps calling on behalf of a viewer; a user token already says who you are. Remove the header.";
      steps.push({ step: "x-ip-token", outcome: "rejected", detail: message });
      return { ok: false, steps, problem: problem("invalid_ip_token", message, { reason: "not_accepted" }) };
    }
    steps.push({
      step: "charged_identity",
      outcome: "ok",
      detail: `Charged to user:${principal.userId}, the owner of the user token.`,
    });
    return { ok: true, charged: { kind: "user", id: principal.userId }, via: "user-token", steps };
  }
  steps.push({
    step: "authorization",
    outcome: "ok",
    detail: `Bearer app key of app ${principal.appName} (app:${principal.appId}).`,
  });
  if (!token.present) {
    steps.push({
      step: "x-ip-token",
      outcome: "fallback",
      detail:
        "No X-IP-Token header: the app did not say which viewer caused the call (not opened through the edge, or not forwarded by the app).",
    });
    steps.push({
      step: "charged_identity",
      outcome: "fallback",
      detail: `Charged to the app itself, app:${principal.appId}, at the anonymous tier.`,
    });
    return { ok: true, charged: { kind: "app", id: principal.appId }, via: "app-key", steps };
  }
  if (!token.valid) {
    steps.push({ step: "x-ip-token", outcome: "rejected", detail: token.message });
    return {
      ok: false,
      steps,
      problem: problem(
        "invalid_ip_token",
        `${token.message} The call was not charged to anyone and nothing was reserved.`,
        { reason: token.reason },
      ),
    };
  }
  const who = identityKey(token.subject);
  steps.push({
    step: "x-ip-token",
    outcome: "ok",
    detail: `Valid X-IP-Token for this app naming ${who}, expires ${new Date(token.expiresAt).toISOString()}.`,
  });
  steps.push({
    step: "charged_identity",
    outcome: "ok",
    detail:
      token.subject.kind === "user"
        ? `Charged to ${who}, the signed-in viewer named by the token.`
        : // The control plane cannot see edge sessions; say what an IP subject means at the edge.
          `Charged to ${who}: the viewer was not signed in, so the edge identified them by IP address. ` +
          "The edge names the IP when the request came with no session cookie and no Bearer user token (a private window, " +
          "another browser, or not signed in at the edge's /login), or when an app in between did not forward the X-IP-Token " +
          "it received (or forwarded a forged or expired one, which the edge drops: see the X-Gpupool-Token-Dropped response header).",
  });
  return { ok: true, charged: token.subject, via: "ip-token", steps };
}
