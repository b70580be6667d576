import { randomUUID } from "node:crypto";
import { idempotencyKey } from "../../packages/server/src/use-cases/leases/idempotency.js";
import { startServerBinary } from "./binary.js";
import type { ServerProcess } from "./binary.js";

/**
 * Replicas (the real `gpupool server` binary) and a bounded mixed load against them, for the
 * PostgreSQL fault suite: every process exit that the test did not ask for is a crash, and every
 * 2xx the load saw is kept for the invariant checker (pg-invariants.ts), as is the Idempotency-Key
 * of every admission the client was told failed.
 */

export interface Reply {
  readonly status: number;
  readonly body: any;
}

/** A call with a deadline: a frozen (SIGSTOPped) or dead replica answers status 0. */
export async function call(
  base: string,
  method: string,
  path: string,
  token: string,
  body?: unknown,
  timeoutMs = 5_000,
  headers: Record<string, string> = {},
): Promise<Reply> {
  try {
    const res = await fetch(base + path, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
        ...headers,
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  } catch {
    return { status: 0, body: null };
  }
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` (every 100 ms) until it returns something truthy; throws after `timeoutMs`. */
export async function until<T>(what: string, check: () => Promise<T | null | false>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check().catch((err: unknown) => {
      if (err instanceof Error && err.message.startsWith("a replica crashed")) throw err;
      return null;
    });
    if (v) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(100);
  }
}

export interface Replica {
  readonly name: string;
  readonly process: ServerProcess;
  /** Set before the test stops it on purpose (kill -9, SIGTERM): its exit is then no crash. */
  expectedExit: boolean;
  /** True while SIGSTOPped: the load does not send it requests (they would only time out). */
  frozen: boolean;
}

/** A set of replicas on one config; exits nobody asked for are recorded as crashes. */
export class ReplicaSet {
  readonly live: Replica[] = [];
  readonly crashes: string[] = [];
  private started = 0;

  constructor(
    private readonly config: string,
    private readonly env: Record<string, string>,
  ) {}

  async start(): Promise<Replica> {
    const name = `r${this.started++}`;
    // Generous: several replicas start at once on a machine the test itself keeps busy.
    const process = await startServerBinary(["--config", this.config], this.env, 60_000);
    const replica: Replica = { name, process, expectedExit: false, frozen: false };
    process.child.once("exit", (code, signal) => {
      if (!replica.expectedExit)
        this.crashes.push(`${name} exited (${code ?? signal}) on its own:\n${process.output().slice(-3_000)}`);
    });
    this.live.push(replica);
    return replica;
  }

  /** Stops a replica on purpose and forgets it; resolves with its exit code. */
  async stop(replica: Replica, signal: NodeJS.Signals): Promise<number | null> {
    replica.expectedExit = true;
    this.live.splice(this.live.indexOf(replica), 1);
    if (replica.frozen) replica.process.child.kill("SIGCONT");
    return replica.process.stop(signal);
  }

  /** The replica whose /readyz says it leads, among those not frozen (null while none does). */
  async leader(): Promise<Replica | null> {
    const answers = await Promise.all(
      this.live
        .filter((r) => !r.frozen)
        .map(async (r) => ({ r, body: (await call(r.process.url, "GET", "/readyz", "", undefined, 2_000)).body })),
    );
    const leading = answers.filter((a) => a.body?.leader === true);
    return leading.length === 1 ? leading[0]!.r : null;
  }

  /** How many replicas (frozen ones excluded) say they lead right now. */
  async leaders(): Promise<number> {
    const answers = await Promise.all(
      this.live
        .filter((r) => !r.frozen)
        .map(async (r) => (await call(r.process.url, "GET", "/readyz", "", undefined, 2_000)).body?.leader === true),
    );
    return answers.filter(Boolean).length;
  }

  /** Waits until exactly one replica leads and every live one answers /readyz 200. */
  async settled(timeoutMs = 60_000): Promise<Replica> {
    return until(
      "one leader, every replica ready",
      async () => {
        // A replica that exited never gets ready: say why at once.
        if (this.crashes.length > 0) throw new Error(`a replica crashed:\n${this.crashes.join("\n")}`);
        const ready = await Promise.all(
          this.live.map(async (r) => (await call(r.process.url, "GET", "/readyz", "", undefined, 2_000)).status),
        );
        if (ready.some((s) => s !== 200)) return null;
        return this.leader();
      },
      timeoutMs,
    );
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.live].map((r) => this.stop(r, "SIGKILL")));
  }
}

/** A lease as the client was told of it (201/202 on admission, 200 on release or cancel). */
export interface Acknowledged {
  readonly id: string;
  /** Its status in the last 2xx the client saw for it. */
  status: string;
  /** What the release or cancel said it charged, in seconds (null until one was acknowledged). */
  charged: number | null;
  /** The Idempotency-Key it was admitted with, and the token that sent it (Load's admissions). */
  readonly key?: { readonly key: string; readonly token: string };
}

/** An admission the client was told failed: its answer, and the Idempotency-Key it was sent with. */
export interface ToldFailed {
  readonly key: string;
  readonly token: string;
  readonly status: number;
  readonly code: string | undefined;
  readonly reason: string | undefined;
}

/**
 * Whether an answer told the client the request failed: a 4xx, or a 5xx that does not say its
 * outcome is unknown. A call that got no answer (status 0: a dead or frozen replica, a cut
 * connection) and a 503 `outcome_unknown` may have made a lease; such a failure made none.
 */
export function toldFailure(r: Reply): boolean {
  return r.status >= 400 && r.body?.reason !== "outcome_unknown";
}

/**
 * The load's Idempotency-Keys as the server stores them (idempotency_keys.scope_key), for a load
 * whose callers are users calling for themselves (`userOf`: a token's user id): `toldFailed`, each
 * with what the client was told; `made`, each with the lease the client was told of.
 */
export function scopedKeys(
  load: { readonly toldFailed: readonly ToldFailed[]; readonly acked: ReadonlyMap<string, Acknowledged> },
  userOf: (token: string) => string,
): { toldFailed: Map<string, string>; made: Map<string, string> } {
  const request = { durationMs: 0, size: "", queue: true, node: null };
  const scoped = (k: { key: string; token: string }): string => {
    const user = { kind: "user" as const, id: userOf(k.token) };
    return idempotencyKey(k.key, user, user, request)!.scopeKey;
  };
  return {
    toldFailed: new Map(
      load.toldFailed.map((f) => {
        const said = `${f.status} ${f.code ?? ""}${f.reason === undefined ? "" : ` (${f.reason})`}`;
        return [scoped(f), `${said}, key ${f.key}`];
      }),
    ),
    made: new Map([...load.acked.values()].flatMap((a) => (a.key === undefined ? [] : [[scoped(a.key), a.id]]))),
  };
}

/**
 * A bounded mixed load: `workers` loops, each admitting a short lease for one of `tokens` through a
 * random live replica, then releasing it, cancelling it, or leaving it to expire (or to time out in
 * the queue). Paced so that the pool of a few slots stays full and some calls queue. Every
 * admission carries an Idempotency-Key of its own; those of the admissions told they failed are
 * kept (`toldFailed`), for the checker to find that none made a lease.
 */
export class Load {
  readonly acked = new Map<string, Acknowledged>();
  readonly toldFailed: ToldFailed[] = [];
  readonly statuses = new Map<number, number>();
  requests = 0;
  private running = false;
  private loops: Promise<void>[] = [];

  constructor(
    private readonly replicas: ReplicaSet,
    private readonly tokens: readonly string[],
    private readonly workers = 8,
  ) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loops = Array.from({ length: this.workers }, (_, i) => this.loop(i));
  }

  /** Stops sending and waits for the calls in flight (their answers are recorded). */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  private pick(): string | null {
    const live = this.replicas.live.filter((r) => !r.frozen);
    if (live.length === 0) return null;
    return live[Math.floor(Math.random() * live.length)]!.process.url;
  }

  private async send(
    method: string,
    path: string,
    token: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<Reply> {
    const base = this.pick();
    if (base === null) return { status: 0, body: null };
    this.requests++;
    const r = await call(base, method, path, token, body, 5_000, headers);
    this.statuses.set(r.status, (this.statuses.get(r.status) ?? 0) + 1);
    return r;
  }

  private async loop(worker: number): Promise<void> {
    for (let n = 0; this.running; n++) {
      const token = this.tokens[(worker + n) % this.tokens.length]!;
      const key = randomUUID();
      const admitted = await this.send(
        "POST",
        "/v1/leases",
        token,
        { duration: 1 + (n % 3) },
        { "idempotency-key": key },
      );
      if (toldFailure(admitted)) {
        const b = admitted.body as { code?: string; reason?: string } | null;
        this.toldFailed.push({ key, token, status: admitted.status, code: b?.code, reason: b?.reason });
      }
      if (admitted.status !== 201 && admitted.status !== 202) {
        await sleep(200);
        continue;
      }
      const id = admitted.body.id as string;
      this.acked.set(id, { id, status: admitted.body.status as string, charged: null, key: { key, token } });
      await sleep(100 + Math.random() * 500);
      const choice = Math.random();
      // Some leases are left alone: they expire at their deadline, or time out in the queue.
      if (choice < 0.2) continue;
      const queued = admitted.status === 202;
      const ended =
        queued && choice < 0.6
          ? await this.send("DELETE", `/v1/leases/${id}`, token)
          : await this.send("POST", `/v1/leases/${id}/release`, token);
      if (ended.status === 200 && typeof ended.body?.status === "string") {
        const seen = this.acked.get(id)!;
        seen.status = ended.body.status as string;
        seen.charged = typeof ended.body.charged === "number" ? (ended.body.charged as number) : null;
      }
    }
  }

  /** `{201: n, 202: n, …}`, for the log. */
  summary(): Record<string, number> {
    return Object.fromEntries([...this.statuses].sort((a, b) => a[0] - b[0]));
  }
}
