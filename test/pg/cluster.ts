import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

/**
 * A throwaway PostgreSQL cluster for the tests: initdb in a temp dir, listening on 127.0.0.1 on a
 * free port, its unix socket inside the dir, no fsync (nothing here must survive a power cut).
 */
export interface Cluster {
  readonly url: string;
  readonly dir: string;
  readonly binDir: string;
  /** Stops the server (every session ends), keeping the data, so `resume` brings it back on the same port (a no-op if it runs). */
  pause(): void;
  resume(): void;
  /** `pg_ctl restart -m <mode>`: every session ends (`immediate`: as in a crash, then recovery); back on the same port. */
  restart(mode: "fast" | "immediate"): void;
  /** Stops the server and deletes the cluster. */
  stop(): Promise<void>;
}

/** The directory holding initdb and pg_ctl: PATH first, then Debian's /usr/lib/postgresql/<newest>/bin. */
export function findPostgresBin(): string | null {
  const has = (dir: string) => existsSync(join(dir, "initdb")) && existsSync(join(dir, "pg_ctl"));
  for (const dir of (process.env["PATH"] ?? "").split(delimiter)) if (dir && has(dir)) return dir;
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const v of versions) if (has(join(root, v, "bin"))) return join(root, v, "bin");
  return null;
}

/** initdb refuses to run as root: then the cluster belongs to an unprivileged user (created if none fits). */
export function clusterUser(): { name: string; uid: number; gid: number } | null {
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

export function freePort(): Promise<number> {
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
 * `crashSafe`: commits are written to the WAL before they are acknowledged (synchronous_commit
 * on; fsync stays off, as the machine does not crash), so that `restart("immediate")`, which
 * throws away what PostgreSQL holds in memory, loses nothing a client was told was committed.
 */
export async function startCluster(binDir: string, opts: { crashSafe?: boolean } = {}): Promise<Cluster> {
  const user = clusterUser();
  const dir = mkdtempSync(join(tmpdir(), "gpupool-pg-"));
  const data = join(dir, "data");
  if (user) {
    chownSync(dir, user.uid, user.gid);
    chmodSync(dir, 0o700);
  }
  const run = (program: string, args: string[]): void => {
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
    run("initdb", ["-D", data, "-U", "gpupool", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]);
    let port = 0;
    const start = () => {
      const options = [
        "-c listen_addresses=127.0.0.1",
        `-c port=${port}`,
        `-c unix_socket_directories=${dir}`,
        "-c fsync=off",
        `-c synchronous_commit=${opts.crashSafe ? "on" : "off"}`,
        "-c full_page_writes=off",
        "-c max_connections=300",
      ].join(" ");
      run("pg_ctl", ["start", "-D", data, "-l", join(dir, "log"), "-w", "-t", "60", "-o", options]);
    };
    for (let attempt = 0; ; attempt++) {
      port = await freePort();
      try {
        start();
        break;
      } catch (err) {
        // Another process may have taken the port between the probe and the start.
        if (attempt >= 2) throw err;
      }
    }
    const stop = async () => {
      try {
        run("pg_ctl", ["stop", "-D", data, "-m", "immediate", "-w"]);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    };
    let running = true;
    const pause = () => {
      run("pg_ctl", ["stop", "-D", data, "-m", "fast", "-w"]);
      running = false;
    };
    const resume = () => {
      if (running) return;
      start();
      running = true;
    };
    // With -l, as at start: pg_ctl must not leave the server holding its own output pipe.
    const restart = (mode: "fast" | "immediate") =>
      run("pg_ctl", ["restart", "-D", data, "-m", mode, "-l", join(dir, "log"), "-w", "-t", "60"]);
    return { url: `postgres://gpupool@127.0.0.1:${port}/postgres`, dir, binDir, pause, resume, restart, stop };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
