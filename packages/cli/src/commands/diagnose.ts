import { InvalidArgumentError } from "commander";
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
import { renderDiagnosis } from "../render.js";

interface DiagnoseFlags extends ClientFlags {
  readonly duration?: number;
  readonly size?: string;
  readonly maxWait?: number;
}

function parseDuration(value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n <= 0) {
    throw new InvalidArgumentError(`"${value}" is not a positive number of seconds.`);
  }
  return n;
}

export function registerDiagnose(program: Command): void {
  const cmd = program
    .command("diagnose")
    .summary("explain who a GPU call is charged to, and what it would get now")
    .description(
      "Ask the pool, without reserving anything, what a GPU call made with these credentials would do: " +
        "which identity it is charged to and why (each header seen, each fallback taken), the quota state, " +
        "which billing buckets apply, the verdict (granted / queued / rejected), and the likely causes and fixes.",
    )
    .option("--duration <seconds>", "duration the call would ask for (server default 60)", parseDuration)
    .option("--size <size>", "GPU size: large (half a GPU) or xlarge (a whole GPU)")
    .option(
      "--max-wait <seconds>",
      "how long the call would wait for a slot (max_wait; server default and cap: the tier's queue timeout)",
      parseDuration,
    );
  addUrlOption(cmd);
  addTokenOption(cmd);
  addIpTokenOption(cmd);
  addJsonOption(cmd);
  cmd.addHelpText(
    "after",
    `
Examples:
  gpupool diagnose --token "$APP_KEY" --ip-token "$VIEWER_TOKEN" --duration 120 --size xlarge
  GPUPOOL_TOKEN=gpu_u_… gpupool diagnose`,
  );
  cmd.action(async (flags: DiagnoseFlags) => {
    const token = requireToken(flags, "gpupool diagnose needs the credentials the call would be made with");
    const { client, lastBody } = connect(flags.url, { token });
    const diagnosis = await client.diagnose({
      ipToken: flags.ipToken,
      duration: flags.duration,
      size: flags.size,
      maxWait: flags.maxWait,
    });
    if (flags.json === true) printJson(lastBody());
    else out(renderDiagnosis(diagnosis, new Date()));
  });
}
