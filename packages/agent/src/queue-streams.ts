import type { ServerResponse } from "node:http";
import type { Logger } from "pino";
import { EndedEvent, FailedEvent, GrantedEvent, PROBLEM_STATUS, QueuedEvent } from "@gpupool/contract";
import type { Lease } from "@gpupool/contract";
import { ControlPlaneRefusal, asProblem, decodeFromPool } from "./control-plane.js";
import type { ControlPlane, WireProblem } from "./control-plane.js";
import type { GrantJson } from "./device-answers.js";

export interface QueueStreamsOptions {
  readonly cp: ControlPlane;
  readonly log: Logger;
  /** How often a waiting client gets `event: ping` (besides one per change of place). */
  readonly pingIntervalMs: number;
  /** Records a granted lease locally and returns the grant for the client. */
  readonly grant: (lease: Lease, appKey: string) => Promise<GrantJson>;
  /** Gives a grant back when its client left before it could be told. */
  readonly abandon: (grant: GrantJson, appKey: string) => Promise<void>;
}

type Outcome =
  | { readonly kind: "granted"; readonly lease: Lease }
  | { readonly kind: "failed"; readonly problem: WireProblem }
  | { readonly kind: "none" };

interface Stream {
  readonly leaseId: string;
  readonly abort: AbortController;
  shutdown: string | null;
  done: Promise<void>;
}

/** Consecutive dropped event streams with no news in between before the wait is given up. */
const MAX_QUIET_RECONNECTS = 5;

function parse(data: string): unknown {
  try {
    return JSON.parse(data) as unknown;
  } catch {
    return null;
  }
}

function failedProblem(code: string, status: number, detail: string): WireProblem {
  return { code, status, detail, type: `urn:gpupool:problem:${code}`, title: code };
}

/** Why a lease ended before its grant: the problem it records (with its code's status), else `lease_ended`. */
function endedProblem(lease: Lease): WireProblem {
  const p = lease.problem;
  if (p !== null && p.detail !== null) return failedProblem(p.code, PROBLEM_STATUS[p.code], p.detail);
  return failedProblem(
    "lease_ended",
    409,
    `Lease ${lease.id} ended as "${lease.status}" before it was granted a GPU; nothing was charged for the wait.`,
  );
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });

/**
 * The waiting side of /schedule: a 200 `text/event-stream` that follows the lease's events on
 * the control plane and tells the client in the `spaces` format — `event: ping` while waiting,
 * then `event: succeeded` with the grant or `event: failed`. Each event is one `write`, hence one
 * HTTP chunk: the `spaces` client parses each chunk it reads as exactly one event.
 */
export class QueueStreams {
  private readonly open = new Set<Stream>();

  constructor(private readonly options: QueueStreamsOptions) {}

  /** Queued leases this agent is waiting on for its apps (the device API's /queue-size). */
  get size(): number {
    return this.open.size;
  }

  follow(res: ServerResponse, headers: Record<string, string>, appKey: string, lease: Lease): void {
    res.writeHead(200, {
      ...headers,
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache, no-transform",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    const stream: Stream = { leaseId: lease.id, abort: new AbortController(), shutdown: null, done: Promise.resolve() };
    this.open.add(stream);
    stream.done = this.run(stream, res, appKey, lease)
      .catch((error: unknown) =>
        this.options.log.error({ err: error, lease: lease.id }, "following a queued lease failed"),
      )
      .finally(() => this.open.delete(stream));
  }

  /** Ends every wait with `failed` and cancels its lease on the control plane (logged, one line each). */
  async closeAll(why: string): Promise<void> {
    const streams = [...this.open];
    for (const s of streams) {
      s.shutdown = why;
      s.abort.abort();
    }
    await Promise.all(streams.map((s) => s.done));
  }

  private async run(stream: Stream, res: ServerResponse, appKey: string, first: Lease): Promise<void> {
    const { cp, log } = this.options;
    let appGone = false;
    let finished = false;
    res.on("close", () => {
      if (finished) return;
      appGone = true;
      stream.abort.abort();
    });
    let place = { position: first.position, reason: first.reason ?? "node", eta_s: first.eta_s };
    const write = (event: string, data: string): void => {
      if (!res.destroyed && !res.writableEnded) res.write(`event: ${event}\ndata: ${data}\n\n`);
    };
    write("ping", JSON.stringify(place));
    const pinger = setInterval(() => write("ping", JSON.stringify(place)), this.options.pingIntervalMs);

    let outcome: Outcome = { kind: "none" };
    let quiet = 0;
    try {
      while (outcome.kind === "none" && !stream.abort.signal.aborted) {
        let progressed = false;
        try {
          for await (const ev of await cp.leaseEvents(appKey, first.id, stream.abort.signal)) {
            progressed = true;
            const data = parse(ev.data);
            if (ev.event === "queued") {
              const next = decodeFromPool(QueuedEvent, data, "a queued event");
              if (next.position !== place.position || next.reason !== place.reason) write("ping", JSON.stringify(next));
              place = next;
            } else if (ev.event === "granted") {
              outcome = { kind: "granted", lease: decodeFromPool(GrantedEvent, data, "a granted event").lease };
            } else if (ev.event === "failed") {
              // A problem's code may be one this agent does not know yet: pass on what it says.
              const failed = FailedEvent.safeParse(data);
              const raw =
                typeof data === "object" && data !== null ? (data as { problem?: unknown }).problem : undefined;
              outcome = {
                kind: "failed",
                problem: failed.success
                  ? failed.data.problem
                  : asProblem(raw, 409, `Lease ${first.id} failed while queued.`),
              };
            } else if (ev.event === "ended") {
              outcome = {
                kind: "failed",
                problem: endedProblem(decodeFromPool(EndedEvent, data, "an ended event").lease),
              };
            }
            if (outcome.kind !== "none") break;
          }
        } catch (error) {
          if (stream.abort.signal.aborted) break;
          if (error instanceof ControlPlaneRefusal) {
            outcome = { kind: "failed", problem: error.problem };
            break;
          }
          log.warn(
            { lease: first.id, err: error instanceof Error ? error.message : String(error) },
            "the lease's event stream dropped; asking the control plane for its state",
          );
        }
        if (outcome.kind !== "none" || stream.abort.signal.aborted) break;
        // The stream closed without an outcome (proxy timeout, control-plane restart): ask directly.
        quiet = progressed ? 0 : quiet + 1;
        try {
          const current = await cp.lease(appKey, first.id);
          if (current.status === "active") outcome = { kind: "granted", lease: current };
          else if (current.status !== "queued") outcome = { kind: "failed", problem: endedProblem(current) };
        } catch (error) {
          if (error instanceof ControlPlaneRefusal) outcome = { kind: "failed", problem: error.problem };
        }
        if (outcome.kind === "none" && quiet >= MAX_QUIET_RECONNECTS) {
          outcome = {
            kind: "failed",
            problem: failedProblem(
              "control_plane_unavailable",
              503,
              `Lost the control plane's event stream for lease ${first.id} ${quiet} times in a row; the request was cancelled. Try again.`,
            ),
          };
        }
        if (outcome.kind === "none") await sleep(Math.min(250 * 2 ** quiet, 4000), stream.abort.signal);
      }
    } finally {
      clearInterval(pinger);
    }

    if (outcome.kind === "none") {
      // The client left, or the agent is stopping: the queued lease must not be granted to nobody.
      // DELETE cancels a queued lease and releases one granted in the meantime.
      const why = stream.shutdown ?? "the client closed the connection while waiting";
      await cp.cancel(appKey, first.id).then(
        () => log.info({ lease: first.id }, `cancelled the queued lease: ${why}`),
        (error: unknown) =>
          log.warn(
            { lease: first.id, err: error instanceof Error ? error.message : String(error) },
            `could not cancel the queued lease (${why}); the pool's queue timeout will end it`,
          ),
      );
      if (stream.shutdown !== null)
        write(
          "failed",
          JSON.stringify(
            failedProblem(
              "control_plane_unavailable",
              503,
              `The GPU node's agent is stopping (${stream.shutdown}); the request was cancelled. Try again.`,
            ),
          ),
        );
      finished = true;
      res.end();
      return;
    }
    if (outcome.kind === "failed") {
      log.info({ lease: first.id, code: outcome.problem.code }, `queued lease failed: ${outcome.problem.detail}`);
      write(
        "failed",
        JSON.stringify({ code: outcome.problem.code, status: outcome.problem.status, detail: outcome.problem.detail }),
      );
      finished = true;
      res.end();
      return;
    }
    let grant: GrantJson;
    try {
      grant = await this.options.grant(outcome.lease, appKey);
    } catch (error) {
      const detail = error instanceof Error ? error.message : String(error);
      await cp.cancel(appKey, first.id).catch(() => undefined);
      write("failed", JSON.stringify({ code: "control_plane_unavailable", status: 503, detail }));
      finished = true;
      res.end();
      return;
    }
    if (appGone || res.destroyed) {
      log.info({ lease: first.id }, "the client left just as its lease was granted: releasing it");
      await this.options.abandon(grant, appKey);
      return;
    }
    finished = true;
    write("succeeded", JSON.stringify(grant));
    res.end();
  }
}
