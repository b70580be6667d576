import type { FastifyRequest } from "fastify";
import type { Policy } from "@gpupool/core";
import type { Logger } from "pino";
import type { ServerConfig } from "../config.js";
import type { LeaseEvents } from "../events.js";
import type { Metrics } from "../metrics.js";
import type { Billing } from "../use-cases/accounts/billing.js";
import type { QuotaQueries } from "../use-cases/accounts/quota-queries.js";
import type { UsageLedger } from "../use-cases/accounts/usage-ledger.js";
import type { Directory } from "../use-cases/admin/directory.js";
import type { AuditLog } from "../use-cases/admin/audit.js";
import type { DashboardViews } from "../use-cases/admin/dashboard-views.js";
import type { PoolViewer } from "../use-cases/admin/pool-view.js";
import type { Health } from "../use-cases/health.js";
import type { Callers } from "../use-cases/identity/callers.js";
import type { DashboardSessions } from "../use-cases/identity/dashboard-sessions.js";
import type { Sessions } from "../use-cases/identity/sessions.js";
import type { TokenIssuer } from "../use-cases/identity/token-issuer.js";
import type { Diagnose } from "../use-cases/leases/diagnose.js";
import type { LeaseRequests } from "../use-cases/leases/lease-requests.js";
import type { RequestTrace } from "../use-cases/leases/lease-tracing.js";
import type { NodeAgents } from "../use-cases/nodes/node-agents.js";

/**
 * What the routes may use: use cases, never the store. A route parses the request, calls one
 * use case (after the caller is authenticated), and serializes what it returns.
 */
export interface RouteContext {
  readonly config: Pick<ServerConfig, "server" | "identity" | "logLevel" | "nodes" | "dashboard">;
  readonly policy: Policy;
  readonly callers: Callers;
  readonly leases: LeaseRequests;
  readonly quota: QuotaQueries;
  readonly billing: Billing;
  readonly usage: UsageLedger;
  readonly diagnose: Diagnose;
  readonly nodes: NodeAgents;
  readonly directory: Directory;
  readonly sessions: Sessions;
  readonly dashboard: DashboardSessions;
  readonly tokens: TokenIssuer;
  readonly pool: PoolViewer;
  readonly views: DashboardViews;
  readonly audit: AuditLog;
  readonly health: Health;
  readonly metrics: Metrics;
  /** For open event streams: they end when the server shuts down. */
  readonly events: LeaseEvents;
  readonly log: Logger;
  /** How often a live stream looks again without a change announced (config dashboard.live_poll; absent: every second). */
  readonly livePollMs?: number;
  /** The request's trace context, to hand to the lease use cases (absent: tracing is off). */
  readonly traceOf?: (req: FastifyRequest) => RequestTrace;
}
