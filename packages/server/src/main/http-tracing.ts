import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Context, Span } from "@opentelemetry/api";
import {
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_URL_SCHEME,
} from "@opentelemetry/semantic-conventions";
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { Tracing } from "./tracing.js";

/**
 * One server span per request, a child of the caller's `traceparent` when it sent one, named
 * after its route (`POST /v1/leases`); the handler runs with it active, so the lease's spans
 * nest under it. Only the method, route, scheme and status are recorded: no path values, query,
 * headers, address or body.
 */
export function traceRequests(app: FastifyInstance, tracing: Tracing): void {
  const spans = new WeakMap<FastifyRequest, { span: Span; ctx: Context }>();
  app.addHook("onRequest", (req, _reply, done) => {
    const parent = tracing.extract(req.headers);
    const route = req.routeOptions.url;
    const span = tracing.tracer.startSpan(
      route === undefined ? req.method : `${req.method} ${route}`,
      {
        kind: SpanKind.SERVER,
        attributes: {
          [ATTR_HTTP_REQUEST_METHOD]: req.method,
          [ATTR_URL_SCHEME]: req.protocol,
          ...(route === undefined ? {} : { [ATTR_HTTP_ROUTE]: route }),
        },
      },
      parent,
    );
    spans.set(req, { span, ctx: trace.setSpan(parent, span) });
    done();
  });
  // After the body is read (its stream events carry no context): the handler runs in the span's context.
  app.addHook("preHandler", (req, _reply, done) => {
    const held = spans.get(req);
    if (held === undefined) return done();
    tracing.with(held.ctx, done);
  });
  app.addHook("onResponse", (req, reply, done) => {
    const held = spans.get(req);
    if (held !== undefined) {
      held.span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, reply.statusCode);
      if (reply.statusCode >= 500) held.span.setStatus({ code: SpanStatusCode.ERROR });
      held.span.end();
      spans.delete(req);
    }
    done();
  });
  app.addHook("onRequestAbort", (req, done) => {
    const held = spans.get(req);
    if (held !== undefined) {
      held.span.setStatus({ code: SpanStatusCode.ERROR, message: "the client went away" });
      held.span.end();
      spans.delete(req);
    }
    done();
  });
}
