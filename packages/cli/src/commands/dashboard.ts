import { spawn } from "node:child_process";
import { problemToError } from "@gpupool/sdk";
import type { Problem } from "@gpupool/sdk";
import type { Command } from "commander";
import { addTokenOption, addUrlOption, adminTokenFromEnv, err, out, printJson, UsageError } from "../common.js";
import type { ClientFlags } from "../common.js";

interface DashboardFlags extends ClientFlags {
  readonly open?: boolean;
  readonly admin?: boolean;
}

/** A one-time sign-in link (`POST /v1/dashboard/links`) for whoever the token belongs to. */
export async function dashboardLink(url: string, token: string): Promise<{ url: string; expires_at: string }> {
  const res = await fetch(new URL("/v1/dashboard/links", url), {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
  });
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text) as unknown;
  } catch {
    body = null;
  }
  if (!res.ok) {
    if (typeof body === "object" && body !== null && typeof (body as Problem).code === "string")
      throw problemToError(body as Problem);
    throw new Error(`the server answered ${res.status} to POST /v1/dashboard/links (is ${url} a gpupool server?)`);
  }
  const link = body as { url?: unknown; expires_at?: unknown } | null;
  if (typeof link?.url !== "string" || typeof link.expires_at !== "string")
    throw new Error("the server's answer to POST /v1/dashboard/links has no url");
  return { url: link.url, expires_at: link.expires_at };
}

/** Opens `url` in the desktop's browser, if there is one (xdg-open / open / start); false when none could be started. */
function openInBrowser(url: string): Promise<boolean> {
  const [command, args] =
    process.platform === "darwin"
      ? ["open", [url]]
      : process.platform === "win32"
        ? ["cmd", ["/c", "start", "", url]]
        : ["xdg-open", [url]];
  return new Promise((resolve) => {
    try {
      const child = spawn(command, args, { stdio: "ignore", detached: true });
      child.once("error", () => resolve(false));
      child.once("spawn", () => {
        child.unref();
        resolve(true);
      });
    } catch {
      resolve(false);
    }
  });
}

export function registerDashboard(program: Command): void {
  const cmd = program
    .command("dashboard")
    .summary("print (or --open) a one-time sign-in link to the web dashboard")
    .description(
      "Asks the server for a one-time sign-in link for you (user token) or the operator (--admin, with " +
        "GPUPOOL_ADMIN_TOKEN) and prints it. The code is in the link's #fragment, which browsers never send " +
        "to a server; it works once, within 5 minutes, and the page then keeps only an HttpOnly session cookie. " +
        "Your token never appears in a URL.",
    )
    .option("--open", "also open the link in this machine's browser (xdg-open)")
    .option("--admin", "sign in as the operator (needs GPUPOOL_ADMIN_TOKEN)");
  addUrlOption(cmd);
  addTokenOption(cmd, "user token");
  cmd.option("--json", "print the server's JSON answer");
  cmd.addHelpText(
    "after",
    `
Examples:
  GPUPOOL_TOKEN=gpu_u_… gpupool dashboard          # your quota, credits, calls and apps
  GPUPOOL_ADMIN_TOKEN=… gpupool dashboard --admin --open   # the operator's view, in a browser`,
  );
  cmd.action(async (flags: DashboardFlags) => {
    const token = flags.admin === true ? adminTokenFromEnv() : flags.token?.trim();
    if (token === undefined || token === "")
      throw new UsageError(
        flags.admin === true
          ? "gpupool dashboard --admin needs GPUPOOL_ADMIN_TOKEN set to the token the server was started with."
          : "gpupool dashboard needs a user token: pass --token <user token>, or set GPUPOOL_TOKEN (or use --admin).",
      );
    const link = await dashboardLink(flags.url, token);
    if (flags.json === true) return printJson(link);
    out(link.url);
    err(`(one-time sign-in link for the dashboard: works once, until ${link.expires_at})`);
    if (flags.open === true && !(await openInBrowser(link.url)))
      err("could not start a browser here (xdg-open); open the link above yourself.");
  });
}
