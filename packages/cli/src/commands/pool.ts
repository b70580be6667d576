import type { Command } from "commander";
import { addJsonOption, addUrlOption, connect, out, printJson, requireAdminToken } from "../common.js";
import type { ClientFlags } from "../common.js";
import { renderPool } from "../render.js";

export function registerPool(program: Command): void {
  const cmd = program
    .command("pool")
    .summary("show GPUs, slots, active leases and the queue (admin)")
    .description(
      "Show the pool as the scheduler sees it: nodes, GPUs and who holds each slot, active leases, and the queue. Needs GPUPOOL_ADMIN_TOKEN.",
    );
  addUrlOption(cmd);
  addJsonOption(cmd);
  cmd.action(async (flags: ClientFlags) => {
    const { client, lastBody } = connect(flags.url, { adminToken: requireAdminToken() });
    const state = await client.admin.pool();
    if (flags.json === true) printJson(lastBody());
    else out(renderPool(state, new Date()));
  });
}
