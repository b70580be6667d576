import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import type { Logger } from "pino";
import type { Clock } from "./clock.js";
import { systemClock } from "./clock.js";
import type { ServerConfig } from "./config.js";
import { LeaseEvents } from "./events.js";
import { buildHttpApp } from "./http/app.js";
import { CallerCache } from "./http/auth.js";
import type { ServerContext } from "./http/context.js";
import { IpTokens } from "./identity/ip-tokens.js";
import { Metrics } from "./metrics.js";
import { openStorage } from "./storage/open-store.js";
import type { Storage } from "./storage/store.js";
import { LeaseEngine } from "./use-cases/lease-engine.js";

export interface ServerOptions {
  readonly adminToken?: string | null;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** Use this storage instead of opening `config.storage.url` (tests); the caller closes it. */
  readonly storage?: Storage;
}

export interface RunningServer {
  readonly app: FastifyInstance;
  readonly context: ServerContext;
  /** Set once listening. */
  url: string;
  listen(): Promise<string>;
  close(): Promise<void>;
}

/**
 * The composition root: opens the storage, restores the signing key and the lease state, and
 * wires the HTTP app. Nothing is read from the environment here; the CLI passes it in.
 */
export async function createServer(config: ServerConfig, options: ServerOptions = {}): Promise<RunningServer> {
  const log = options.logger ?? pino({ level: config.logLevel, base: { service: "gpupool" } });
  const clock = options.clock ?? systemClock;
  const storage = options.storage ?? (await openStorage(config.storage.url));
  const store = storage.store;
  const events = new LeaseEvents();
  let engine: LeaseEngine | null = null;
  const metrics = new Metrics({
    queueDepth: () => engine?.queueDepth ?? 0,
    busySlots: () => engine?.busySlots ?? 0,
    totalSlots: () => engine?.totalSlots ?? 0,
    activeLeases: () => engine?.activeLeases ?? 0,
  });
  engine = new LeaseEngine(store, storage.coordination, config.policy, config.pool.devices, clock, events, metrics, log, config.nodes.heartbeatTimeoutMs);
  const ipTokens = await IpTokens.open(store, config.identity.issuer, config.identity.ipTokenTtlMs, clock.now());
  await engine.start();
  const context: ServerContext = { config, store, engine, ipTokens, events, metrics, clock, adminToken: options.adminToken ?? null, log, callers: new CallerCache() };
  const app = buildHttpApp(context);
  const running: RunningServer = {
    app,
    context,
    url: "",
    async listen() {
      const address = await app.listen({ host: config.server.host, port: config.server.port });
      running.url = address.replace("[::1]", "localhost");
      const port = app.server.address();
      if (port && typeof port === "object") running.url = `http://${config.server.host.includes(":") ? `[${config.server.host}]` : config.server.host}:${port.port}`;
      return running.url;
    },
    async close() {
      engine?.stop();
      events.shutdown();
      await app.close();
      if (!options.storage) await storage.close();
    },
  };
  return running;
}
