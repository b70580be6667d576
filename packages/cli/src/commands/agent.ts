import type { AgentFileConfig, DeviceSource, NodeDevice, PidCheck } from "@gpupool/agent";
import { InvalidArgumentError, Option } from "commander";
import type { Command } from "commander";
import { pino } from "pino";
import { DEFAULT_URL, StartError, UsageError, err, out, parseUrl } from "../common.js";
import { parseListen } from "./edge.js";

interface AgentFlags {
  readonly server: string;
  readonly nodeKey?: string;
  readonly listen: string;
  readonly devices: DeviceSource;
  readonly config?: string;
  readonly graceS: number;
  readonly simulatedGpus: number;
  readonly appKey?: string;
  readonly pidCheck: PidCheck;
  readonly stateFile?: string;
}

const DEFAULT_LISTEN = "127.0.0.1:7071";
const SOURCES: readonly DeviceSource[] = ["nvidia-smi", "config", "simulated"];
const PID_CHECK_CHOICES: readonly PidCheck[] = ["strict", "uid", "cgroup", "off"];

function parseGrace(value: string): number {
  const n = /^\d+(\.\d+)?$/.test(value.trim()) ? Number(value) : NaN;
  if (!(n >= 0 && n <= 600)) throw new InvalidArgumentError("write a number of seconds from 0 to 600.");
  return n;
}

function parseGpuCount(value: string): number {
  const n = /^\d+$/.test(value.trim()) ? Number(value) : NaN;
  if (!(n >= 1 && n <= 64)) throw new InvalidArgumentError("write a whole number from 1 to 64.");
  return n;
}

function listenOf(value: string): { host: string; port: number } {
  try {
    return parseListen(value);
  } catch (e) {
    throw new UsageError(`listen: ${e instanceof Error ? e.message : String(e)}`);
  }
}

export function registerAgent(program: Command): void {
  program
    .command("agent")
    .summary("run the node agent on a GPU host")
    .description(
      "Run the node agent on a GPU host: discover its GPUs (nvidia-smi, a config list, or simulated), register them " +
        "with the control plane and heartbeat, serve the device API that the `spaces` package's ZeroGPU client and " +
        "the SDK's createAgentClient speak, and stop each allowed process at its lease's deadline (SIGTERM, then " +
        "SIGKILL after the grace). Apps reach it at http://127.0.0.1:7071/apps/<app-key>.",
    )
    .addOption(
      new Option("--server <url>", "control plane URL").env("GPUPOOL_URL").default(DEFAULT_URL).argParser(parseUrl),
    )
    .addOption(
      new Option("--node-key <key>", "node key from POST /v1/admin/nodes (never printed)").env("GPUPOOL_NODE_KEY"),
    )
    .addOption(
      new Option("--listen <host:port>", "address of the device API (port 0 picks a free one)").default(DEFAULT_LISTEN),
    )
    .addOption(new Option("--devices <source>", "where the GPUs come from").choices(SOURCES).default("nvidia-smi"))
    .addOption(
      new Option("--config <file>", "YAML file with an agent: section (server, listen, devices, gpus, grace…)").env(
        "GPUPOOL_AGENT_CONFIG",
      ),
    )
    .addOption(
      new Option("--grace-s <seconds>", "seconds between SIGTERM and SIGKILL at a lease deadline")
        .default(5)
        .argParser(parseGrace),
    )
    .addOption(
      new Option("--simulated-gpus <n>", "how many GPUs --devices simulated pretends to have")
        .default(2)
        .argParser(parseGpuCount),
    )
    .addOption(
      new Option(
        "--app-key <key>",
        "app key for device API calls without /apps/<app-key>/ in their path (single-app hosts)",
      ).env("GPUPOOL_APP_KEY"),
    )
    .addOption(
      new Option(
        "--pid-check <mode>",
        "how /allow ties a pid to the app asking: the caller's uid must be able to signal it, and it must be in the cgroupPath of /schedule (strict); uid only; cgroupPath when the uid is unknown (cgroup); off",
      )
        .choices(PID_CHECK_CHOICES)
        .default("strict"),
    )
    .addOption(
      new Option(
        "--state-file <path>",
        "where the agent keeps its leases across restarts (default: $STATE_DIRECTORY, else ~/.local/state/gpupool/agent-<node>.json)",
      ).env("GPUPOOL_AGENT_STATE_FILE"),
    )
    .addHelpText(
      "after",
      `
Examples:
  GPUPOOL_NODE_KEY=gpu_n_… gpupool agent --server http://10.0.0.5:7070
  gpupool agent --server http://127.0.0.1:7070 --node-key gpu_n_… --devices simulated --simulated-gpus 4
  gpupool agent --config /etc/gpupool/agent.yaml       # agent: { devices: config, gpus: [ … ] }

An app on this host then runs with
  SPACES_ZERO_GPU=true SPACES_ZERO_DEVICE_API_URL=http://127.0.0.1:7071/apps/<app-key>
Once listening it prints one line to stdout, e.g.
  gpupool agent listening on http://127.0.0.1:7071 (2 devices from nvidia-smi; control plane http://10.0.0.5:7070)
Logs are JSON lines on stderr. SIGINT / SIGTERM stop it; active leases and their processes are left
running and each one is logged: the next start (same --state-file) stops them at their deadlines.
/allow accepts only a pid the calling app could signal itself (--pid-check). Operator guide: docs/agent.md.
Exit codes: 0 after a clean stop, 2 for bad flags, configuration or device discovery, 1 when it cannot start.`,
    )
    .action(async (flags: AgentFlags, cmd: Command) => {
      const given = (name: string) => {
        const source = cmd.getOptionValueSource(name);
        return source === "cli" || source === "env";
      };
      const agentPkg = await import("@gpupool/agent");
      let file: AgentFileConfig = {};
      if (flags.config !== undefined && flags.config.trim() !== "") {
        try {
          file = agentPkg.readAgentConfigFile(flags.config);
        } catch (e) {
          if (e instanceof agentPkg.AgentConfigError)
            throw new UsageError(`${e.message}\nNothing was started: fix the configuration, then start again.`);
          throw e;
        }
      }
      const nodeKey = flags.nodeKey?.trim();
      if (!nodeKey)
        throw new UsageError(
          "a node key is required: pass --node-key or set GPUPOOL_NODE_KEY (an admin creates one with POST /v1/admin/nodes).",
        );
      const server = given("server") || file.server === undefined ? flags.server : parseUrlOrUsage(file.server);
      const listen = listenOf(given("listen") || file.listen === undefined ? flags.listen : file.listen);
      const source = given("devices") || file.devices === undefined ? flags.devices : file.devices;
      const graceMs = given("graceS") || file.graceMs === undefined ? Math.round(flags.graceS * 1000) : file.graceMs;
      const gpus =
        given("simulatedGpus") || file.simulatedGpus === undefined ? flags.simulatedGpus : file.simulatedGpus;
      const pidCheck = given("pidCheck") || file.pidCheck === undefined ? flags.pidCheck : file.pidCheck;
      const stateFile = flags.stateFile?.trim() || file.stateFile || agentPkg.defaultStateFile(nodeKey);

      let devices: NodeDevice[];
      try {
        if (source === "nvidia-smi") devices = await agentPkg.discoverWithNvidiaSmi(file.nvidiaSmi);
        else if (source === "simulated") devices = agentPkg.simulatedDevices(gpus, agentPkg.simulationSeed(nodeKey));
        else {
          if (file.gpus === undefined || file.gpus.length === 0)
            throw new agentPkg.DiscoveryError(
              "--devices config needs --config FILE with a list under agent.gpus (index, uuid, name, memory_mb, slots).",
            );
          devices = [...file.gpus];
        }
      } catch (e) {
        if (e instanceof agentPkg.DiscoveryError) throw new UsageError(`device discovery failed: ${e.message}`);
        throw e;
      }

      const log = pino(
        { level: file.logLevel ?? "info", base: { service: "gpupool-agent" } },
        pino.destination({ dest: 2, sync: true }),
      );
      log.info(
        {
          source,
          devices: devices.map((d) => ({
            index: d.index,
            uuid: d.uuid,
            name: d.name,
            memory_mb: d.memoryMb,
            slots: d.slots,
          })),
        },
        "devices discovered",
      );
      let agent: Awaited<ReturnType<typeof agentPkg.startAgent>>;
      try {
        agent = await agentPkg.startAgent({
          server,
          nodeKey,
          devices,
          host: listen.host,
          port: listen.port,
          graceMs,
          defaultAppKey: flags.appKey?.trim() || null,
          log,
          pidCheck,
          stateFile,
        });
      } catch (e) {
        if (e instanceof agentPkg.StateFileError) throw new StartError(e.message, "STATE_FILE");
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EADDRINUSE")
          throw new StartError(
            `${listen.host}:${listen.port} is already in use (another agent?); pick another address with --listen (port 0 picks a free one).`,
            code,
          );
        if (code === "EACCES")
          throw new StartError(
            `not allowed to listen on ${listen.host}:${listen.port}; pick a port above 1023 with --listen.`,
            code,
          );
        if (code === "EADDRNOTAVAIL" || code === "ENOTFOUND")
          throw new StartError(
            `cannot listen on ${listen.host}: it is not an address of this machine. Use --listen 127.0.0.1:7071.`,
            code,
          );
        throw e;
      }
      let closing = false;
      const stop = (signal: NodeJS.Signals) => {
        if (closing) {
          err(`${signal} again: exiting without waiting.`);
          process.exit(1);
        }
        closing = true;
        err(
          `${signal} received: stopping the agent (active leases and their processes are left running; see the log)…`,
        );
        agent.close().then(
          () => process.exit(0),
          () => process.exit(1),
        );
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
      out(
        `gpupool agent listening on ${agent.url} (${devices.length} device${devices.length === 1 ? "" : "s"} from ${source}; control plane ${server})`,
      );
      if (listen.host !== "127.0.0.1" && listen.host !== "::1" && listen.host !== "localhost") {
        err(
          `warning: the device API listens on ${listen.host}: anyone who can reach it and knows an app key can request GPUs and have processes of this host signalled. Keep it on 127.0.0.1 unless apps run elsewhere.`,
        );
      }
    });
}

function parseUrlOrUsage(value: string): string {
  try {
    return parseUrl(value);
  } catch (e) {
    throw new UsageError(`agent.server: ${e instanceof Error ? e.message : String(e)}`);
  }
}
