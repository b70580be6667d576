import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startServerBinary } from "./binary.js";
import type { ServerProcess } from "./binary.js";

/**
 * Real `gpupool server` replicas for the e2e tests of several replicas on one PostgreSQL schema:
 * started one after another (the first leads, the others follow), each with the same YAML.
 * `stopAll` (in afterEach) kills what is running and removes the config directories.
 */
export class Replicas {
  readonly running: ServerProcess[] = [];
  private readonly dirs: string[] = [];

  constructor(private readonly adminToken: string) {}

  async start(n: number, yaml: readonly string[]): Promise<ServerProcess[]> {
    const dir = mkdtempSync(join(tmpdir(), "gpupool-replicas-"));
    this.dirs.push(dir);
    const config = join(dir, "gpupool.yaml");
    writeFileSync(config, yaml.join("\n"));
    const out: ServerProcess[] = [];
    for (let i = 0; i < n; i++) {
      const s = await startServerBinary(["--config", config], { GPUPOOL_ADMIN_TOKEN: this.adminToken });
      this.running.push(s);
      out.push(s);
    }
    return out;
  }

  /** Kill -9 of one replica (it no longer counts as running). */
  kill(s: ServerProcess): void {
    s.child.kill("SIGKILL");
    this.forget(s);
  }

  /** A replica the test stops itself: `stopAll` leaves it alone. */
  forget(s: ServerProcess): void {
    this.running.splice(this.running.indexOf(s), 1);
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.running.splice(0).map((s) => s.stop("SIGKILL")));
    for (const d of this.dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  }
}

/**
 * A replicas config on `storageUrl`: the app's own identity (no X-IP-Token) is anonymous, with
 * 50 s of quota = exactly 50 one-second calls.
 */
export function smallQuotaConfig(storageUrl: string): string[] {
  return [
    "storage:",
    `  url: "${storageUrl}"`,
    "quota:",
    "  tiers:",
    "    anonymous: { quota: 50s, priority: 1, max_duration: 120s }",
    "    pro: { quota: 25m, priority: 3, max_duration: 300s }",
    "log:",
    "  level: warn",
  ];
}

/** The replica that says it leads (`/readyz`), or null. */
export async function leaderOf(servers: readonly ServerProcess[]): Promise<ServerProcess | null> {
  for (const s of servers) {
    const r = await fetch(`${s.url}/readyz`)
      .then((x) => x.json() as Promise<{ leader?: boolean }>)
      .catch(() => null);
    if (r?.leader === true) return s;
  }
  return null;
}

/** Polls `check` until it gives a value; throws after `timeoutMs`. */
export async function until<T>(check: () => Promise<T | null | false>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
