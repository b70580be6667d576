import Fastify, { LogController } from "fastify";
import type { FastifyBaseLogger, FastifyInstance } from "fastify";
import { problem } from "@gpupool/core";
import { adminRoutes } from "./admin-routes.js";
import { billingRoutes } from "./billing-routes.js";
import { MAX_PARAM_LENGTH, answerClientError, frameworkErrorProblem } from "./client-errors.js";
import { dashboardPages } from "./dashboard-pages.js";
import { dashboardReadRoutes } from "./dashboard-read-routes.js";
import { dashboardSessionRoutes } from "./dashboard-routes.js";
import { docsRoutes } from "./docs-routes.js";
import type { RouteContext } from "./context.js";
import { leaseRoutes } from "./lease-routes.js";
import { nodeRoutes } from "./node-routes.js";
import { acceptJsonBodies } from "./json-body.js";
import { installErrorHandling, sendProblem, sendStorageUnavailable } from "./problems.js";
import { StorageUnavailableError } from "../storage/store.js";
import { quotaRoutes } from "./quota-routes.js";
import { sessionRoutes } from "./session-routes.js";
import { tokenRoutes } from "./token-routes.js";

/** The HTTP surface of the control plane. Routes parse, call one use case, and serialize. */
export function buildHttpApp(ctx: RouteContext): FastifyInstance {
  const requestLogging = ctx.config.logLevel === "debug" || ctx.config.logLevel === "trace";
  const app = Fastify({
    // The cast picks Fastify's logger type for the instance's generics (routes take FastifyInstance).
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion
    loggerInstance: ctx.log as FastifyBaseLogger,
    // Per-request lines only when debugging; errors are logged by the error handler.
    logController: new LogController({ disableRequestLogging: !requestLogging }),
    // Without per-request lines, a child logger per request (binding its id) is pure cost: about
    // 1% of a lease request. Errors are logged with the request id by the error handler.
    ...(requestLogging ? {} : { childLoggerFactory: (logger: FastifyBaseLogger) => logger }),
    bodyLimit: ctx.config.server.bodyLimitBytes,
    trustProxy: ctx.config.identity.trustedProxies.length > 0 ? [...ctx.config.identity.trustedProxies] : false,
    ajv: { customOptions: { allErrors: true, coerceTypes: false, removeAdditional: false, useDefaults: false } },
    return503OnClosing: true,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // Whatever cannot become a request is answered as a problem too, quoting at most an excerpt.
    clientErrorHandler: answerClientError,
    frameworkErrors: (err, req, reply) => void sendProblem(reply, frameworkErrorProblem(err, req.url)),
  });

  acceptJsonBodies(app);
  const pages = dashboardPages(app, ctx.config.dashboard.distDir);
  installErrorHandling(app, pages.fallback);

  // A server bound before its state is restored (see ServerOptions.bindFirst) serves only liveness meanwhile.
  app.addHook("onRequest", (req, reply, done) => {
    const starting = ctx.health.notStarted();
    if (starting === null || req.url === "/healthz") return done();
    void sendStorageUnavailable(reply, starting);
  });

  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_req, reply) => {
    try {
      return { status: "ready", ...(await ctx.health.ready()) };
    } catch (err) {
      // Not ready: why, in the storage's words (a full disk, a replaced file, starting…).
      if (err instanceof StorageUnavailableError) return sendStorageUnavailable(reply, err);
      return sendProblem(
        reply,
        problem("storage_unavailable", "The pool's database is not answering.", { reason: "unreachable" }),
        5,
      );
    }
  });
  app.get("/metrics", async (_req, reply) => {
    reply.type(ctx.metrics.contentType);
    return ctx.metrics.text();
  });

  docsRoutes(app);
  leaseRoutes(app, ctx);
  nodeRoutes(app, ctx);
  quotaRoutes(app, ctx);
  tokenRoutes(app, ctx);
  sessionRoutes(app, ctx);
  adminRoutes(app, ctx);
  billingRoutes(app, ctx);
  dashboardSessionRoutes(app, ctx);
  dashboardReadRoutes(app, ctx);
  return app;
}
