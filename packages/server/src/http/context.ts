import type { Logger } from "pino";
import type { CallerCache } from "./auth.js";
import type { Clock } from "../clock.js";
import type { ServerConfig } from "../config.js";
import type { LeaseEvents } from "../events.js";
import type { IpTokens } from "../identity/ip-tokens.js";
import type { Metrics } from "../metrics.js";
import type { Store } from "../storage/store.js";
import type { LeaseEngine } from "../use-cases/lease-engine.js";

/** What the routes may use. Routes parse, call one use case, and serialize. */
export interface ServerContext {
  readonly config: ServerConfig;
  readonly store: Store;
  readonly engine: LeaseEngine;
  readonly ipTokens: IpTokens;
  readonly events: LeaseEvents;
  readonly metrics: Metrics;
  readonly clock: Clock;
  /** Null disables the admin API. */
  readonly adminToken: string | null;
  readonly log: Logger;
  readonly callers: CallerCache;
}
