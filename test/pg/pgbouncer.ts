import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { clusterUser, freePort } from "./cluster.js";

/** Debian's PgBouncer (`apt install pgbouncer`), or null. */
export function findPgBouncer(): string | null {
  for (const p of ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]) if (existsSync(p)) return p;
  return null;
}

/** gpupool's startup parameters PgBouncer does not track (as docs/upgrades.md lists them). */
export const IGNORED = [
  "search_path",
  "statement_timeout",
  "idle_in_transaction_session_timeout",
  "lock_timeout",
  "tcp_keepalives_idle",
  "tcp_keepalives_interval",
  "tcp_keepalives_count",
];

export interface PgBouncer {
  /** The URL a client gives (any user name: PgBouncer logs in to the server as the configured role). */
  readonly url: string;
  /** PgBouncer's own log so far (for a failing test's message). */
  log(): string;
  stop(): Promise<void>;
}

/**
 * A PgBouncer in front of `server` (a `postgres://…` URL of the test cluster), pooling in `mode`,
 * logging in to PostgreSQL as `role`. The startup parameters gpupool sets that PgBouncer does not
 * track are ignored (dropped), as docs/upgrades.md tells operators to configure it; the role then
 * carries those settings (ALTER ROLE … SET).
 */
export async function startPgBouncer(
  bin: string,
  server: string,
  role: string,
  mode: "session" | "transaction" | "statement",
  ignored: readonly string[] = IGNORED,
): Promise<PgBouncer> {
  const target = new URL(server);
  const dir = mkdtempSync(join(tmpdir(), "gpupool-pgbouncer-"));
  // PgBouncer will not run as root: as root, it runs as the test cluster's user.
  const user = clusterUser();
  const port = await freePort();
  const database = target.pathname.slice(1) || "postgres";
  writeFileSync(
    join(dir, "pgbouncer.ini"),
    [
      "[databases]",
      `gpupool = host=${target.hostname} port=${target.port} dbname=${database} user=${role}`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "auth_type = any",
      `pool_mode = ${mode}`,
      "default_pool_size = 60",
      "max_client_conn = 400",
      "server_reset_query = DISCARD ALL",
      `ignore_startup_parameters = ${ignored.join(",")}`,
      // The keepalives the leader's session asks PostgreSQL for, between the replica and PgBouncer.
      "tcp_keepalive = 1",
      "tcp_keepidle = 10",
      "tcp_keepintvl = 5",
      "tcp_keepcnt = 3",
      `logfile = ${join(dir, "pgbouncer.log")}`,
      "",
    ].join("\n"),
  );
  if (user) chownSync(dir, user.uid, user.gid);
  const args = [join(dir, "pgbouncer.ini")];
  const child: ChildProcess = user
    ? spawn("runuser", ["-u", user.name, "--", bin, ...args], { stdio: "ignore" })
    : spawn(bin, args, { stdio: "ignore" });
  const log = (): string => {
    try {
      return readFileSync(join(dir, "pgbouncer.log"), "utf8");
    } catch {
      return "";
    }
  };
  // Ready when it accepts connections (its log says "listening on").
  const end = Date.now() + 20_000;
  while (!/listening on/.test(log())) {
    if (child.exitCode !== null) throw new Error(`pgbouncer exited ${child.exitCode}: ${log()}`);
    if (Date.now() > end) throw new Error(`pgbouncer did not start: ${log()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `postgres://gpupool@127.0.0.1:${port}/gpupool`,
    log,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
