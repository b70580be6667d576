import { Option } from "commander";
import type { Command } from "commander";
import type { LeaseStatus } from "@gpupool/sdk";
import {
  addJsonOption,
  addTokenOption,
  addUrlOption,
  adminTokenFromEnv,
  connect,
  out,
  parsePositiveInt,
  printJson,
  UsageError,
} from "../common.js";
import type { ClientFlags } from "../common.js";
import { renderLeases } from "../render.js";

const STATUSES = ["queued", "active", "released", "expired", "cancelled", "failed"] as const;

interface LeasesFlags extends ClientFlags {
  readonly status?: LeaseStatus;
  readonly limit?: number;
  readonly cursor?: string;
}

export function registerLeases(program: Command): void {
  const cmd = program
    .command("leases")
    .summary("list GPU leases, newest first")
    .description(
      "List GPU leases, newest first: an app key sees the app's leases, a user token the leases charged " +
        "to that user; with no --token, GPUPOOL_ADMIN_TOKEN sees every lease.",
    )
    .addOption(new Option("--status <status>", "only leases in this state").choices(STATUSES))
    .option("--limit <n>", "at most this many (1–500, default 50)", parsePositiveInt(500))
    .option("--cursor <cursor>", "the page of older leases that the previous page named");
  addUrlOption(cmd);
  addTokenOption(cmd);
  addJsonOption(cmd);
  cmd.action(async (flags: LeasesFlags) => {
    const token = flags.token?.trim() || adminTokenFromEnv();
    if (token === undefined) {
      throw new UsageError(
        "gpupool leases needs credentials: pass --token (or set GPUPOOL_TOKEN), or set GPUPOOL_ADMIN_TOKEN to see every lease.",
      );
    }
    const { client, lastBody } = connect(flags.url, { token });
    const page = await client.leasesPage({ status: flags.status, limit: flags.limit, cursor: flags.cursor });
    if (flags.json === true) return printJson(lastBody());
    out(renderLeases(page.leases, new Date()));
    if (page.nextCursor !== null) out(`Older leases: gpupool leases --cursor ${page.nextCursor}`);
  });
}
