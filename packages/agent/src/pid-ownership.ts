import { readFileSync } from "node:fs";

/**
 * How /allow ties a pid to the app that asks for it (docs/agent.md, "Security"):
 * - `strict` (default): the caller's uid must be known and allowed to signal the pid itself
 *   (kill(2)'s rule), and a pid of a lease scheduled with a cgroupPath must be in that cgroup;
 * - `uid`: the uid rule only (apps in containers with a cgroup namespace of their own);
 * - `cgroup`: as strict, but when the caller's uid cannot be known (a container on a bridge
 *   network), a pid in the lease's cgroupPath is accepted — weaker: an app that can read another
 *   app's /proc/<pid>/cgroup can name that cgroup;
 * - `off`: no check (one trusted app per host).
 */
export type PidCheck = "strict" | "uid" | "cgroup" | "off";
export const PID_CHECKS: readonly PidCheck[] = ["strict", "uid", "cgroup", "off"];

/** What /proc says about a process: its uids and its cgroup as the `spaces` client computes it. */
export interface PidOwner {
  readonly uids: { readonly real: number; readonly effective: number; readonly saved: number } | null;
  readonly cgroupPath: string | null;
}

/** Who asked: the uid behind the /allow request and the one behind the lease's /schedule (null: unknown). */
export interface PidCaller {
  readonly allowUid: number | null;
  readonly scheduleUid: number | null;
  /** The cgroupPath the lease was scheduled with (the `spaces` client sends its own). */
  readonly cgroupPath: string | null;
}

export type PidReason = "pid_not_yours" | "pid_cgroup_mismatch" | "pid_unverified";
export type PidVerdict =
  { readonly ok: true } | { readonly ok: false; readonly reason: PidReason; readonly detail: string };

function readText(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

/**
 * The cgroup path of a /proc/<pid>/cgroup text, the way the `spaces` client computes its own
 * `cgroupPath` (spaces/zero/utils.py): the `devices` controller's path on cgroup v1 (hybrid hosts
 * included), else the `0::` line's path on cgroup v2. Null when neither is there.
 */
export function cgroupPathOf(text: string): string | null {
  const lines = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
  for (const line of lines) {
    const at = line.indexOf(":devices:");
    if (at >= 0) return line.slice(at + ":devices:".length);
  }
  const v2 = lines.find((l) => l.startsWith("0::"));
  return v2 === undefined ? null : v2.slice(3);
}

export function readPidOwner(pid: number, read: (path: string) => string | null = readText): PidOwner {
  const status = read(`/proc/${pid}/status`);
  const uidLine = status?.split("\n").find((l) => l.startsWith("Uid:"));
  const ids = uidLine?.slice(4).trim().split(/\s+/).map(Number) ?? [];
  const [real, effective, saved] = ids;
  const cgroup = read(`/proc/${pid}/cgroup`);
  return {
    uids:
      real !== undefined && effective !== undefined && saved !== undefined && ids.every(Number.isInteger)
        ? { real, effective, saved }
        : null,
    cgroupPath: cgroup === null ? null : cgroupPathOf(cgroup),
  };
}

/** kill(2): root may signal anyone; another user a process whose real or saved uid is theirs. */
function maySignal(uid: number, owner: NonNullable<PidOwner["uids"]>): boolean {
  return uid === 0 || uid === owner.real || uid === owner.saved;
}

const UNTRACED =
  "this request did not come over a connection the agent can trace to a user (it finds the caller's uid in /proc/net/tcp, for connections from its own host and network namespace, e.g. 127.0.0.1)";

/**
 * Whether the agent may take `pid` as the caller's: it never signals a process the caller could
 * not signal itself, so holding an app key gives no power over other users' processes.
 */
export function judgePid(mode: PidCheck, pid: number, owner: PidOwner, caller: PidCaller): PidVerdict {
  if (mode === "off") return { ok: true };
  const uids = [...new Set([caller.allowUid, caller.scheduleUid].filter((u): u is number => u !== null))];
  if (uids.length > 0 && owner.uids === null) {
    return {
      ok: false,
      reason: "pid_unverified",
      detail: `The agent cannot read the owner of pid ${pid} (/proc/${pid}/status), so it cannot tell that the process is the caller's.`,
    };
  }
  for (const uid of uids) {
    if (owner.uids !== null && !maySignal(uid, owner.uids)) {
      return {
        ok: false,
        reason: "pid_not_yours",
        detail: `pid ${pid} belongs to uid ${owner.uids.real}, and this lease's requests come from uid ${uid}: the agent only stops processes the caller could signal itself. Allow the process your app started for this call (its worker or child).`,
      };
    }
  }
  const checkCgroup = mode !== "uid" && caller.cgroupPath !== null;
  if (checkCgroup && owner.cgroupPath !== caller.cgroupPath) {
    if (owner.cgroupPath === null) {
      return {
        ok: false,
        reason: "pid_unverified",
        detail: `The agent cannot read the cgroup of pid ${pid} (/proc/${pid}/cgroup), so it cannot check it against the cgroupPath this lease was scheduled with.`,
      };
    }
    return {
      ok: false,
      reason: "pid_cgroup_mismatch",
      detail: `pid ${pid} is in cgroup ${owner.cgroupPath}, not in ${caller.cgroupPath}, the cgroupPath this lease was scheduled with: allow a process of the app that asked for the GPU. (An app in a container with a cgroup namespace of its own sees another path than the agent: run it with --cgroupns=host, or start the agent with --pid-check uid.)`,
    };
  }
  if (uids.length > 0) return { ok: true };
  if (mode === "cgroup" && checkCgroup) return { ok: true };
  return {
    ok: false,
    reason: "pid_unverified",
    detail:
      `Nothing ties pid ${pid} to the caller: ${UNTRACED}. Call the agent from the app's host at http://127.0.0.1:<port>/apps/<app-key>` +
      (mode === "cgroup"
        ? ", or send cgroupPath to /schedule (the spaces client does)."
        : "; for apps in containers on a bridge network, start the agent with --pid-check cgroup (the pid must then be in the cgroupPath sent to /schedule)."),
  };
}
