import { attribute } from "@gpupool/core";
import type { Attribution, IpTokenCheck, Principal } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import type { IpTokens } from "../../identity/ip-tokens.js";
import type { Caller } from "./callers.js";

/** The X-IP-Token a request carried: none, one value, or several copies (refused). */
export type IpTokenHeader =
  { readonly kind: "none" } | { readonly kind: "one"; readonly token: string } | { readonly kind: "several" };

/**
 * Who a GPU call (or a quota or diagnose request) is charged to: verifies the X-IP-Token, if
 * any, for the calling app, and lets core's `attribute` decide, recording each step for diagnose.
 */
export class RequestIdentity {
  constructor(
    private readonly ipTokens: IpTokens,
    private readonly clock: Clock,
  ) {}

  async of(caller: Caller & { kind: "app" | "user" }, header: IpTokenHeader): Promise<Attribution> {
    const principal: Principal =
      caller.kind === "app"
        ? { kind: "app", appId: caller.app.id, appName: caller.app.name }
        : { kind: "user", userId: caller.user.id, userName: caller.user.name };
    let check: IpTokenCheck;
    if (header.kind === "none") check = { present: false };
    else if (header.kind === "several")
      check = {
        present: true,
        valid: false,
        reason: "malformed",
        message: "Several X-IP-Token headers were sent; send exactly one.",
      };
    else if (caller.kind === "user")
      check = {
        present: true,
        valid: false,
        reason: "not_accepted",
        message: "X-IP-Token is not accepted with a user token.",
      };
    else check = await this.ipTokens.verify(header.token, caller.app.id, this.clock.now());
    return attribute(principal, check);
  }
}
