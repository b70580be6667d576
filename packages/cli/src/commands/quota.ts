import type { Command } from "commander";
import {
  addIpTokenOption,
  addJsonOption,
  addTokenOption,
  addUrlOption,
  connect,
  out,
  printJson,
  requireToken,
} from "../common.js";
import type { ClientFlags } from "../common.js";
import { renderQuota } from "../render.js";

export function registerQuota(program: Command): void {
  const cmd = program
    .command("quota")
    .summary("show the GPU quota left and when it resets")
    .description(
      "Show the GPU-time quota of the identity a call would be charged to: with a user token, that user; " +
        "with an app key plus --ip-token, the viewer the token names; with an app key alone, the app itself.",
    );
  addUrlOption(cmd);
  addTokenOption(cmd);
  addIpTokenOption(cmd);
  addJsonOption(cmd);
  cmd.addHelpText(
    "after",
    `
Examples:
  GPUPOOL_TOKEN=gpu_u_… gpupool quota                 # your own quota (user token)
  gpupool quota --token "$APP_KEY" --ip-token "$TOKEN" # a viewer of your app
  gpupool quota --json | jq .left`,
  );
  cmd.action(async (flags: ClientFlags) => {
    const token = requireToken(flags, "gpupool quota needs to know whose quota to show");
    const { client, lastBody } = connect(flags.url, { token });
    const quota = await client.quota({ ipToken: flags.ipToken });
    if (flags.json === true) printJson(lastBody());
    else out(renderQuota(quota, new Date()));
  });
}
