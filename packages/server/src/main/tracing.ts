import { ROOT_CONTEXT, defaultTextMapGetter } from "@opentelemetry/api";
import type { Context, Tracer } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import type { SpanExporter } from "@opentelemetry/sdk-trace";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import type { TracingConfig } from "../config-tracing.js";

/**
 * A server's OpenTelemetry tracing, when it is on: its own tracer provider (OTLP/HTTP JSON export
 * in batches) and the W3C trace-context propagator. Contexts are passed explicitly (no context
 * manager). Nothing is registered globally: two servers in one process (tests) do not share, and
 * an application that embeds the server keeps its own global OpenTelemetry setup.
 */
export interface Tracing {
  readonly tracer: Tracer;
  /** The caller's trace context from `traceparent` / `tracestate` (the root context without them). */
  extract(headers: Record<string, string | string[] | undefined>): Context;
  /** Sends what is buffered. */
  flush(): Promise<void>;
  /** Sends what is buffered and stops (graceful shutdown). */
  shutdown(): Promise<void>;
}

export const TRACER_NAME = "gpupool";

/** The server's tracing, or null when no endpoint is configured (then nothing is started at all). */
export function startTracing(config: TracingConfig, version: string, exporter?: SpanExporter): Tracing | null {
  if (config.endpoint === null) return null;
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: config.serviceName, [ATTR_SERVICE_VERSION]: version }),
    // The ratio applies to new traces and to callers' sampled ones alike (the SDK marks every call
    // it starts sampled): decided by trace id, so a call's spans are all kept or all dropped. A
    // caller that says "not sampled" is not recorded.
    sampler: new ParentBasedSampler({
      root: new TraceIdRatioBasedSampler(config.sampleRatio),
      remoteParentSampled: new TraceIdRatioBasedSampler(config.sampleRatio),
    }),
    spanProcessors: [
      new BatchSpanProcessor({
        // A collector that does not answer holds a graceful shutdown 5 s at most, not the default 10.
        exporter:
          exporter ??
          new OTLPTraceExporter({ url: config.endpoint, headers: { ...config.headers }, timeoutMillis: 5_000 }),
        scheduledDelayMillis: config.exportDelayMs,
      }),
    ],
  });
  const propagator = new W3CTraceContextPropagator();
  return {
    tracer: provider.getTracer(TRACER_NAME, version),
    extract: (headers) => propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter),
    flush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}
