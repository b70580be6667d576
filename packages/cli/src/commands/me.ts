import type { Command } from "commander";
import { addJsonOption, addTokenOption, addUrlOption, connect, out, printJson, requireToken } from "../common.js";
import type { ClientFlags } from "../common.js";
import { renderMe } from "../render-billing.js";

export function registerMe(program: Command): void {
  const cmd = program
    .command("me")
    .summary("show who you are: quota left, credits, and whether credits pay past the quota")
    .description(
      "Show the signed-in user (user token): the GPU quota left and when it resets, the credits (balance, " +
        "held by calls in flight, available), and whether overage is on — credits paying for calls past the " +
        "quota — with the monthly cap and what this month spent; when it is off, why, and what to do.",
    );
  addUrlOption(cmd);
  addTokenOption(cmd, "user token");
  addJsonOption(cmd);
  cmd.addHelpText(
    "after",
    `
Examples:
  GPUPOOL_TOKEN=gpu_u_… gpupool me
  gpupool me --json | jq .credits.available_micros
  gpupool billing overage on --cap 5.00       # let credits pay past the quota, at most $5.00 a month`,
  );
  cmd.action(async (flags: ClientFlags) => {
    const token = requireToken(flags, "gpupool me needs a user token");
    const { client, lastBody } = connect(flags.url, { token });
    const me = await client.me();
    if (flags.json === true) printJson(lastBody());
    else out(renderMe(me, new Date()));
  });
}
