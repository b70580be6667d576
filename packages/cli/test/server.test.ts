import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cli, start, tempDir } from "./helpers.js";

const LISTENING = /^gpupool server listening on (http:\/\/127\.0\.0\.1:(\d+)) \(storage (\S+)\)$/m;

let tmp: { dir: string; remove(): void };
beforeAll(() => {
  tmp = tempDir();
});
afterAll(() => {
  tmp.remove();
});

describe("gpupool server", () => {
  it("--config with a bad file prints every problem with its field path and exits 2", async () => {
    const file = join(tmp.dir, "bad.yaml");
    writeFileSync(
      file,
      [
        "server: { port: -1, bogus: 1 }",
        "quota:",
        "  window: abc",
        "  tiers:",
        "    free: { quota: x }",
        "queue: { timeout: -5 }",
        "",
      ].join("\n"),
    );
    const r = await cli(["server", "--config", file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error \[invalid_config\]: .*bad\.yaml is not a valid gpupool configuration:/m);
    for (const path of ["server.port", "bogus", "quota.window", "quota.tiers.free.quota", "queue.timeout"]) {
      expect(r.stderr).toMatch(new RegExp(`^ {2}- .*${path.replace(/\./g, "\\.")}`, "m"));
    }
    expect(r.stdout).toBe("");
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it("reads GPUPOOL_CONFIG too, and reports a missing file as a configuration problem", async () => {
    const r = await cli(["server"], { GPUPOOL_CONFIG: join(tmp.dir, "missing.yaml") });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/missing\.yaml[\s\S]*cannot read the file: ENOENT/);
  });

  it("--port 0 prints the listening line with the real port, serves /healthz, and exits 0 on SIGTERM", async () => {
    const storage = `sqlite:${join(tmp.dir, "a.db")}`;
    const server = start(["server", "--port", "0", "--storage", storage], {
      GPUPOOL_ADMIN_TOKEN: "secret-admin-token-1234567890",
      // Where a collector would be (nothing listens: spans are dropped, calls unaffected).
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:secret-key@127.0.0.1:9/",
    });
    try {
      const match = await server.waitFor(LISTENING);
      expect(Number(match[2])).toBeGreaterThan(0);
      expect(match[3]).toBe(storage);
      const health = await fetch(`${match[1]}/healthz`);
      expect(await health.json()).toEqual({ status: "ok" });
      await server.waitFor(/^admin API enabled/m);
      // Said at start, without the endpoint's credentials.
      await server.waitFor(/^tracing: spans of each lease to http:\/\/127\.0\.0\.1:9\/v1\/traces as gpupool-server/m);
      const admin = await fetch(`${match[1]}/v1/admin/users`, {
        headers: { authorization: "Bearer secret-admin-token-1234567890" },
      });
      expect(admin.status).toBe(200);
    } finally {
      expect(await server.stop("SIGTERM")).toBe(0);
    }
    expect(server.stdout() + server.stderr()).not.toContain("secret-admin-token-1234567890");
    expect(server.stdout() + server.stderr()).not.toContain("secret-key");
  });

  it("flags override the file; without GPUPOOL_ADMIN_TOKEN the admin API is off; SIGINT exits 0", async () => {
    const file = join(tmp.dir, "good.yaml");
    writeFileSync(
      file,
      `server: { port: 1 }\nstorage: { url: "sqlite:${join(tmp.dir, "file.db")}" }\nquota: { window: 12h }\n`,
    );
    const storage = `sqlite:${join(tmp.dir, "flag.db")}`;
    const server = start(["server", "--config", file, "--port", "0", "--storage", storage]);
    try {
      const match = await server.waitFor(LISTENING);
      expect(match[3]).toBe(storage);
      await server.waitFor(/^admin API disabled: set GPUPOOL_ADMIN_TOKEN/m);
      await server.waitFor(/^tracing off/m);
      const admin = await fetch(`${match[1]}/v1/admin/users`, { headers: { authorization: "Bearer anything" } });
      expect(((await admin.json()) as { code: string }).code).toBe("admin_disabled");
    } finally {
      expect(await server.stop("SIGINT")).toBe(0);
    }
  });

  it("a port in use is a clear error naming the port, exit 1", async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const { port } = blocker.address() as AddressInfo;
    try {
      const r = await cli(["server", "--port", String(port), "--storage", `sqlite:${join(tmp.dir, "b.db")}`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^error: port ${port} on 127\\.0\\.0\\.1 is already in use`, "m"));
      expect(r.stderr).toMatch(/--port/);
      expect(r.stdout).toBe("");
    } finally {
      blocker.close();
    }
  });

  it("bad flag values are usage errors (exit 2)", async () => {
    const port = await cli(["server", "--port", "http"]);
    expect(port.code).toBe(2);
    expect(port.stderr).toMatch(/--port/);
    const storage = await cli(["server", "--storage", "mysql://db"]);
    expect(storage.code).toBe(2);
    expect(storage.stderr).toMatch(/sqlite:/);
  });
});

describe("gpupool (program)", () => {
  it("prints its version and help", async () => {
    const version = await cli(["--version"]);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const help = await cli(["--help"]);
    expect(help.code).toBe(0);
    for (const command of ["server", "demo", "quota", "diagnose", "leases", "pool", "admin"])
      expect(help.stdout).toMatch(new RegExp(`^ {2}${command}\\b`, "m"));
    expect(help.stdout).toMatch(/GPUPOOL_ADMIN_TOKEN/);
  });

  it("an unknown command or option is a usage error (exit 2)", async () => {
    expect((await cli(["frobnicate"])).code).toBe(2);
    expect((await cli(["quota", "--frobnicate"])).code).toBe(2);
  });
});
