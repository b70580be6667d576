import { readFileSync } from "node:fs";
import { GpupoolError, InvalidRequestError } from "@gpupool/sdk";
import type { ConfigError } from "@gpupool/server";
import { Command, CommanderError } from "commander";
import { registerAdmin } from "./commands/admin.js";
import { registerAgent } from "./commands/agent.js";
import { registerBackup } from "./commands/backup.js";
import { registerBilling } from "./commands/billing.js";
import { registerDashboard } from "./commands/dashboard.js";
import { registerDemo } from "./commands/demo.js";
import { registerDiagnose } from "./commands/diagnose.js";
import { registerEdge } from "./commands/edge.js";
import { registerIpToken } from "./commands/ip-token.js";
import { registerLeases } from "./commands/leases.js";
import { registerMe } from "./commands/me.js";
import { registerMigrate } from "./commands/migrate.js";
import { registerPool } from "./commands/pool.js";
import { registerQuota } from "./commands/quota.js";
import { registerServer } from "./commands/server.js";
import { registerSimulate } from "./commands/simulate.js";
import { registerUsage } from "./commands/usage.js";
import { err, StartError, UsageError } from "./common.js";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version?: unknown };
    return typeof pkg.version === "string" ? pkg.version : "unknown";
  } catch {
    return "unknown";
  }
}

export function buildProgram(): Command {
  const program = new Command("gpupool");
  // Settings made before .command() are inherited by every subcommand.
  program
    .exitOverride()
    .showHelpAfterError("(add --help for usage)")
    .configureHelp({ sortSubcommands: false })
    .version(version(), "-v, --version", "print the gpupool version")
    .helpOption("-h, --help", "show help for a command")
    .description(
      "A self-hostable shared GPU pool for ML demo apps: apps borrow a GPU slice per call, and the time " +
        "is charged to the person who caused the call, against a daily GPU-time quota of their tier.",
    )
    .addHelpText(
      "after",
      `
Environment:
  GPUPOOL_URL           control plane URL (default http://127.0.0.1:7070)
  GPUPOOL_TOKEN         user token or app key, for quota / diagnose / leases / me / billing / usage
  GPUPOOL_IP_TOKEN      an end user's X-IP-Token, sent with an app key
  GPUPOOL_ADMIN_TOKEN   admin token: enables the admin API (server) and admin commands
  GPUPOOL_CONFIG        server configuration file

Get started:
  npm start                      # = gpupool demo: a pool, users and a demo app, with a guided tour
  gpupool dashboard --open       # sign in to the web dashboard (one-time link)
  gpupool server --config gpupool.yaml
  gpupool migrate --config gpupool.yaml --status   # schema versions the storage lacks
  gpupool backup --to FILE       # copy the SQLite database while the server runs
  gpupool <command> --help       # options and examples of a command

Exit codes: 0 ok, 1 the server refused or failed (printed as "error [code]: detail"), 2 usage error.`,
    );
  registerServer(program);
  registerMigrate(program);
  registerDemo(program);
  registerEdge(program);
  registerAgent(program);
  registerQuota(program);
  registerMe(program);
  registerDashboard(program);
  registerBilling(program);
  registerUsage(program);
  registerDiagnose(program);
  registerLeases(program);
  registerPool(program);
  registerIpToken(program);
  registerAdmin(program);
  registerSimulate(program);
  registerBackup(program);
  return program;
}

/** Duck-typed so that client commands need not load the server package (a quarter-second at start). */
function isConfigError(error: unknown): error is ConfigError {
  return (
    error instanceof Error && error.name === "ConfigError" && Array.isArray((error as Partial<ConfigError>).problems)
  );
}

/** Prints an error the way a person should see it, and returns the exit code. */
export function reportError(error: unknown): number {
  if (error instanceof CommanderError) {
    // Help and --version exit 0; commander has already printed its message for the rest.
    if (error.exitCode === 0) return EXIT_OK;
    return EXIT_USAGE;
  }
  if (error instanceof UsageError) {
    err(`error: ${error.message}`);
    return EXIT_USAGE;
  }
  if (isConfigError(error)) {
    const [head] = error.message.split("\n");
    err(`error [invalid_config]: ${head ?? "invalid configuration"}`);
    for (const problem of error.problems) err(`  - ${problem}`);
    err("Nothing was started: fix the configuration, then start again.");
    return EXIT_USAGE;
  }
  if (error instanceof StartError) {
    err(`error: ${error.message}`);
    return EXIT_FAILURE;
  }
  if (error instanceof GpupoolError) {
    err(`error [${error.code}]: ${error.message}`);
    if (error instanceof InvalidRequestError) for (const e of error.errors) err(`  - ${e.field}: ${e.message}`);
    if (error.code === "server_unavailable" && error.status === 0) {
      err(
        "Is the server running? Start one with `gpupool server` (or `npm start` for the demo), or point --url / GPUPOOL_URL at it.",
      );
    }
    return EXIT_FAILURE;
  }
  const message = error instanceof Error ? error.message : String(error);
  err(`error: ${message}`);
  if (process.env["GPUPOOL_DEBUG"] && error instanceof Error && error.stack) err(error.stack);
  else err("(set GPUPOOL_DEBUG=1 to see the stack trace)");
  return EXIT_FAILURE;
}

/** Parses `argv` (process.argv shape) and runs the command; resolves to the exit code. */
export async function run(argv: readonly string[]): Promise<number> {
  try {
    await buildProgram().parseAsync([...argv]);
    return EXIT_OK;
  } catch (error) {
    return reportError(error);
  }
}
