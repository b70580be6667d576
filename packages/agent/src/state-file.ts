import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import type { Logger } from "pino";
import { hashKey } from "./local-leases.js";
import type { LeasesSnapshot, LocalLease, ParkedSnapshot } from "./local-leases.js";
import { isAlive, processRef } from "./processes.js";
import type { ProcessRef } from "./processes.js";

/**
 * The agent's leases on disk, so that a restart (or a crash) does not end deadline enforcement:
 * at start the agent reloads them, re-arms their deadlines, signals at once those already past,
 * and /release still works. Kept: the allow token's SHA-256 (never the token), the app key's
 * SHA-256 and the key itself sealed with a key derived from the node key (to release the lease on
 * the app's behalf after a restart), each allowed pid with its start time (so a reused pid is
 * never signalled), the deadline (this host's clock), and the registration (docs/agent.md).
 * Written atomically (a temporary file renamed over the old one), mode 0600.
 */

/** The state file cannot be used; the agent does not start (exit code 2). */
export class StateFileError extends Error {
  override readonly name = "StateFileError";
}

interface SavedProcess {
  readonly pid: number;
  readonly start_time: string | null;
}

interface SavedLease {
  readonly token_sha256: string;
  readonly lease: string;
  readonly app: string | null;
  readonly app_key_sha256: string;
  readonly app_key_sealed: string | null;
  readonly device: { readonly index: number; readonly uuid: string; readonly name: string };
  readonly deadline_ms: number;
  readonly reuse_key: string | null;
  readonly cgroup_path: string | null;
  readonly schedule_uid: number | null;
  readonly used: boolean;
  readonly pids: readonly SavedProcess[];
}

interface SavedParked {
  readonly device: string;
  readonly reuse_key: string;
  readonly app: string | null;
  readonly pids: readonly SavedProcess[];
}

interface SavedState {
  readonly version: 1;
  /** /proc/sys/kernel/random/boot_id: after a reboot no saved pid names the same process. */
  readonly boot_id: string | null;
  readonly registration: string | null;
  readonly leases: readonly SavedLease[];
  readonly parked: readonly SavedParked[];
}

/** What a started agent takes over from the file. */
export interface LoadedState {
  readonly registration: string | null;
  readonly leases: LeasesSnapshot;
}

/**
 * Where an agent keeps its state unless told (`--state-file`): systemd's `$STATE_DIRECTORY`
 * (StateDirectory=), else `$XDG_STATE_HOME/gpupool`, else `~/.local/state/gpupool`; one file per
 * node, named after a hash of the node key (never the key).
 */
export function defaultStateFile(nodeKey: string, env: NodeJS.ProcessEnv = process.env): string {
  const systemd = env["STATE_DIRECTORY"]?.split(":")[0];
  const dir =
    systemd !== undefined && systemd !== ""
      ? systemd
      : join(env["XDG_STATE_HOME"] || join(homedir(), ".local", "state"), "gpupool");
  return join(dir, `agent-${createHash("sha256").update(nodeKey).digest("hex").slice(0, 12)}.json`);
}

function bootId(): string | null {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return null;
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: unknown): string | null => (typeof v === "string" ? v : null);
const int = (v: unknown): number | null => (typeof v === "number" && Number.isInteger(v) ? v : null);

export class StateFile {
  private readonly sealKey: Buffer;
  private readonly lockPath: string;
  private locked = false;
  private lastWriteError: string | null = null;

  constructor(
    readonly path: string,
    nodeKey: string,
    private readonly log: Logger,
  ) {
    this.sealKey = createHash("sha256").update(`gpupool-agent-state-v1\n${nodeKey}`).digest();
    this.lockPath = `${path}.lock`;
  }

  /** Takes the file for this agent (one agent per state file) and reads what it holds. */
  open(): LoadedState {
    try {
      mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    } catch (error) {
      throw new StateFileError(
        `cannot create the directory of the state file ${this.path}: ${(error as Error).message}. Pass --state-file with a writable path.`,
      );
    }
    this.lock();
    let text: string;
    try {
      text = readFileSync(this.path, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return this.fresh();
      throw new StateFileError(`cannot read the state file ${this.path}: ${(error as Error).message}.`);
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      raw = null;
    }
    if (!isRecord(raw) || raw["version"] !== 1 || !Array.isArray(raw["leases"]) || !Array.isArray(raw["parked"])) {
      const aside = `${this.path}.unreadable-${Date.now()}`;
      renameSync(this.path, aside);
      this.log.error(
        { state_file: this.path, moved_to: aside },
        "the agent's state file is not one it can read: moved it aside and started without the leases it held (the pool still expires them at their deadlines)",
      );
      return this.fresh();
    }
    const sameBoot = raw["boot_id"] === bootId();
    if (!sameBoot)
      this.log.warn(
        { state_file: this.path },
        "the host rebooted since the state file was written: its processes are gone, so no saved pid is signalled",
      );
    const pidsOf = (list: unknown, what: string): ProcessRef[] => {
      if (!sameBoot || !Array.isArray(list)) return [];
      const refs: ProcessRef[] = [];
      for (const p of list) {
        const pid = isRecord(p) ? int(p["pid"]) : null;
        const startTime = isRecord(p) ? str(p["start_time"]) : null;
        if (pid === null) continue;
        // Without a start time a reused pid cannot be told apart: never signal it.
        if (startTime === null)
          this.log.warn({ pid, what }, "a saved pid has no start time (no /proc): not signalled after the restart");
        else refs.push({ pid, startTime });
      }
      return refs;
    };
    const leases: (LocalLease & { tokenHash: string })[] = [];
    for (const l of raw["leases"] as unknown[]) {
      const lease = isRecord(l) ? this.decodeLease(l, pidsOf) : null;
      if (lease !== null) leases.push(lease);
    }
    const parked: ParkedSnapshot[] = [];
    for (const p of raw["parked"] as unknown[]) {
      if (!isRecord(p)) continue;
      const device = str(p["device"]);
      const reuseKey = str(p["reuse_key"]);
      const pids = pidsOf(p["pids"], "idle worker").filter(isAlive);
      if (device !== null && reuseKey !== null && pids.length > 0)
        parked.push({ device, reuseKey, app: str(p["app"]), pids });
    }
    return { registration: str(raw["registration"]), leases: { leases, parked } };
  }

  /** Writes the whole state (temporary file, fsync, rename). A failure is logged, not thrown. */
  save(registration: string | null, snapshot: LeasesSnapshot): void {
    const state: SavedState = {
      version: 1,
      boot_id: bootId(),
      registration,
      leases: snapshot.leases.map((l) => this.encodeLease(l)),
      parked: snapshot.parked.map((p) => ({
        device: p.device,
        reuse_key: p.reuseKey,
        app: p.app,
        pids: p.pids.map(savedProcess),
      })),
    };
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      const fd = openSync(tmp, "w", 0o600);
      try {
        writeSync(fd, `${JSON.stringify(state)}\n`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.path);
      if (this.lastWriteError !== null) this.log.info({ state_file: this.path }, "the state file is written again");
      this.lastWriteError = null;
    } catch (error) {
      const why = (error as Error).message;
      // Logged when it starts failing (or fails differently), not on every change.
      if (why !== this.lastWriteError) {
        this.log.error(
          { state_file: this.path, err: why },
          "cannot write the agent's state file: after a restart, leases granted since would not be enforced",
        );
      }
      this.lastWriteError = why;
    }
  }

  close(): void {
    if (!this.locked) return;
    try {
      unlinkSync(this.lockPath);
    } catch {
      // already gone
    }
    this.locked = false;
  }

  private fresh(): LoadedState {
    return { registration: null, leases: { leases: [], parked: [] } };
  }

  /** One agent per state file: a second one would overwrite the first one's leases. */
  private lock(): void {
    const mine = JSON.stringify(savedProcess(processRef(process.pid)));
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(this.lockPath, "wx", 0o600);
        writeSync(fd, mine);
        closeSync(fd);
        this.locked = true;
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST")
          throw new StateFileError(
            `cannot lock the state file ${this.path} (${this.lockPath}): ${(error as Error).message}. Pass --state-file with a writable path.`,
          );
      }
      let holder: unknown = null;
      try {
        holder = JSON.parse(readFileSync(this.lockPath, "utf8"));
      } catch {
        // unreadable: a crash while writing it; take it over
      }
      const pid = isRecord(holder) ? int(holder["pid"]) : null;
      if (
        pid !== null &&
        pid !== process.pid &&
        isAlive({ pid, startTime: isRecord(holder) ? str(holder["start_time"]) : null })
      ) {
        throw new StateFileError(
          `another agent (pid ${pid}) uses the state file ${this.path}. Two agents on one host need a node key each (POST /v1/admin/nodes) and a state file each (--state-file).`,
        );
      }
      // The agent that held it is gone (a crash): its lock is stale.
      try {
        unlinkSync(this.lockPath);
      } catch {
        // raced with another agent; the next attempt tells
      }
    }
    throw new StateFileError(`cannot lock the state file ${this.path}: another agent keeps taking ${this.lockPath}.`);
  }

  private encodeLease(l: LocalLease & { tokenHash: string }): SavedLease {
    return {
      token_sha256: l.tokenHash,
      lease: l.leaseId,
      app: l.app,
      app_key_sha256: l.appKeyHash.toString("hex"),
      app_key_sealed: l.appKey === null ? null : this.seal(l.appKey),
      device: { index: l.device.index, uuid: l.device.uuid, name: l.device.name },
      deadline_ms: l.deadlineAt,
      reuse_key: l.reuseKey,
      cgroup_path: l.cgroupPath,
      schedule_uid: l.scheduleUid,
      used: l.used,
      pids: [...l.pids.values()].map(savedProcess),
    };
  }

  private decodeLease(
    l: Record<string, unknown>,
    pidsOf: (list: unknown, what: string) => ProcessRef[],
  ): (LocalLease & { tokenHash: string }) | null {
    const tokenHash = str(l["token_sha256"]);
    const leaseId = str(l["lease"]);
    const keyHash = str(l["app_key_sha256"]);
    const deadlineAt = int(l["deadline_ms"]);
    const d = isRecord(l["device"]) ? l["device"] : null;
    const index = d === null ? null : int(d["index"]);
    const uuid = d === null ? null : str(d["uuid"]);
    if (
      tokenHash === null ||
      !/^[0-9a-f]{64}$/.test(tokenHash) ||
      leaseId === null ||
      keyHash === null ||
      !/^[0-9a-f]{64}$/.test(keyHash) ||
      deadlineAt === null ||
      index === null ||
      uuid === null
    ) {
      this.log.warn({ state_file: this.path }, "skipped a saved lease the agent cannot read");
      return null;
    }
    const sealed = str(l["app_key_sealed"]);
    let appKey = sealed === null ? null : this.unseal(sealed);
    if (appKey !== null && !hashKey(appKey).equals(Buffer.from(keyHash, "hex"))) appKey = null;
    if (sealed !== null && appKey === null) {
      this.log.warn(
        { lease: leaseId },
        "cannot unseal the app key of a saved lease (another node key?): it is enforced, but released on the pool only when its app calls /release",
      );
    }
    return {
      tokenHash,
      leaseId,
      app: str(l["app"]),
      appKey,
      appKeyHash: Buffer.from(keyHash, "hex"),
      device: { index, uuid, name: (d !== null ? str(d["name"]) : null) ?? "" },
      deadlineAt,
      reuseKey: str(l["reuse_key"]),
      cgroupPath: str(l["cgroup_path"]),
      scheduleUid: int(l["schedule_uid"]),
      pids: new Map(pidsOf(l["pids"], `lease ${leaseId}`).map((r) => [r.pid, r])),
      used: l["used"] === true,
    };
  }

  /** AES-256-GCM under a key derived from the node key: the file alone does not reveal app keys. */
  private seal(secret: string): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.sealKey, iv);
    const body = Buffer.concat([cipher.update(secret, "utf8"), cipher.final()]);
    return Buffer.concat([iv, cipher.getAuthTag(), body]).toString("base64");
  }

  private unseal(sealed: string): string | null {
    try {
      const raw = Buffer.from(sealed, "base64");
      const decipher = createDecipheriv("aes-256-gcm", this.sealKey, raw.subarray(0, 12));
      decipher.setAuthTag(raw.subarray(12, 28));
      return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString("utf8");
    } catch {
      return null;
    }
  }
}

function savedProcess(r: ProcessRef): SavedProcess {
  return { pid: r.pid, start_time: r.startTime };
}
