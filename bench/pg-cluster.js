// A throwaway PostgreSQL cluster for the benchmarks: the same start logic as test/pg/cluster.ts
// (a .ts file, which Node 20 cannot import from plain JS), but durable: fsync and synchronous
// commit stay at PostgreSQL's defaults, because the benchmark measures durable admission.
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, dirname, join } from "node:path";

export const HOW_TO_GET_POSTGRES =
  "PostgreSQL is not installed here: no initdb and pg_ctl on PATH nor in /usr/lib/postgresql/<version>/bin.\n" +
  "Install it (Debian/Ubuntu: apt-get install postgresql; the server binaries land in /usr/lib/postgresql/<version>/bin),\n" +
  "or point the benchmark at a running server: GPUPOOL_BENCH_POSTGRES_URL=postgres://user:password@127.0.0.1:5432/db";

/** The directory holding initdb and pg_ctl: PATH first, then Debian's /usr/lib/postgresql/<newest>/bin. */
export function findPostgresBin() {
  const has = (dir) => existsSync(join(dir, "initdb")) && existsSync(join(dir, "pg_ctl"));
  for (const dir of (process.env.PATH ?? "").split(delimiter)) if (dir && has(dir)) return dir;
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const v of versions) if (has(join(root, v, "bin"))) return join(root, v, "bin");
  return null;
}

/**
 * Settings that load pg_stat_statements (statements per cycle, BEGIN and COMMIT included), when the
 * installation has it (Debian's postgresql package does); {} otherwise. Its view needs
 * `CREATE EXTENSION pg_stat_statements` in the database.
 */
export function statementCountingSettings(binDir) {
  // initdb may be a link (/usr/local/bin/initdb → /usr/lib/postgresql/15/bin/initdb): the library is beside the real one.
  const lib = join(dirname(dirname(realpathSync(join(binDir, "initdb")))), "lib", "pg_stat_statements.so");
  return existsSync(lib)
    ? { shared_preload_libraries: "pg_stat_statements", "pg_stat_statements.track_utility": "on" }
    : {};
}

/** initdb refuses to run as root: then the cluster belongs to an unprivileged user (created if none fits). */
function clusterUser() {
  if (process.getuid?.() !== 0) return null;
  for (const name of ["postgres", "gpupool-test", "nobody"]) {
    const r = spawnSync("id", ["-u", name], { encoding: "utf8" });
    if (r.status === 0) {
      const gid = Number(spawnSync("id", ["-g", name], { encoding: "utf8" }).stdout.trim());
      return { name, uid: Number(r.stdout.trim()), gid };
    }
  }
  execFileSync("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "gpupool-test"]);
  return clusterUser();
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * initdb in a temp dir, started on 127.0.0.1 on a free port. Resolves to { url, dir, stop }; stop()
 * shuts the server down and deletes the cluster. `settings` are extra server settings (name → value).
 */
export async function startCluster(binDir, settings = {}) {
  const user = clusterUser();
  const dir = mkdtempSync(join(tmpdir(), "gpupool-bench-pg-"));
  const data = join(dir, "data");
  if (user) {
    chownSync(dir, user.uid, user.gid);
    chmodSync(dir, 0o700);
  }
  const run = (program, args) => {
    const [cmd, argv] = user
      ? ["runuser", ["-u", user.name, "--", join(binDir, program), ...args]]
      : [join(binDir, program), args];
    const r = spawnSync(cmd, argv, { encoding: "utf8", cwd: dir, env: { ...process.env, LC_ALL: "C", LANG: "C" } });
    if (r.status !== 0) {
      const log = existsSync(join(dir, "log")) ? readFileSync(join(dir, "log"), "utf8").slice(-2_000) : "";
      throw new Error(
        `${program} failed (exit ${r.status ?? r.signal}): ${r.stderr || r.stdout}${r.error ? String(r.error) : ""}\n${log}`,
      );
    }
  };
  try {
    run("initdb", ["-D", data, "-U", "gpupool", "--auth=trust", "-E", "UTF8", "--locale=C"]);
    for (let attempt = 0; ; attempt++) {
      const port = await freePort();
      const options = [
        "-c listen_addresses=127.0.0.1",
        `-c port=${port}`,
        `-c unix_socket_directories=${dir}`,
        // Three replicas' pools and listeners plus the peer's pool, with room to spare.
        "-c max_connections=300",
        ...Object.entries(settings).map(([name, value]) => `-c ${name}=${value}`),
      ].join(" ");
      try {
        run("pg_ctl", ["start", "-D", data, "-l", join(dir, "log"), "-w", "-t", "60", "-o", options]);
        const stop = () => {
          try {
            run("pg_ctl", ["stop", "-D", data, "-m", "fast", "-w"]);
          } finally {
            rmSync(dir, { recursive: true, force: true });
          }
        };
        return { url: `postgres://gpupool@127.0.0.1:${port}/postgres`, dir, stop };
      } catch (err) {
        // Another process may have taken the port between the probe and the start.
        if (attempt >= 2) throw err;
      }
    }
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
