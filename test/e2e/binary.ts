import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { inject } from "vitest";
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { fileURLToPath } from "node:url";
import { checkAnswersOf } from "./contract-fetch.js";

export const BIN = fileURLToPath(new URL("../../packages/cli/bin/gpupool.js", import.meta.url));

export interface ServerProcess {
  readonly url: string;
  readonly child: ChildProcessWithoutNullStreams;
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * The storage URL for a test's database file: `sqlite:<file>`, or, with
 * GPUPOOL_TEST_STORAGE=postgres, a PostgreSQL schema of its own named after the file (so a
 * restarted server finds the same data).
 */
export function testStorage(file: string): string {
  if (process.env["GPUPOOL_TEST_STORAGE"] !== "postgres") return `sqlite:${file}`;
  const base = inject("pgUrl");
  if (!base) throw new Error("GPUPOOL_TEST_STORAGE=postgres, but this run has no PostgreSQL server");
  const schema = `${inject("pgSchemaPrefix")}e2e_${createHash("sha256").update(file).digest("hex").slice(0, 12)}`;
  return `${base}${base.includes("?") ? "&" : "?"}schema=${schema}`;
}

/** Starts the real `gpupool server` binary on port 0 and waits (up to `timeoutMs`) for its listening line. */
export async function startServerBinary(
  args: string[],
  env: Record<string, string> = {},
  // Generous: on a loaded 2-core machine a server has taken over 15 s to start.
  timeoutMs = 60_000,
): Promise<ServerProcess> {
  const server = await startBinary(
    ["server", "--port", "0", ...args],
    env,
    /listening on (http:\/\/[^\s]+)/,
    timeoutMs,
  );
  // Its answers to this process are checked against the contract (see contract-fetch.ts).
  checkAnswersOf(server.url);
  return server;
}

/** Runs the CLI to completion. */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    // "close", not "exit": only then has all of its output been read ("exit" can come first).
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * Starts `gpupool <args>` and waits until its output matches `pattern`, whose first group is
 * returned as `url` (e.g. /listening on (http:\/\/\S+)/).
 */
export async function startBinary(
  args: string[],
  env: Record<string, string>,
  pattern: RegExp,
  // Generous: on a loaded 2-core machine a server has taken over 15 s to start.
  timeoutMs = 60_000,
): Promise<ServerProcess> {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      // Not left running behind the failed test.
      child.kill("SIGKILL");
      reject(new Error(`gpupool ${args[0] ?? ""} did not start:\n${out}`));
    }, timeoutMs);
    const check = () => {
      const m = pattern.exec(out);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout.on("data", check);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`gpupool ${args[0] ?? ""} exited with ${code}:\n${out}`));
    });
  });
  return {
    url,
    child,
    output: () => out,
    stop: (signal = "SIGTERM") =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
        child.once("exit", (code) => resolve(code));
        child.kill(signal);
      }),
  };
}

/**
 * One HTTP call to a server started here: JSON in and out, `Bearer token`, extra `headers`. The
 * body is null when the answer has none.
 */
export async function call(
  base: string,
  method: string,
  path: string,
  token: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any }> {
  const res = await fetch(base + path, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...headers,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}
