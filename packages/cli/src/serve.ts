// What `gpupool server` and `gpupool demo` share: logging, starting, stopping.
import { LOG_REDACT, createServer } from "@gpupool/server";
import type { RunningServer, ServerConfig } from "@gpupool/server";
import { pino } from "pino";
import type { Logger } from "pino";
import { err, StartError } from "./common.js";

/** Logs go to stderr as JSON lines so stdout carries only what the CLI says to people (and tests parse). */
export function stderrLogger(level: string): Logger {
  return pino({ level, base: { service: "gpupool" }, redact: LOG_REDACT }, pino.destination({ dest: 2, sync: true }));
}

/** The storage URL without its password, for printing. */
export function redactStorage(url: string): string {
  return url.replace(/^(postgres(?:ql)?:\/\/[^:/@]+):[^@/]*@/, "$1:***@");
}

function listenMessage(code: string | undefined, host: string, port: number): string | null {
  if (code === "EADDRINUSE") {
    return `port ${port} on ${host} is already in use (another gpupool server?). Stop that process, or pick another port with --port (0 picks a free one).`;
  }
  if (code === "EACCES")
    return `not allowed to listen on port ${port} on ${host}; ports below 1024 need privileges. Pick another port with --port.`;
  if (code === "EADDRNOTAVAIL" || code === "ENOTFOUND") {
    return `cannot listen on host ${host}: it is not an address of this machine. Use --host 127.0.0.1 or 0.0.0.0.`;
  }
  return null;
}

/** Creates and starts a server; failures that a person can fix become a StartError. */
export async function startServer(
  config: ServerConfig,
  options: { adminToken: string | null; logger: Logger },
): Promise<RunningServer> {
  let running: RunningServer;
  try {
    // The port is bound before the pool's state is restored: a second server on a taken port
    // fails before it recovers anything.
    running = await createServer(config, { ...options, bindFirst: true });
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw new StartError(`cannot open storage ${redactStorage(config.storage.url)}: ${why}`, "storage");
  }
  try {
    await running.listen();
  } catch (error) {
    await running.close().catch(() => undefined);
    const code = (error as NodeJS.ErrnoException).code;
    const message = listenMessage(code, config.server.host, config.server.port);
    if (message !== null) throw new StartError(message, code);
    const why = error instanceof Error ? error.message : String(error);
    throw new StartError(
      `cannot restore the pool's state from ${redactStorage(config.storage.url)}: ${why}`,
      "storage",
    );
  }
  return running;
}

/**
 * Runs `close` on the first SIGINT/SIGTERM and exits 0 when it is done (1 if it failed);
 * a second signal exits at once.
 */
export function closeOnSignals(close: () => Promise<void>): void {
  let closing = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (closing) {
      err(`${signal} again: exiting without waiting.`);
      process.exit(1);
    }
    closing = true;
    err(`${signal} received: shutting down (press Ctrl-C again to force)…`);
    close().then(
      () => process.exit(0),
      (error: unknown) => {
        err(`error while shutting down: ${error instanceof Error ? error.message : String(error)}`);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
}
