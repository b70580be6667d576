import { describe, expect, it } from "vitest";
import { ConfigError, normalizeConfig } from "../src/config.js";
import { withTracingEnvironment } from "../src/config-tracing.js";

function problemsOf(raw: unknown): readonly string[] {
  try {
    normalizeConfig(raw);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe("tracing configuration", () => {
  it("is off by default", () => {
    expect(normalizeConfig({}).tracing).toEqual({
      endpoint: null,
      serviceName: "gpupool-server",
      sampleRatio: 1,
      headers: {},
      exportDelayMs: 2_000,
    });
  });

  it("takes an OTLP/HTTP endpoint, a name, a sample ratio, headers and an export delay", () => {
    const c = normalizeConfig({
      tracing: {
        otlp_endpoint: "http://collector:4318/v1/traces",
        service_name: "pool-eu",
        sample_ratio: 0.25,
        headers: { "x-api-key": "k" },
        export_delay: "500ms",
      },
    });
    expect(c.tracing).toEqual({
      endpoint: "http://collector:4318/v1/traces",
      serviceName: "pool-eu",
      sampleRatio: 0.25,
      headers: { "x-api-key": "k" },
      exportDelayMs: 500,
    });
  });

  it("reports every problem at once, each with its path", () => {
    const problems = problemsOf({
      tracing: {
        otlp_endpoint: "collector:4318",
        sample_ratio: 2,
        headers: { "bad header": "x" },
        export_delay: "soon",
        bogus: true,
      },
    });
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^tracing\.otlp_endpoint: an http\(s\) URL/),
        expect.stringMatching(/^tracing\.sample_ratio: /),
        expect.stringMatching(/^tracing\.headers\.bad header: /),
        expect.stringMatching(/^tracing\.export_delay: /),
        expect.stringMatching(/^tracing: .*bogus/),
      ]),
    );
    expect(problemsOf({ tracing: { export_delay: "2m" } })).toEqual([
      "tracing.export_delay: must be between 1 ms and 1 minute",
    ]);
  });

  it("honours the standard OTEL_* variables where the file names nothing", () => {
    const off = normalizeConfig({}).tracing;
    expect(withTracingEnvironment(off, {}).endpoint).toBeNull();
    expect(withTracingEnvironment(off, { OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318/" }).endpoint).toBe(
      "http://c:4318/v1/traces",
    );
    const both = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://t:9/x" };
    expect(withTracingEnvironment(off, both).endpoint).toBe("http://t:9/x");
    expect(withTracingEnvironment(off, { OTEL_SERVICE_NAME: "svc" }).serviceName).toBe("svc");
    const file = normalizeConfig({ tracing: { otlp_endpoint: "http://file:4318/v1/traces", service_name: "f" } });
    expect(withTracingEnvironment(file.tracing, { ...both, OTEL_SERVICE_NAME: "svc" })).toMatchObject({
      endpoint: "http://file:4318/v1/traces",
      serviceName: "f",
    });
  });
});
