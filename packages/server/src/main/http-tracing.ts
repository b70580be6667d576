import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Context, Span } from "@opentelemetry/api";
import {
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_URL_SCHEME,
} from "@opentelemetry/semantic-conventions";
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { RequestTrace } from "../use-cases/leases/lease-tracing.js";
import type { Tracing } from "./tracing.js";

/**
 * One server span per request, a child of the caller's `traceparent` when it sent one, named
 * after its route (`POST /v1/leases`). Its context is handed to the lease use cases explicitly
 * (`of`, through the routes): no async context tracking, which costs every promise of the process.
 * Only the method, route, scheme and status are recorded: no path values, query, headers, address
 * or body.
 */
export class RequestSpans {
  private readonly spans = new WeakMap<FastifyRequest, { span: Span; ctx: Context }>();

  constructor(private readonly tracing: Tracing) {}

  /** The request's trace context: its span's, under the caller's. */
  of(req: FastifyRequest): RequestTrace {
    return this.spans.get(req)?.ctx as RequestTrace;
  }

  install(app: FastifyInstance): void {
    app.addHook("onRequest", (req, _reply, done) => {
      const parent = this.tracing.extract(req.headers);
      const route = req.routeOptions.url;
      const span = this.tracing.tracer.startSpan(
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
      this.spans.set(req, { span, ctx: trace.setSpan(parent, span) });
      done();
    });
    app.addHook("onResponse", (req, reply, done) => {
      this.end(req, reply.statusCode);
      done();
    });
    // No onRequestAbort hook: it costs every request a listener; the span of a request whose client
    // went away before the answer is not ended (nor sent), and goes with its request.
  }

  private end(req: FastifyRequest, status: number): void {
    const held = this.spans.get(req);
    if (held === undefined) return;
    held.span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
    if (status >= 500) held.span.setStatus({ code: SpanStatusCode.ERROR });
    held.span.end();
    this.spans.delete(req);
  }
}
