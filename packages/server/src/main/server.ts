import { createRequire } from "node:module";
import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { systemClock } from "../clock.js";
import type { ServerConfig } from "../config.js";
import { buildHttpApp } from "../http/app.js";
import type { RouteContext } from "../http/context.js";
import { IpTokens } from "../identity/ip-tokens.js";
import type { Replica } from "../replication/replica.js";
import { openStorage } from "../storage/open-store.js";
import type { Storage, Store } from "../storage/store.js";
import { UsageLedger } from "../use-cases/accounts/usage-ledger.js";
import { Billing } from "../use-cases/accounts/billing.js";
import { RefusalLog } from "../use-cases/accounts/refusals.js";
import { QuotaQueries } from "../use-cases/accounts/quota-queries.js";
import { Directory } from "../use-cases/admin/directory.js";
import { AuditLog } from "../use-cases/admin/audit.js";
import { DashboardViews } from "../use-cases/admin/dashboard-views.js";
import { PoolViewer } from "../use-cases/admin/pool-view.js";
import { Health } from "../use-cases/health.js";
import { Callers } from "../use-cases/identity/callers.js";
import { RequestIdentity } from "../use-cases/identity/request-identity.js";
import { DashboardSessions } from "../use-cases/identity/dashboard-sessions.js";
import { Sessions } from "../use-cases/identity/sessions.js";
import { TokenIssuer } from "../use-cases/identity/token-issuer.js";
import { Diagnose } from "../use-cases/leases/diagnose.js";
import { forgetExpiredKeys } from "../use-cases/leases/idempotency.js";
import { LeaseRequests } from "../use-cases/leases/lease-requests.js";
import { Retention } from "../use-cases/maintenance/retention.js";
import { NodeAgents } from "../use-cases/nodes/node-agents.js";
import { RequestSpans } from "./http-tracing.js";
import { LeaseSpans } from "./lease-spans.js";
import { assemblePool } from "./pool.js";
import { startTracing } from "./tracing.js";

/**
 * What a log line must never carry: bearer tokens, the dashboard's session cookie (the request's
 * and the one a sign-in sets). Give it to the logger a server is handed, too (`pino({ redact })`).
 */
export const LOG_REDACT = {
  paths: [
    "req.headers.authorization",
    "req.headers.cookie",
    'req.headers["x-csrf-token"]',
    'res.headers["set-cookie"]',
    "headers.authorization",
    "headers.cookie",
  ],
  censor: "[redacted]",
};

export interface ServerOptions {
  readonly adminToken?: string | null;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Use this storage instead of opening `config.storage.url` (tests); the caller closes it. */
  readonly storage?: Storage;
  /**
   * Restore the pool's state only once `listen()` has bound the port (what `gpupool server` does):
   * a server whose port is taken then fails before it recovers anything. Until the state is
   * restored, every request but /healthz is answered 503 `storage_unavailable`, reason `starting`.
   * Without it, the state is restored before createServer returns.
   */
  readonly bindFirst?: boolean;
}

export interface RunningServer {
  readonly app: FastifyInstance;
  /** For tests and tools that look behind the API. */
  readonly context: {
    readonly config: ServerConfig;
    readonly store: Store;
    readonly replica: Replica;
    readonly retention: Retention;
  };
  /** Set once listening. */
  url: string;
  listen(): Promise<string>;
  close(): Promise<void>;
}

/**
 * The composition root: opens the storage, restores the signing key and the pool's state (this
 * replica leads, or follows), and wires the use cases into the HTTP app. Nothing is read from
 * the environment here; the CLI passes it in.
 */
/** This package's version, for the spans' resource. */
const VERSION = (createRequire(import.meta.url)("../../package.json") as { version: string }).version;
/** How often refusals counted in memory are written (see RefusalLog). */
const REFUSAL_FLUSH_MS = 5_000;
/** How often expired Idempotency-Keys are deleted. */
const KEY_SWEEP_MS = 3_600_000;
/** The retention job's first run after start (then every `retention.interval`). */
const RETENTION_FIRST_MS = 60_000;

export async function createServer(config: ServerConfig, options: ServerOptions = {}): Promise<RunningServer> {
  const log = options.logger ?? pino({ level: config.logLevel, base: { service: "gpupool" }, redact: LOG_REDACT });
  const clock = options.clock ?? systemClock;
  const storage = options.storage ?? (await openStorage(config.storage.url));
  const { store } = storage;
  const { policy } = config;
  // Off (nothing started, no hooks) unless an OTLP endpoint is configured.
  const tracing = startTracing(config.tracing, VERSION);
  const requestSpans = tracing === null ? null : new RequestSpans(tracing);
  const pool = assemblePool(config, storage, {
    clock,
    log,
    ...(tracing === null ? {} : { tracing: new LeaseSpans(tracing) }),
  });
  const { replica, state, accounts, events, metrics } = pool;
  // What the store does on its own (PostgreSQL's follower groups) goes to this log and registry.
  store.observe?.({ log, registry: metrics.registry });
  const ipTokens = await IpTokens.open(store, config.identity.issuer, config.identity.ipTokenTtlMs, clock.now());
  const health = new Health(store, () => replica.isLeader, state);
  let starting: Promise<void> | null = null;
  const start = (): Promise<void> => (starting ??= replica.start().then(() => health.started()));
  if (!options.bindFirst) await start();
  const callers = new Callers(store, options.adminToken ?? null, clock);
  const identity = new RequestIdentity(ipTokens, clock);
  const leading = () => replica.isLeader;
  const refusals = new RefusalLog(store, log);
  const refusalTick = setInterval(() => void refusals.flush(), REFUSAL_FLUSH_MS);
  refusalTick.unref();
  const forgetKeys = (): Promise<unknown> =>
    forgetExpiredKeys(store, clock.now()).catch((err: unknown) =>
      log.warn({ err }, "expired Idempotency-Keys could not be deleted; trying again later"),
    );
  const keyTick = setInterval(() => void forgetKeys(), KEY_SWEEP_MS);
  keyTick.unref();
  // Deletes what has ended past its retention, on the leader only (see Retention).
  const retention = new Retention(store, config.retention, policy.windowMs, {
    leads: () => replica.isLeader,
    deleted: (table, rows) => metrics.retentionDeleted(table, rows),
    log,
  });
  const retain = (): void => {
    if (!replica.isLeader) return;
    retention
      .run(clock.now())
      .catch((err: unknown) => log.warn({ err }, "the retention job failed; trying again at its next run"));
  };
  const retentionFirst = setTimeout(retain, Math.min(RETENTION_FIRST_MS, config.retention.intervalMs));
  const retentionTick = setInterval(retain, config.retention.intervalMs);
  retentionFirst.unref();
  retentionTick.unref();
  const ctx: RouteContext = {
    config,
    policy,
    callers,
    leases: new LeaseRequests(replica, identity, callers, store, accounts, events, metrics, policy, clock, refusals),
    quota: new QuotaQueries(store, identity, accounts, clock),
    billing: new Billing(store, accounts, config.policy, clock),
    usage: new UsageLedger(store, clock, refusals),
    diagnose: new Diagnose(store, identity, accounts, replica, policy, clock),
    nodes: new NodeAgents(store, replica, config.pool.devices, clock),
    directory: new Directory(store, accounts, policy, clock, {
      callersChanged: () => callers.forgetCached(),
      appLimitChanged: (id, limit) => replica.appLimitChanged(id, limit),
    }),
    sessions: new Sessions(store, clock),
    dashboard: new DashboardSessions(store, callers, clock, config.dashboard.sessionTtlMs),
    tokens: new TokenIssuer(store, ipTokens, clock),
    pool: new PoolViewer(store, leading, state, config.pool.devices, config.nodes.heartbeatTimeoutMs, clock),
    views: new DashboardViews(store, leading, state, policy, clock, () => refusals.flush()),
    audit: new AuditLog(store),
    health,
    metrics,
    events,
    log,
    livePollMs: config.dashboard.livePollMs,
    ...(requestSpans === null ? {} : { traceOf: (req) => requestSpans.of(req) }),
  };
  const app = buildHttpApp(ctx);
  requestSpans?.install(app);
  const running: RunningServer = {
    app,
    context: { config, store, replica, retention },
    url: "",
    async listen() {
      const address = await app.listen({ host: config.server.host, port: config.server.port });
      running.url = address.replace("[::1]", "localhost");
      const port = app.server.address();
      if (port && typeof port === "object")
        running.url = `http://${config.server.host.includes(":") ? `[${config.server.host}]` : config.server.host}:${port.port}`;
      await start();
      return running.url;
    },
    async close() {
      pool.stop();
      events.shutdown();
      await app.close();
      clearInterval(refusalTick);
      clearInterval(keyTick);
      clearTimeout(retentionFirst);
      clearInterval(retentionTick);
      await retention.stop();
      await refusals.flush();
      // The last spans go before the process does.
      await tracing?.shutdown().catch((err: unknown) => log.warn({ err }, "the last spans could not be sent"));
      if (!options.storage) await storage.close();
    },
  };
  return running;
}
