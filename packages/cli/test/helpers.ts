// Runs the built CLI as a real child process against a real server started in this process.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@gpupool/sdk";
import type { GpupoolClient } from "@gpupool/sdk";
import { createServer, normalizeConfig } from "@gpupool/server";
import type { RunningServer } from "@gpupool/server";
import { pino } from "pino";

export const ADMIN = "cli-test-admin-token-0123456789";
export const BIN = fileURLToPath(new URL("../bin/gpupool.js", import.meta.url));
const MAIN = fileURLToPath(new URL("../dist/main.js", import.meta.url));

export function tempDir(): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-cli-"));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface Pool {
  readonly url: string;
  readonly server: RunningServer;
  readonly admin: GpupoolClient;
  close(): Promise<void>;
}

/** A real control plane on a fresh SQLite file and a free port, with the admin API on. */
export async function startPool(raw: Record<string, unknown> = {}): Promise<Pool> {
  const tmp = tempDir();
  const config = normalizeConfig({ ...raw, server: { port: 0 }, storage: { url: `sqlite:${join(tmp.dir, "t.db")}` } });
  const server = await createServer(config, { adminToken: ADMIN, logger: pino({ level: "silent" }) });
  const url = await server.listen();
  return {
    url,
    server,
    admin: createClient({ url, adminToken: ADMIN }),
    async close() {
      await server.close();
      tmp.remove();
    },
  };
}

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Environment for the child: none of the caller's GPUPOOL_* settings leak in. */
function childEnv(env: Readonly<Record<string, string | undefined>>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith("GPUPOOL_")) base[key] = value;
  const merged: NodeJS.ProcessEnv = { ...base, TZ: "UTC" };
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined) delete merged[key];
    else merged[key] = value;
  }
  return merged;
}

function launch(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  cwd?: string,
): ChildProcess {
  if (!existsSync(MAIN))
    throw new Error(`The CLI is not built (${MAIN} is missing): run \`npx tsc -b\` in the repository root first.`);
  return spawn(process.execPath, [BIN, ...args], {
    env: childEnv(env),
    cwd: cwd ?? process.cwd(),
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** Runs `gpupool …` to completion (asynchronously: the server under test lives in this process). */
export function cli(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>> = {},
  cwd?: string,
): Promise<CliResult> {
  const child = launch(args, env, cwd);
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** A long-running `gpupool server` / `gpupool demo` child. */
export interface Running {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first stdout match of `pattern` (rejects if the process exits first). */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Sends `signal` and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function start(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>> = {},
  cwd?: string,
): Running {
  const child = launch(args, env, cwd);
  let stdout = "";
  let stderr = "";
  let exited = false;
  const exit = new Promise<number | null>((resolve) =>
    child.on("close", (code) => {
      exited = true;
      resolve(code);
    }),
  );
  const listeners = new Set<() => void>();
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
    for (const listener of listeners) listener();
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    waitFor(pattern, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = pattern.exec(stdout);
          if (match === null) return false;
          done();
          resolve(match);
          return true;
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`no ${pattern} in stdout within ${timeoutMs} ms:\n${stdout}\n${stderr}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        if (check()) return;
        listeners.add(check);
        void exit.then((code) => {
          if (!listeners.has(check)) return;
          done();
          reject(new Error(`exited with ${code} before ${pattern}:\n${stdout}\n${stderr}`));
        });
      });
    },
    async stop(signal = "SIGTERM") {
      if (!exited) child.kill(signal);
      return exit;
    },
  };
}
