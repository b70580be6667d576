import { readFileSync } from "node:fs";

/**
 * A process the agent was allowed to signal. `startTime` (Linux: field 22 of /proc/<pid>/stat,
 * clock ticks since boot) pins the pid to the process it named when it was allowed: pids are
 * reused, and a deadline must never signal a stranger that inherited the number.
 */
export interface ProcessRef {
  readonly pid: number;
  readonly startTime: string | null;
}

export type Probe =
  { readonly kind: "alive"; readonly ref: ProcessRef } | { readonly kind: "missing" } | { readonly kind: "forbidden" };

/** The highest pid Linux can hand out (pid_max is at most 2^22). */
export const MAX_PID = 4_194_304;

/** State and start time from /proc/<pid>/stat, or null where there is no /proc (macOS) or no such process. */
function procStat(pid: number): { state: string; startTime: string } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const state = fields[0];
  const startTime = fields[19];
  return state !== undefined && startTime !== undefined ? { state, startTime } : null;
}

function errno(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException).code;
}

/** Whether `pid` names a live process, and whether this agent may signal it. */
export function probe(pid: number): Probe {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return errno(error) === "EPERM" ? { kind: "forbidden" } : { kind: "missing" };
  }
  const stat = procStat(pid);
  // A zombie has exited; it only waits for its parent to collect it.
  if (stat?.state === "Z") return { kind: "missing" };
  return { kind: "alive", ref: { pid, startTime: stat?.startTime ?? null } };
}

/** The process `pid` names now (its start time pins it: see ProcessRef). */
export function processRef(pid: number): ProcessRef {
  return { pid, startTime: procStat(pid)?.startTime ?? null };
}

/**
 * Whether the process is still the one that was allowed. Apps are not the agent's children, so
 * there is no exit event to wait for: a signal-0 probe on a short interval is the portable way.
 */
export function isAlive(ref: ProcessRef): boolean {
  const now = probe(ref.pid);
  if (now.kind === "forbidden") return true; // it exists; permission is checked at /allow
  if (now.kind === "missing") return false;
  return ref.startTime === null || now.ref.startTime === null || now.ref.startTime === ref.startTime;
}

/** Sends `signal` if the process is still the allowed one; false when it was already gone. */
export function signalProcess(ref: ProcessRef, signal: NodeJS.Signals): boolean {
  if (!isAlive(ref)) return false;
  try {
    process.kill(ref.pid, signal);
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export interface TerminateResult {
  readonly terminated: number[];
  readonly killed: number[];
  /** Still there after SIGKILL (uninterruptible sleep in the driver, usually): worth an operator's look. */
  readonly survivors: number[];
}

/**
 * SIGTERM to each live process, then SIGKILL to those still there after `graceMs`. Resolves
 * once all are gone (or `killWaitMs` after the SIGKILL).
 */
export async function terminate(
  refs: readonly ProcessRef[],
  graceMs: number,
  killWaitMs = 2_000,
  pollMs = 50,
): Promise<TerminateResult> {
  const terminated = refs.filter((r) => signalProcess(r, "SIGTERM")).map((r) => r.pid);
  const until = Date.now() + graceMs;
  let left = refs.filter(isAlive);
  while (left.length > 0 && Date.now() < until) {
    await sleep(pollMs);
    left = left.filter(isAlive);
  }
  const killed = left.filter((r) => signalProcess(r, "SIGKILL")).map((r) => r.pid);
  const killWait = Date.now() + killWaitMs;
  while (left.length > 0 && Date.now() < killWait) {
    await sleep(pollMs);
    left = left.filter(isAlive);
  }
  return { terminated, killed, survivors: left.map((r) => r.pid) };
}
