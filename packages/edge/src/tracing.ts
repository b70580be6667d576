import { ROOT_CONTEXT, SpanKind, SpanStatusCode, createTraceState, trace } from "@opentelemetry/api";
import type { Context, Tracer } from "@opentelemetry/api";
import type { IncomingMessage } from "node:http";

/**
 * The edge's span of a proxied request, when the edge traces (`--otlp-endpoint`): a child of the
 * viewer's `traceparent` if it sent one, and the parent the app sees in the `traceparent` the edge
 * forwards. (Without tracing the viewer's `traceparent` and `tracestate` pass to the app as they are.)
 */
export interface EdgeSpan {
  /** The `traceparent` to send the app: this span's. */
  readonly traceparent: string;
  end(status: number): void;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** The viewer's trace context (W3C Trace Context), or the root context when it sent none that is valid. */
export function viewerContext(req: IncomingMessage): Context {
  const header = req.headers["traceparent"];
  const m = typeof header === "string" ? TRACEPARENT.exec(header.trim()) : null;
  if (m === null || m[1] === "ff" || (m[1] === "00" && m[5] !== undefined)) return ROOT_CONTEXT;
  const traceId = m[2] as string;
  const spanId = m[3] as string;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return ROOT_CONTEXT;
  const state = req.headers["tracestate"];
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId,
    spanId,
    traceFlags: parseInt(m[4] as string, 16) & 1,
    isRemote: true,
    ...(typeof state === "string" && state !== "" ? { traceState: createTraceState(state) } : {}),
  });
}

/** Starts the span of a request forwarded to `app`. Only the method, the app and the status are recorded. */
export function startEdgeSpan(tracer: Tracer, req: IncomingMessage, app: string): EdgeSpan {
  const method = req.method ?? "GET";
  const span = tracer.startSpan(
    `${method} app ${app}`,
    { kind: SpanKind.SERVER, attributes: { "http.request.method": method, "gpupool.app.name": app } },
    viewerContext(req),
  );
  const sc = span.spanContext();
  return {
    traceparent: `00-${sc.traceId}-${sc.spanId}-0${sc.traceFlags & 1}`,
    end(status) {
      span.setAttribute("http.response.status_code", status);
      if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    },
  };
}
