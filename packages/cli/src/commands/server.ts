import type { ServerConfig } from "@gpupool/server";
import { InvalidArgumentError, Option } from "commander";
import type { Command } from "commander";
import { adminTokenFromEnv, err, out, parsePort } from "../common.js";

interface ServerFlags {
  readonly config?: string;
  readonly host?: string;
  readonly port?: number;
  readonly storage?: string;
}

export function parseStorage(value: string): string {
  if (!/^(sqlite:|postgres:\/\/|postgresql:\/\/)/.test(value)) {
    throw new InvalidArgumentError('write "sqlite:<path>" or "postgres://user:pass@host/db".');
  }
  return value;
}

/** Command-line flags win over the file, which wins over the defaults. */
export function applyFlags(config: ServerConfig, flags: ServerFlags): ServerConfig {
  return {
    ...config,
    server: {
      ...config.server,
      ...(flags.host !== undefined ? { host: flags.host } : {}),
      ...(flags.port !== undefined ? { port: flags.port } : {}),
    },
    storage: flags.storage !== undefined ? { url: flags.storage } : config.storage,
  };
}

export function registerServer(program: Command): void {
  program
    .command("server")
    .summary("run the control plane")
    .description(
      "Run the control plane: accounts, tokens, quota ledger, queue and scheduler, leases, admin API. " +
        "Configuration comes from --config (or GPUPOOL_CONFIG); every field has a default, so no file is needed. " +
        "The admin API (/v1/admin/*) is enabled only when GPUPOOL_ADMIN_TOKEN is set.",
    )
    .addOption(new Option("--config <file>", "YAML configuration file").env("GPUPOOL_CONFIG"))
    .option("--host <host>", "address to listen on (overrides server.host; default 127.0.0.1)")
    .option("--port <port>", "port to listen on, 0 for any free port (overrides server.port; default 7070)", parsePort)
    .option(
      "--storage <url>",
      'storage URL, "sqlite:./gpupool.db" or "postgres://…" (overrides storage.url)',
      parseStorage,
    )
    .addHelpText(
      "after",
      `
Environment:
  GPUPOOL_CONFIG        configuration file, when --config is not given
  GPUPOOL_ADMIN_TOKEN   enables the admin API with this bearer token (never printed)
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME
                        turn on OpenTelemetry traces (OTLP/HTTP) when the file's tracing: names no endpoint

Once listening it prints one line to stdout, e.g.
  gpupool server listening on http://127.0.0.1:7070 (storage sqlite:./gpupool.db)
Logs are JSON lines on stderr. SIGINT / SIGTERM close it gracefully.
Exit codes: 0 after a clean shutdown, 2 for an invalid configuration, 1 when it cannot start.`,
    )
    .action(async (flags: ServerFlags) => {
      // Loaded here, not at the top: the server package is heavy and other commands do not need it.
      const { loadConfig, withTracingEnvironment } = await import("@gpupool/server");
      const { closeOnSignals, redactStorage, startServer, stderrLogger } = await import("../serve.js");
      const file = flags.config === undefined || flags.config.trim() === "" ? undefined : flags.config;
      const loaded = applyFlags(await loadConfig(file), flags);
      // Tracing is off unless the file or the standard OTEL_EXPORTER_OTLP_* variables name an endpoint.
      const config = { ...loaded, tracing: withTracingEnvironment(loaded.tracing, process.env) };
      const adminToken = adminTokenFromEnv() ?? null;
      const running = await startServer(config, { adminToken, logger: stderrLogger(config.logLevel) });
      closeOnSignals(() => running.close());
      out(`gpupool server listening on ${running.url} (storage ${redactStorage(config.storage.url)})`);
      if (adminToken === null) out("admin API disabled: set GPUPOOL_ADMIN_TOKEN to enable /v1/admin/*");
      else {
        out("admin API enabled (bearer token from GPUPOOL_ADMIN_TOKEN)");
        if (adminToken.length < 16) err("warning: GPUPOOL_ADMIN_TOKEN is short; use at least 16 random characters.");
      }
      out(tracingLine(config.tracing));
    });
}

/** What the operator needs to know about tracing at start: off, or where spans go (no credentials). */
function tracingLine(t: { endpoint: string | null; sampleRatio: number; serviceName: string }): string {
  if (t.endpoint === null)
    return "tracing off (set tracing.otlp_endpoint or OTEL_EXPORTER_OTLP_ENDPOINT to send OpenTelemetry traces)";
  const u = new URL(t.endpoint);
  return `tracing: spans of each lease to ${u.origin}${u.pathname} as ${t.serviceName} (sample ratio ${t.sampleRatio})`;
}
