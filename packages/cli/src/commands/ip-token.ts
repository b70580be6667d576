import type { Command } from "commander";
import { addJsonOption, addUrlOption, adminTokenFromEnv, connect, out, printJson, UsageError } from "../common.js";
import type { ClientFlags } from "../common.js";

interface IpTokenFlags extends ClientFlags {
  readonly app: string;
  readonly user?: string;
  readonly ip?: string;
}

export function registerIpToken(program: Command): void {
  const cmd = program
    .command("ip-token")
    .summary("mint an X-IP-Token naming a viewer of an app (admin or edge key)")
    .description(
      "Mint an X-IP-Token for a viewer of an app, as the edge does for every request it proxies. " +
        "Prints only the token, so it can be captured: TOKEN=$(gpupool ip-token --app my-app --user bob). " +
        "Needs GPUPOOL_ADMIN_TOKEN, or an edge key passed as --token.",
    )
    .requiredOption("--app <app>", "app id or name the token is for (its audience)")
    .option("--user <user>", "the signed-in viewer: a user id or name")
    .option("--ip <address>", "an anonymous viewer's IP address");
  addUrlOption(cmd);
  cmd.option("--token <edge key>", "edge key (instead of GPUPOOL_ADMIN_TOKEN)");
  addJsonOption(cmd);
  cmd.action(async (flags: IpTokenFlags) => {
    if ((flags.user === undefined) === (flags.ip === undefined)) {
      throw new UsageError("Name exactly one viewer: --user <user> or --ip <address>.");
    }
    const adminToken = adminTokenFromEnv();
    const token = flags.token?.trim() || undefined;
    if (adminToken === undefined && token === undefined) {
      throw new UsageError("Minting X-IP-Tokens needs GPUPOOL_ADMIN_TOKEN, or an edge key passed as --token.");
    }
    // An explicit edge key wins over the admin token from the environment.
    const { client, lastBody } = connect(flags.url, token === undefined ? { adminToken } : { token });
    const minted = await client.ipToken({ app: flags.app, user: flags.user, ip: flags.ip });
    if (flags.json === true) printJson(lastBody());
    else out(minted.token);
  });
}
