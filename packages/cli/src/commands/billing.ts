import { parseMoney } from "@gpupool/core";
import { Argument, InvalidArgumentError } from "commander";
import type { Command } from "commander";
import {
  addJsonOption,
  addTokenOption,
  addUrlOption,
  connect,
  out,
  parsePositiveInt,
  printJson,
  requireToken,
} from "../common.js";
import type { ClientFlags } from "../common.js";
import { overageLines, renderWallet } from "../render-billing.js";
import { width, wrap } from "../render.js";

/** A decimal amount as the API takes it ("5.00"), checked here so a typo is a usage error (exit 2). */
export function parseAmount(options: { readonly positive: boolean }) {
  return (value: string): string => {
    const text = value.trim().replace(/^\$/, "");
    const parsed = parseMoney(text, { positive: options.positive });
    if (!parsed.ok) throw new InvalidArgumentError(`"${value}" ${parsed.message}.`);
    return text;
  };
}

/** `--cap 5.00`, or `--cap default` for the operator's default cap (sent as null). */
function parseCap(value: string): string {
  return value.trim().toLowerCase() === "default" ? "default" : parseAmount({ positive: false })(value);
}

function userClient(flags: ClientFlags, what: string) {
  return connect(flags.url, { token: requireToken(flags, `${what} needs a user token`) });
}

export function registerBilling(program: Command): void {
  const billing = program
    .command("billing")
    .summary("your credits and overage: turn overage on or off, set the monthly cap, see the wallet")
    .description(
      "Credits pay for GPU time past the daily quota only with overage on (off by default), only where the " +
        "operator offers it to your tier, and never past your monthly cap. `gpupool me` shows where you stand.",
    );

  const overage = billing
    .command("overage")
    .description(
      "Turn overage on or off. With it on, a call that needs more than the quota has left is split: the quota " +
        "pays what is left, credits pay the rest (held when the call starts, settled at its end), up to the cap.",
    )
    .addArgument(
      new Argument("<on|off>", "on: credits pay past the quota; off: a call past the quota is refused (429)").choices([
        "on",
        "off",
      ]),
    )
    .option(
      "--cap <amount|default>",
      'the most overage may spend in a month, e.g. 5.00; "default": the pool\'s',
      parseCap,
    );
  addUrlOption(overage);
  addTokenOption(overage, "user token");
  addJsonOption(overage);
  overage.addHelpText(
    "after",
    `
Examples:
  gpupool billing overage on --cap 5.00
  gpupool billing overage on --cap default   # the pool's default cap
  gpupool billing overage off
  gpupool me                                  # what is spent and held this month`,
  );
  overage.action(async (state: "on" | "off", flags: ClientFlags & { cap?: string }) => {
    const { client, lastBody } = userClient(flags, "gpupool billing overage");
    const cap = flags.cap === undefined ? undefined : flags.cap === "default" ? null : flags.cap;
    const result = await client.setBilling({
      overage: state === "on",
      ...(cap !== undefined ? { monthlyCap: cap } : {}),
    });
    if (flags.json === true) return printJson(lastBody());
    out(`Overage is now ${result.enabled ? "on" : "off"}.`);
    for (const line of overageLines(result, "", new Date())) out(`  ${wrap(line, width(), 2)}`);
  });

  const wallet = billing
    .command("wallet")
    .description("your credits: each grant in the order it is spent, and the latest transactions")
    .option("--limit <n>", "the latest this many transactions (1–500, default 100)", parsePositiveInt(500));
  addUrlOption(wallet);
  addTokenOption(wallet, "user token");
  addJsonOption(wallet);
  wallet.action(async (flags: ClientFlags & { limit?: number }) => {
    const { client, lastBody } = userClient(flags, "gpupool billing wallet");
    const answer = await client.wallet({ limit: flags.limit });
    if (flags.json === true) printJson(lastBody());
    else out(renderWallet(answer, new Date()));
  });
}
