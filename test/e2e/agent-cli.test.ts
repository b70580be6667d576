import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startBinary } from "./binary.js";

/** `gpupool agent` as an operator meets it: every mistake is exit 2 with a sentence, never a stack. */

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "gpupool-agent-cli-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const KEY = { GPUPOOL_NODE_KEY: "gpu_n_cli-test-key" };

/** PATH with a fake nvidia-smi first: it prints `query` for the CSV query and nothing for -L. */
function fakeNvidiaSmi(query: string): string {
  const bin = mkdtempSync(join(dir, "bin-"));
  writeFileSync(join(bin, "query.txt"), query);
  const script = join(bin, "nvidia-smi");
  writeFileSync(script, `#!/bin/sh\ncase "$1" in\n  -L) exit 0 ;;\n  *) cat "${join(bin, "query.txt")}" ;;\nesac\n`);
  chmodSync(script, 0o755);
  return `${bin}${delimiter}${process.env["PATH"] ?? ""}`;
}

function noStack(stderr: string): void {
  expect(stderr).not.toMatch(/\n\s+at /);
}

describe("gpupool agent: bad flags, configuration and devices", () => {
  it("no node key → exit 2 saying how to get one", async () => {
    const r = await runCli(["agent", "--devices", "simulated"], { GPUPOOL_NODE_KEY: "" });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/a node key is required: pass --node-key or set GPUPOOL_NODE_KEY/);
    noStack(r.stderr);
  });

  it("an unknown device source, a bad grace, a bad listen address → exit 2", async () => {
    expect((await runCli(["agent", "--devices", "gpus"], KEY)).code).toBe(2);
    const grace = await runCli(["agent", "--devices", "simulated", "--grace-s", "-1"], KEY);
    expect(grace.code).toBe(2);
    expect(grace.stderr).toMatch(/--grace-s.*seconds from 0 to 600/);
    const listen = await runCli(["agent", "--devices", "simulated", "--listen", "localhost"], KEY);
    expect(listen.code).toBe(2);
    expect(listen.stderr).toMatch(/is not HOST:PORT/);
  });

  it("an invalid configuration file lists every problem → exit 2", async () => {
    const file = join(dir, "bad.yaml");
    writeFileSync(
      file,
      "agent:\n  devices: config\n  grace: soon\n  simulated_gpus: 1000\n  gpus:\n    - { index: 0, uuid: 'GPU 0', name: A100, memory_mb: 81920 }\n  listne: 127.0.0.1:7071\n",
    );
    const r = await runCli(["agent", "--config", file], KEY);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/is not a valid agent configuration/);
    for (const field of ["agent.grace", "agent.simulated_gpus", "agent.gpus.0.uuid", "listne"])
      expect(r.stderr).toContain(field);
    expect(r.stderr).toMatch(/Nothing was started/);
    noStack(r.stderr);
  });

  it("nvidia-smi printing a malformed line → exit 2 naming the line", async () => {
    const path = fakeNvidiaSmi("0, GPU-8f6c0b1e-2a3d-4c5b-9e7f-0123456789ab, NVIDIA A100-SXM4-80GB\n");
    const r = await runCli(["agent"], { ...KEY, PATH: path });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /device discovery failed: .*line 1 "0, GPU-8f6c0b1e-2a3d-4c5b-9e7f-0123456789ab, NVIDIA A100-SXM4-80GB" is malformed/,
    );
    noStack(r.stderr);
  });

  it("no nvidia-smi on PATH → exit 2 naming the alternatives", async () => {
    const r = await runCli(["agent"], { ...KEY, PATH: dir });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/nvidia-smi was not found on PATH.*--devices config.*--devices simulated/);
  });

  it("a device list from the config file; an unreachable control plane → it keeps trying and the device API answers 503 saying why", async () => {
    const file = join(dir, "ok.yaml");
    writeFileSync(
      file,
      "agent:\n  devices: config\n  listen: 127.0.0.1:0\n  server: http://127.0.0.1:9\n  gpus:\n    - { index: 0, uuid: GPU-8f6c0b1e-2a3d-4c5b-9e7f-0123456789ab, name: NVIDIA A100-SXM4-80GB, memory_mb: 81920 }\n",
    );
    const agent = await startBinary(
      ["agent", "--config", file],
      { ...KEY, GPUPOOL_AGENT_STATE_FILE: join(dir, "ok-state.json") },
      /listening on (http:\/\/\S+)/,
    );
    try {
      expect(agent.output()).toMatch(/\(1 device from config; control plane http:\/\/127\.0\.0\.1:9\)/);
      const r = await fetch(`${agent.url}/apps/gpu_a_x/schedule`, { method: "POST" });
      expect(r.status).toBe(503);
      expect(((await r.json()) as { detail: string }).detail).toMatch(
        /cannot reach the control plane at http:\/\/127\.0\.0\.1:9/,
      );
      expect(agent.output()).toMatch(/registration failed: cannot reach the control plane/);
    } finally {
      expect(await agent.stop()).toBe(0);
    }
  });

  it("a state file it cannot use, or one another running agent holds → exit 1 saying which and what to do", async () => {
    const notADirectory = join(dir, "a-file");
    writeFileSync(notADirectory, "");
    const bad = await runCli(
      [
        "agent",
        "--devices",
        "simulated",
        "--listen",
        "127.0.0.1:0",
        "--server",
        "http://127.0.0.1:9",
        "--state-file",
        join(notADirectory, "state.json"),
      ],
      KEY,
    );
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/cannot create the directory of the state file .*a-file\/state\.json.*--state-file/);
    noStack(bad.stderr);
    const state = join(dir, "shared-state.json");
    const first = await startBinary(
      [
        "agent",
        "--devices",
        "simulated",
        "--listen",
        "127.0.0.1:0",
        "--server",
        "http://127.0.0.1:9",
        "--state-file",
        state,
      ],
      KEY,
      /listening on (http:\/\/\S+)/,
    );
    try {
      const second = await runCli(
        [
          "agent",
          "--devices",
          "simulated",
          "--listen",
          "127.0.0.1:0",
          "--server",
          "http://127.0.0.1:9",
          "--state-file",
          state,
        ],
        KEY,
      );
      expect(second.code).toBe(1);
      expect(second.stderr).toMatch(
        new RegExp(
          `another agent \\(pid ${first.child.pid}\\) uses the state file .*shared-state\\.json.*a node key each`,
        ),
      );
      noStack(second.stderr);
    } finally {
      expect(await first.stop()).toBe(0);
    }
  });
});
