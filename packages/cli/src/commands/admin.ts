import { randomUUID } from "node:crypto";
import { parseDurationMs } from "@gpupool/core";
import type { UserChanges } from "@gpupool/sdk";
import { InvalidArgumentError, Option } from "commander";
import type { Command } from "commander";
import {
  addJsonOption,
  addUrlOption,
  connect,
  out,
  parsePositiveInt,
  printJson,
  requireAdminToken,
  UsageError,
} from "../common.js";
import type { ClientFlags } from "../common.js";
import { renderQuota, secs, table } from "../render.js";
import { money, renderWallet } from "../render-billing.js";
import { parseAmount } from "./billing.js";
import { parseInstant } from "./when.js";

/** Seconds, or a duration such as "25m" / "1.5h". */
function seconds(value: string, signed: boolean): number {
  const negative = signed && value.trim().startsWith("-");
  const parsed = parseDurationMs(negative ? value.trim().slice(1) : value);
  if (!parsed.ok)
    throw new InvalidArgumentError(`"${value}" is not a number of seconds or a duration such as 90s, 25m, 2h.`);
  return ((negative ? -1 : 1) * parsed.ms) / 1000;
}

/** "none" stays a string: commander turns a parser's null into "". */
function parseQuota(value: string): number | "none" {
  return value.trim().toLowerCase() === "none" ? "none" : seconds(value, false);
}

/** A concurrency limit, or "none" (kept a string: commander turns a parser's null into ""). */
function parseLimit(value: string): number | "none" {
  return value.trim().toLowerCase() === "none" ? "none" : parsePositiveInt(100_000)(value);
}

/**
 * `--json` of a list: the server's answers as sent, every page's items under `key` in one object
 * (the wire shape, `next_cursor` null), following the pages.
 */
async function everyPage(
  lastBody: () => unknown,
  key: "users" | "apps",
  page: (o: { limit: number; cursor?: string }) => Promise<{ nextCursor: string | null }>,
): Promise<unknown> {
  const items: unknown[] = [];
  let cursor: string | undefined;
  for (;;) {
    const p = await page(cursor === undefined ? { limit: 1000 } : { limit: 1000, cursor });
    const body = lastBody() as Record<string, unknown>;
    const got = body[key];
    if (Array.isArray(got)) items.push(...(got as unknown[]));
    if (p.nextCursor === null) return { [key]: items, next_cursor: null };
    cursor = p.nextCursor;
  }
}

/** Prints a freshly minted secret with the warning that it is shown only this once. */
function printSecret(label: string, secret: string, usage: string): void {
  out("");
  out(`  ${label}  ${secret}`);
  out("");
  out(`This ${label} is shown once and cannot be shown again: the server keeps only its hash. Store it now.`);
  out(usage);
}

function adminCommand(parent: Command, name: string, summary: string): Command {
  return parent.command(name).description(summary);
}

/** The options every admin command shares, added last so they come last in --help. */
function common(cmd: Command): Command {
  addUrlOption(cmd);
  addJsonOption(cmd);
  return cmd;
}

function adminClient(flags: ClientFlags) {
  return connect(flags.url, { adminToken: requireAdminToken() });
}

export function registerAdmin(program: Command): void {
  const admin = program
    .command("admin")
    .summary("manage users, credits, apps, nodes and edges (needs GPUPOOL_ADMIN_TOKEN)")
    .description(
      "Operator commands. Every one needs GPUPOOL_ADMIN_TOKEN set to the token the server was started with.",
    );
  admin.addHelpText(
    "after",
    `
Examples:
  gpupool admin users create --name ada --tier pro
  gpupool admin users update ada --quota 45m --bonus 300
  gpupool admin credits grant ada 10.00 --category purchased --key pay_123
  gpupool admin wallet ada
  gpupool admin apps create --name sdxl --owner ada --max-concurrency 2
  gpupool admin apps update sdxl --max-concurrency 4
  gpupool admin edges create --name edge-1`,
  );

  const users = admin.command("users").description("create, update and list users");
  const createUser = adminCommand(users, "create", "create a user and print their access token (shown once)")
    .requiredOption("--name <name>", "user name (letters, digits, . _ -)")
    .option("--tier <tier>", "account tier: free, pro, team, enterprise or one the operator configured", "free");
  common(createUser).action(async (flags: ClientFlags & { name: string; tier: string }) => {
    const { client, lastBody } = adminClient(flags);
    const user = await client.admin.createUser({ name: flags.name, tier: flags.tier });
    if (flags.json === true) return printJson(lastBody());
    out(`Created user ${user.name} (${user.id}), tier ${user.tier}.`);
    printSecret(
      "token",
      user.token,
      `${user.name} uses it as GPUPOOL_TOKEN with this CLI, or as "Authorization: Bearer <token>" with the API.`,
    );
  });

  const updateUser = adminCommand(users, "update", "change a user's tier, quota override or bonus seconds")
    .argument("<user>", "user id or name")
    .option("--tier <tier>", "new account tier")
    .option(
      "--quota <seconds|none>",
      'per-window quota replacing the tier default (seconds or e.g. "45m"); "none" clears it',
      parseQuota,
    )
    .option(
      "--bonus <seconds>",
      "seconds added to the user's current window only (negative to take back)",
      (v: string) => seconds(v, true),
    );
  common(updateUser).action(
    async (ref: string, flags: ClientFlags & { tier?: string; quota?: number | "none"; bonus?: number }) => {
      const changes: UserChanges = {
        ...(flags.tier !== undefined ? { tier: flags.tier } : {}),
        ...(flags.quota !== undefined ? { quota: flags.quota === "none" ? null : flags.quota } : {}),
        ...(flags.bonus !== undefined ? { bonus: flags.bonus } : {}),
      };
      if (Object.keys(changes).length === 0)
        throw new UsageError("Nothing to change: pass --tier, --quota or --bonus.");
      const { client, lastBody } = adminClient(flags);
      const user = await client.admin.updateUser(ref, changes);
      if (flags.json === true) return printJson(lastBody());
      const override = user.quotaOverride === null ? "none (tier default)" : secs(user.quotaOverride);
      out(`Updated user ${user.name} (${user.id}): tier ${user.tier}, quota override ${override}.`);
      if (user.quota !== null) out(`\n${renderQuota(user.quota, new Date())}`);
    },
  );

  common(adminCommand(users, "list", "list users")).action(async (flags: ClientFlags) => {
    const { client, lastBody } = adminClient(flags);
    if (flags.json === true) return printJson(await everyPage(lastBody, "users", (c) => client.admin.usersPage(c)));
    const list = await client.admin.listUsers();
    if (list.length === 0) return out("No users yet: create one with gpupool admin users create --name <name>.");
    const quota = (override: number | null) => (override === null ? "tier default" : `${secs(override)} (override)`);
    out(
      table(
        ["ID", "NAME", "TIER", "QUOTA"],
        list.map((u) => [u.id, u.name, u.tier, quota(u.quotaOverride)]),
      ),
    );
  });

  registerCredits(admin);

  const apps = admin.command("apps").description("register, update and list apps");
  const createApp = adminCommand(apps, "create", "register an app and print its app key (shown once)")
    .requiredOption("--name <name>", "app name")
    .requiredOption("--owner <user>", "owning user's id or name")
    .option(
      "--max-concurrency <n>",
      "at most this many GPU calls of the app at once; more wait in the queue",
      parsePositiveInt(100_000),
    );
  common(createApp).action(async (flags: ClientFlags & { name: string; owner: string; maxConcurrency?: number }) => {
    const { client, lastBody } = adminClient(flags);
    const app = await client.admin.createApp({
      name: flags.name,
      owner: flags.owner,
      maxConcurrency: flags.maxConcurrency,
    });
    if (flags.json === true) return printJson(lastBody());
    const limit = app.maxConcurrency === null ? "no concurrency limit" : `at most ${app.maxConcurrency} calls at once`;
    out(`Created app ${app.name} (${app.id}), owned by ${app.owner}, ${limit}.`);
    printSecret(
      "app key",
      app.key,
      'The app sends it as "Authorization: Bearer <key>" (SDK: createClient({ url, appKey })).',
    );
  });

  const updateApp = adminCommand(apps, "update", "change an app's concurrency limit (for its next calls)")
    .argument("<app>", "app id or name")
    .requiredOption(
      "--max-concurrency <n|none>",
      'at most this many GPU calls of the app at once (1 to 100000); "none" removes the limit',
      parseLimit,
    );
  common(updateApp).action(async (ref: string, flags: ClientFlags & { maxConcurrency: number | "none" }) => {
    const { client, lastBody } = adminClient(flags);
    const app = await client.admin.updateApp(ref, {
      maxConcurrency: flags.maxConcurrency === "none" ? null : flags.maxConcurrency,
    });
    if (flags.json === true) return printJson(lastBody());
    const limit = app.maxConcurrency === null ? "no concurrency limit" : `at most ${app.maxConcurrency} calls at once`;
    out(`Updated app ${app.name} (${app.id}): ${limit}. Leases it already holds keep their GPUs.`);
  });

  common(adminCommand(apps, "list", "list apps")).action(async (flags: ClientFlags) => {
    const { client, lastBody } = adminClient(flags);
    if (flags.json === true) return printJson(await everyPage(lastBody, "apps", (c) => client.admin.appsPage(c)));
    const list = await client.admin.listApps();
    if (list.length === 0)
      return out("No apps yet: register one with gpupool admin apps create --name <name> --owner <user>.");
    const limit = (n: number | null) => (n === null ? "-" : String(n));
    out(
      table(
        ["ID", "NAME", "OWNER", "MAX CONCURRENCY"],
        list.map((a) => [a.id, a.name, a.owner, limit(a.maxConcurrency)]),
      ),
    );
  });

  const keyed = [
    {
      kind: "nodes",
      what: "GPU node agent",
      plural: "GPU node agents",
      usage: "The node agent on that GPU host authenticates with it.",
    },
    {
      kind: "edges",
      what: "edge proxy",
      plural: "edge proxies",
      usage: "The edge authenticates with it to mint an X-IP-Token for every request it proxies.",
    },
  ] as const;
  for (const { kind, what, plural, usage } of keyed) {
    const group = admin.command(kind).description(`register ${plural}`);
    const create = adminCommand(group, "create", `register a ${what} and print its key (shown once)`).requiredOption(
      "--name <name>",
      `${what} name`,
    );
    common(create).action(async (flags: ClientFlags & { name: string }) => {
      const { client, lastBody } = adminClient(flags);
      const created =
        kind === "nodes"
          ? await client.admin.createNode({ name: flags.name })
          : await client.admin.createEdge({ name: flags.name });
      if (flags.json === true) return printJson(lastBody());
      out(`Registered ${what} ${created.name} (${created.id}).`);
      printSecret("key", created.key, usage);
    });
  }
}

interface GrantFlags extends ClientFlags {
  readonly category: "promotional" | "purchased";
  readonly expires?: Date;
  readonly priority?: number;
  readonly source?: string;
  readonly key?: string;
}

function registerCredits(admin: Command): void {
  const credits = admin.command("credits").description("add credits to a user's wallet");
  const grant = adminCommand(
    credits,
    "grant",
    "add credits to a user's wallet; idempotent by --key (the same key again adds nothing)",
  )
    .argument("<user>", "user id or name")
    .argument("<amount>", "a decimal amount of the pool's currency, e.g. 10.00", parseAmount({ positive: true }))
    .addOption(
      new Option("--category <category>", "promotional (a gift) or purchased (a top-up a payment recorded)")
        .choices(["promotional", "purchased"])
        .default("promotional"),
    )
    .option(
      "--expires <when>",
      "when what is left of it expires: 2027-01-01, 30d, an ISO time (default never)",
      parseInstant("ahead"),
    )
    .option("--priority <n>", "lower is spent first (default 10; included credits are 0)", (v: string) => {
      if (!/^\d+$/.test(v.trim()) || Number(v) > 1000)
        throw new InvalidArgumentError(`"${v}" is not a whole number from 0 to 1000.`);
      return Number(v);
    })
    .option("--source <text>", "where it came from, e.g. a payment id or a note")
    .option(
      "--key <key>",
      "idempotency key: a payment's id, so a retry never adds twice (default: a new random key, printed)",
    );
  common(grant).action(async (user: string, amount: string, flags: GrantFlags) => {
    const key = flags.key ?? `cli-${randomUUID()}`;
    const { client, lastBody } = adminClient(flags);
    const { grant: made, created } = await client.admin.grantCredits(user, {
      amount,
      category: flags.category,
      expiresAt: flags.expires,
      priority: flags.priority,
      source: flags.source,
      idempotencyKey: key,
    });
    if (flags.json === true) return printJson(lastBody());
    const expires = made.expiresAt === null ? "never expires" : `expires ${made.expiresAt.toISOString()}`;
    out(
      created
        ? `Granted ${money(made.amountMicros, made.currency)} of ${made.category} credits to ${user} (grant ${made.id}, priority ${made.priority}, ${expires}).`
        : `Nothing added: key ${key} already granted ${money(made.amountMicros, made.currency)} (grant ${made.id}, ${money(made.remainingMicros, made.currency)} left).`,
    );
    out(
      `Idempotency key: ${key}${flags.key === undefined ? "  (run again with --key " + key + " to retry without adding twice)" : ""}`,
    );
  });

  const wallet = adminCommand(admin, "wallet", "show a user's wallet: grants in spending order, transactions")
    .argument("<user>", "user id or name")
    .option("--limit <n>", "the latest this many transactions (1–500, default 100)", parsePositiveInt(500));
  common(wallet).action(async (user: string, flags: ClientFlags & { limit?: number }) => {
    const { client, lastBody } = adminClient(flags);
    const answer = await client.admin.userWallet(user, { limit: flags.limit });
    if (flags.json === true) return printJson(lastBody());
    out(renderWallet(answer, new Date()));
  });
}
