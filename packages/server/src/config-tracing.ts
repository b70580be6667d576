import { parseDurationMs } from "@gpupool/core";
import { z } from "zod";

/**
 * `tracing:` — OpenTelemetry traces of each lease's life, sent as OTLP/HTTP (JSON) to a collector.
 * Off unless an endpoint is configured here or in the standard environment variables (see
 * `withTracingEnvironment`). Every problem is reported with its path, with the rest of the
 * configuration's.
 */
export interface TracingConfig {
  /** Where spans are POSTed (`http://127.0.0.1:4318/v1/traces`); null: tracing is off. */
  readonly endpoint: string | null;
  readonly serviceName: string;
  /** The share of traces recorded (0–1), decided by trace id; a caller's "not sampled" is followed. */
  readonly sampleRatio: number;
  /** Sent with every export (a collector's API key, say). */
  readonly headers: Readonly<Record<string, string>>;
  /** How long finished spans wait to be sent in one batch. */
  readonly exportDelayMs: number;
}

const URL_PATTERN = /^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/;
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$/;

export const tracingSchema = z
  .strictObject({
    otlp_endpoint: z
      .string()
      .regex(URL_PATTERN, "an http(s) URL, e.g. http://127.0.0.1:4318/v1/traces")
      .nullable()
      .default(null),
    service_name: z.string().min(1).max(128).default("gpupool-server"),
    sample_ratio: z.number().min(0).max(1).default(1),
    headers: z.record(z.string().regex(HEADER_NAME, "HTTP header names"), z.string().max(4096)).default({}),
    export_delay: z
      .union([z.string(), z.number()])
      .default("2s")
      .transform((value, ctx) => {
        const parsed = parseDurationMs(value);
        if (parsed.ok) return parsed.ms;
        ctx.addIssue({ code: "custom", message: parsed.message });
        return z.NEVER;
      }),
  })
  .prefault({});

export type TracingInput = z.output<typeof tracingSchema>;

/** The normalized tracing settings; pushes what is wrong onto `problems`. */
export function normalizeTracing(c: TracingInput, problems: string[]): TracingConfig {
  if (c.export_delay < 1 || c.export_delay > 60_000)
    problems.push("tracing.export_delay: must be between 1 ms and 1 minute");
  return {
    endpoint: c.otlp_endpoint,
    serviceName: c.service_name,
    sampleRatio: c.sample_ratio,
    headers: c.headers,
    exportDelayMs: c.export_delay,
  };
}

/**
 * The standard OpenTelemetry variables fill what the file leaves out: the endpoint from
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`),
 * the name from `OTEL_SERVICE_NAME`. The file wins where it names them. (The CLI calls this; the
 * server itself reads no environment.)
 */
export function withTracingEnvironment(
  tracing: TracingConfig,
  env: Readonly<Record<string, string | undefined>>,
): TracingConfig {
  const traces = env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]?.trim();
  const base = env["OTEL_EXPORTER_OTLP_ENDPOINT"]?.trim();
  const fromEnv = traces ? traces : base ? `${base.replace(/\/+$/, "")}/v1/traces` : null;
  const name = env["OTEL_SERVICE_NAME"]?.trim();
  return {
    ...tracing,
    endpoint: tracing.endpoint ?? fromEnv,
    serviceName: tracing.serviceName === "gpupool-server" && name ? name : tracing.serviceName,
  };
}
