import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { call } from "./binary.js";
import { lockfileFor } from "./packed-lockfile.js";
import type { Packed } from "./packed-lockfile.js";

const run = promisify(execFile);
const WORKSPACE = fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");
const TSC = join(WORKSPACE, "node_modules/typescript/bin/tsc");
const ADMIN = "packed-install-admin-token-0123456789";
/** Every package a user installs: the SDK, the `gpupool` command, and what they depend on. */
const PUBLISHED = ["contract", "core", "sdk", "dashboard", "server", "edge", "agent", "cli"];
/** Long enough for a loaded 2-core machine to pack and install eight packages; only catches a hang. */
const LIMIT_MS = 600_000;

/** The app a developer writes: it gets a GPU from the pool, runs on it, and says what it saw. */
const APP = `import { createClient } from "@gpupool/sdk";
import type { Lease } from "@gpupool/sdk";

const pool = createClient({ url: process.env["GPUPOOL_URL"]!, appKey: process.env["APP_KEY"]! });
const seen: { lease: Lease; gpus: string | undefined } = await pool.gpu({ duration: 30, size: "large" }, async ({ lease, device }) => ({
  lease,
  gpus: device.env().CUDA_VISIBLE_DEVICES,
}));
console.log(JSON.stringify({ id: seen.lease.id, status: seen.lease.status, gpus: seen.gpus }));
`;

const TSCONFIG = {
  compilerOptions: {
    target: "ES2022",
    module: "NodeNext",
    moduleResolution: "NodeNext",
    strict: true,
    noUncheckedIndexedAccess: true,
    skipLibCheck: false,
    types: ["node"],
    outDir: "dist",
  },
  include: ["app.ts"],
};

/** Starts the installed `gpupool server` and waits for its listening line. */
function startServer(dir: string): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(
    join(dir, "node_modules/.bin/gpupool"),
    ["server", "--port", "0", "--storage", `sqlite:${join(dir, "pool.db")}`],
    {
      cwd: dir,
      env: { PATH: process.env["PATH"] ?? "", HOME: dir, GPUPOOL_ADMIN_TOKEN: ADMIN },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/[^\s]+)/.exec(out);
      if (m?.[1]) resolve({ child, url: m[1], output: () => out });
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`the installed gpupool server exited with ${code}:\n${out}`)));
  });
}

describe.runIf(process.env["CI"] === "true")("the packed packages, installed outside the workspace", () => {
  const dir = realpathSync(mkdtempSync(join(tmpdir(), "gpupool-packed-")));
  let server: ChildProcess | undefined;

  afterAll(() => {
    server?.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });

  it(
    "install from their tarballs with no registry, type-check an app that calls gpu(), and serve it a lease from the installed gpupool binary",
    async () => {
      // npm pack, as `npm publish` would pack them (one npm process for all of them).
      const packs = join(dir, "packs");
      mkdirSync(packs);
      await run(
        "npm",
        ["pack", "--silent", "--pack-destination", packs, ...PUBLISHED.flatMap((p) => ["-w", `@gpupool/${p}`])],
        {
          cwd: WORKSPACE,
        },
      );
      const packed: Packed[] = PUBLISHED.map((p) => ({
        name: `@gpupool/${p}`,
        folder: `packages/${p}`,
        tarball: join(packs, `gpupool-${p}-0.1.0.tgz`),
      }));
      expect(readdirSync(packs).sort()).toEqual(packed.map((p) => p.tarball.slice(packs.length + 1)).sort());
      for (const p of packed) {
        const manifest = JSON.parse(readFileSync(join(WORKSPACE, p.folder, "package.json"), "utf8")) as Record<
          string,
          unknown
        >;
        expect(manifest["private"], p.name).toBeUndefined();
      }

      // A fresh project in the temp dir: the tarballs, plus @types/node for the app's own code.
      const app = join(dir, "app");
      mkdirSync(app);
      const { packageJson, lockfile } = lockfileFor(WORKSPACE, app, packed, ["@types/node"]);
      writeFileSync(join(app, "package.json"), JSON.stringify(packageJson, null, 2));
      writeFileSync(join(app, "package-lock.json"), JSON.stringify(lockfile, null, 2));
      // --offline: every tarball from the npm cache `npm ci` filled. --ignore-scripts: better-sqlite3
      // would compile SQLite from source (minutes here; a user's install downloads a prebuilt binary),
      // so its addon is copied from the workspace's build of the same version instead.
      const started = Date.now();
      await run("npm", ["ci", "--offline", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: app });
      const sqlite = (d: string) =>
        JSON.parse(readFileSync(join(d, "node_modules/better-sqlite3/package.json"), "utf8")).version as string;
      console.log(`npm ci of the packed packages took ${((Date.now() - started) / 1000).toFixed(1)} s`);
      expect(sqlite(app)).toBe(sqlite(WORKSPACE));
      mkdirSync(join(app, "node_modules/better-sqlite3/build/Release"), { recursive: true });
      copyFileSync(
        join(WORKSPACE, "node_modules/better-sqlite3/build/Release/better_sqlite3.node"),
        join(app, "node_modules/better-sqlite3/build/Release/better_sqlite3.node"),
      );
      // Installed copies, not links into the repository.
      for (const p of packed) expect(realpathSync(join(app, "node_modules", p.name)).startsWith(app)).toBe(true);

      // The app type-checks against the installed SDK's declarations (tsc emits it too, to run it).
      writeFileSync(join(app, "app.ts"), APP);
      writeFileSync(join(app, "tsconfig.json"), JSON.stringify(TSCONFIG, null, 2));
      await run(process.execPath, [TSC, "-p", app], { cwd: app }).catch((e: unknown) => {
        const stdout = (e as { stdout?: string }).stdout;
        throw new Error(`tsc failed on the app:\n${stdout ?? (e instanceof Error ? e.message : "")}`);
      });

      // The installed `gpupool` binary runs a server, with the dashboard that ships with it.
      const s = await startServer(app);
      server = s.child;
      const page = await fetch(`${s.url}/`, { headers: { accept: "text/html" } });
      const html = await page.text();
      expect(page.status).toBe(200);
      expect(html).toMatch(/<script[^>]+src="\/assets\//);

      const owner = await call(s.url, "POST", "/v1/admin/users", ADMIN, { name: "ada", tier: "pro" });
      expect(owner.status).toBe(201);
      const created = await call(s.url, "POST", "/v1/admin/apps", ADMIN, { name: "painter", owner: owner.body.id });
      expect(created.status).toBe(201);

      const { stdout } = await run(process.execPath, [join(app, "dist/app.js")], {
        cwd: app,
        env: { PATH: process.env["PATH"] ?? "", GPUPOOL_URL: s.url, APP_KEY: created.body.key },
      });
      const seen = JSON.parse(stdout.trim()) as { id: string; status: string; gpus?: string };
      expect(seen.status).toBe("active");
      expect(seen.gpus).toMatch(/^GPU-/);
      // gpu() released it when the function returned.
      const lease = await call(s.url, "GET", `/v1/leases/${seen.id}`, ADMIN);
      expect(lease.status).toBe(200);
      expect(lease.body.status).toBe("released");
    },
    LIMIT_MS,
  );
});
