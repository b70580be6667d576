import { attribute } from "@gpupool/core";
import type { Attribution, IpTokenCheck, Principal } from "@gpupool/core";
import type { FastifyRequest } from "fastify";
import type { Caller } from "./auth.js";
import { ipTokenHeader } from "./auth.js";
import type { ServerContext } from "./context.js";

/** Verifies the X-IP-Token (if any) for the calling app and decides who is charged. */
export async function attributeRequest(ctx: ServerContext, req: FastifyRequest, caller: Caller & { kind: "app" | "user" }): Promise<Attribution> {
  const header = ipTokenHeader(req);
  const principal: Principal =
    caller.kind === "app"
      ? { kind: "app", appId: caller.app.id, appName: caller.app.name }
      : { kind: "user", userId: caller.user.id, userName: caller.user.name };
  let check: IpTokenCheck;
  if (header === undefined) check = { present: false };
  else if (typeof header !== "string") check = { present: true, valid: false, reason: "malformed", message: "Several X-IP-Token headers were sent; send exactly one." };
  else if (caller.kind === "user") check = { present: true, valid: false, reason: "not_accepted", message: "X-IP-Token is not accepted with a user token." };
  else check = await ctx.ipTokens.verify(header, caller.app.id, ctx.clock.now());
  return attribute(principal, check);
}
