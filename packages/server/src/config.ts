import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { ANONYMOUS_TIER, parseDurationMs, PREDICTED_WAIT_HEADROOM } from "@gpupool/core";
import type { DeviceSpec, Policy, SizePolicy, TierPolicy } from "@gpupool/core";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { billingSchema, normalizeBilling } from "./config-billing.js";
import { normalizeRetention, retentionSchema } from "./config-retention.js";
import type { RetentionConfig } from "./config-retention.js";
import { normalizeTracing, tracingSchema } from "./config-tracing.js";
import type { TracingConfig } from "./config-tracing.js";
import { parsePostgresUrl } from "./storage/postgres/url.js";

/** The whole server configuration, normalized: milliseconds, resolved defaults. */
export interface ServerConfig {
  readonly server: { readonly host: string; readonly port: number; readonly bodyLimitBytes: number };
  readonly storage: { readonly url: string };
  readonly policy: Policy;
  readonly pool: { readonly devices: readonly DeviceSpec[] };
  /** Agents heartbeat every `heartbeatIntervalMs`; a node silent for `heartbeatTimeoutMs` is lost. */
  readonly nodes: { readonly heartbeatIntervalMs: number; readonly heartbeatTimeoutMs: number };
  readonly identity: {
    readonly ipTokenTtlMs: number;
    readonly trustedProxies: readonly string[];
    readonly issuer: string;
  };
  readonly logLevel: string;
  /** The web dashboard (docs/dashboard.md). */
  readonly dashboard: {
    /** How the world reaches this server (`https://pool.example.com`), for sign-in links and secure cookies; null: as asked. */
    readonly publicUrl: string | null;
    readonly sessionTtlMs: number;
    /** Where the built dashboard is (its index.html and assets/); null: packages/dashboard/dist beside this package. */
    readonly distDir: string | null;
    /** How often its live streams look again with no change announced (a heartbeat, credits granted on another replica). */
    readonly livePollMs: number;
  };
  /** How long what has ended is kept (config-retention.ts). */
  readonly retention: RetentionConfig;
  /** OpenTelemetry traces of each lease's life (config-tracing.ts); off without an endpoint. */
  readonly tracing: TracingConfig;
}

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(source: string, problems: readonly string[]) {
    super(`${source} is not a valid gpupool configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

const MAX_DURATION_MS = 7 * 86_400_000;

const duration = (fallback: string) =>
  z
    .union([z.string(), z.number()])
    .default(fallback)
    .transform((value, ctx) => {
      const parsed = parseDurationMs(value);
      if (!parsed.ok) {
        ctx.addIssue({ code: "custom", message: parsed.message });
        return z.NEVER;
      }
      if (parsed.ms > MAX_DURATION_MS) {
        ctx.addIssue({ code: "custom", message: "must be at most 7 days" });
        return z.NEVER;
      }
      return parsed.ms;
    });

const tierSchema = z.strictObject({
  quota: duration("2m"),
  priority: z.number().int().min(0).max(100).default(1),
  max_duration: duration("120s"),
  max_runs: z.number().int().positive().nullable().default(null),
});

const DEFAULT_TIERS = {
  anonymous: { quota: "2m", priority: 1, max_duration: "120s" },
  free: { quota: "3.5m", priority: 2, max_duration: "120s" },
  pro: { quota: "25m", priority: 3, max_duration: "300s" },
  team: { quota: "25m", priority: 3, max_duration: "300s" },
  enterprise: { quota: "45m", priority: 3, max_duration: "300s" },
};

const NAME = /^[a-z][a-z0-9_-]{0,31}$/;

const schema = z.strictObject({
  server: z
    .strictObject({
      host: z.string().min(1).default("127.0.0.1"),
      port: z.number().int().min(0).max(65535).default(7070),
      body_limit: z
        .number()
        .int()
        .min(1024)
        .max(10 * 1024 * 1024)
        .default(64 * 1024),
    })
    .prefault({}),
  storage: z
    .strictObject({
      url: z
        .string()
        .default("sqlite:./gpupool.db")
        .superRefine((u, ctx) => {
          if (u.startsWith("sqlite:")) return;
          if (!u.startsWith("postgres://") && !u.startsWith("postgresql://")) {
            ctx.addIssue({ code: "custom", message: 'must start with "sqlite:" or "postgres://"' });
            return;
          }
          // Schema name, pool size, timeouts: wrong ones are reported with the rest of the config
          // (the message never repeats the URL, which may hold a password).
          try {
            parsePostgresUrl(u);
          } catch (err) {
            ctx.addIssue({ code: "custom", message: (err as Error).message.replace(/^storage\.url: /, "") });
          }
        }),
    })
    .prefault({}),
  quota: z
    .strictObject({
      window: duration("24h"),
      default_duration: duration("60s"),
      default_size: z.string().default("large"),
      tiers: z
        .record(z.string().regex(NAME, "tier names are lowercase letters, digits, - and _"), tierSchema)
        .prefault(DEFAULT_TIERS),
      sizes: z
        .record(
          z.string().regex(NAME, "size names are lowercase letters, digits, - and _"),
          z.strictObject({ slots: z.number().int().min(1).max(64), cost: z.number().positive().max(1000) }),
        )
        .prefault({ large: { slots: 1, cost: 1 }, xlarge: { slots: 2, cost: 2 } }),
    })
    .prefault({}),
  queue: z
    .strictObject({
      // One duration for every tier, or one per tier (`default`: the tiers not named).
      timeout: z
        .union([duration("60s"), z.record(z.string().regex(NAME, "tier names, or default"), duration("60s"))])
        .default(60_000),
      max_length: z.number().int().min(0).max(1_000_000).default(10_000),
      // Refuse at once a call expected to wait longer than it may (503 predicted_wait), or queue it
      // until it times out (false, as before).
      predicted_wait: z.boolean().default(true),
      // A call (not anonymous) whose bound promises no start in time is also refused when expected
      // to start in this last share of what it may wait (0: only when expected to wait longer).
      predicted_wait_headroom: z.number().min(0).max(0.5).default(0.1),
      // Calls through a node's agent (the device API) that name no max_wait: refused at once when
      // expected to outwait the queue timeout (true), or queued as before (false).
      predicted_wait_via_agents: z.boolean().default(false),
    })
    .prefault({}),
  pool: z
    .strictObject({
      simulated: z
        .array(
          z.strictObject({
            node: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, "node names are letters, digits, '.', '-' and '_'"),
            gpus: z.number().int().min(0).max(4096),
            name: z.string().default("Simulated GPU"),
            memory_gb: z.number().positive().default(80),
            slots_per_gpu: z.number().int().min(1).max(64).default(2),
          }),
        )
        .prefault([{ node: "sim-0", gpus: 2, name: "Simulated H200", memory_gb: 141 }]),
    })
    .prefault({}),
  nodes: z.strictObject({ heartbeat_interval: duration("5s"), heartbeat_timeout: duration("20s") }).prefault({}),
  identity: z
    .strictObject({
      ip_token_ttl: duration("10m"),
      trusted_proxies: z.array(z.string()).default([]),
      issuer: z.string().min(1).default("gpupool"),
    })
    .prefault({}),
  billing: billingSchema,
  dashboard: z
    .strictObject({
      public_url: z
        .string()
        .regex(/^https?:\/\/[^/?#\s]+$/, "an origin: http(s)://host[:port], without a path")
        .nullable()
        .default(null),
      session_ttl: duration("12h"),
      dist: z.string().min(1).nullable().default(null),
      live_poll: duration("1s"),
    })
    .prefault({}),
  retention: retentionSchema,
  tracing: tracingSchema,
  log: z
    .strictObject({ level: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info") })
    .prefault({}),
});

function pathOf(path: readonly PropertyKey[]): string {
  return path.length === 0 ? "(top level)" : path.map(String).join(".");
}

/** Validates raw config (parsed YAML) into ServerConfig, reporting every problem at once. */
export function normalizeConfig(raw: unknown, source = "configuration"): ServerConfig {
  const parsed = schema.safeParse(raw ?? {});
  if (!parsed.success) {
    throw new ConfigError(
      source,
      parsed.error.issues.map((i) => `${pathOf(i.path)}: ${i.message}`),
    );
  }
  const c = parsed.data;
  const problems: string[] = [];
  const tiers: Record<string, TierPolicy> = {};
  for (const [name, t] of Object.entries(c.quota.tiers)) {
    if (t.max_duration <= 0) problems.push(`quota.tiers.${name}.max_duration: must be more than 0`);
    tiers[name] = { name, quotaMs: t.quota, priority: t.priority, maxDurationMs: t.max_duration, maxRuns: t.max_runs };
  }
  const timeouts: Record<string, number> = typeof c.queue.timeout === "number" ? {} : { ...c.queue.timeout };
  const queueTimeoutMs = typeof c.queue.timeout === "number" ? c.queue.timeout : (timeouts["default"] ?? 60_000);
  for (const [name, ms] of Object.entries(timeouts)) {
    if (ms <= 0) problems.push(`queue.timeout.${name}: must be more than 0`);
    const tier = tiers[name];
    if (tier) tiers[name] = { ...tier, queueTimeoutMs: ms };
    else if (name !== "default")
      problems.push(`queue.timeout.${name}: "${name}" is not one of quota.tiers (${Object.keys(tiers).join(", ")})`);
  }
  if (!tiers[ANONYMOUS_TIER])
    problems.push(`quota.tiers: must define the "${ANONYMOUS_TIER}" tier (used for IP and app identities)`);
  const sizes: Record<string, SizePolicy> = {};
  for (const [name, s] of Object.entries(c.quota.sizes)) sizes[name] = { name, slots: s.slots, cost: s.cost };
  if (!sizes[c.quota.default_size])
    problems.push(
      `quota.default_size: "${c.quota.default_size}" is not one of quota.sizes (${Object.keys(sizes).join(", ")})`,
    );
  if (c.quota.window <= 0) problems.push("quota.window: must be more than 0");
  if (c.quota.default_duration <= 0) problems.push("quota.default_duration: must be more than 0");
  const nodes = new Set<string>();
  const devices: DeviceSpec[] = [];
  c.pool.simulated.forEach((sim, i) => {
    if (nodes.has(sim.node)) problems.push(`pool.simulated.${i}.node: "${sim.node}" appears twice`);
    nodes.add(sim.node);
    for (let index = 0; index < sim.gpus; index++) {
      devices.push({
        node: sim.node,
        index,
        uuid: simulatedUuid(sim.node, index),
        name: sim.name,
        memoryMb: Math.round(sim.memory_gb * 1024),
        slots: sim.slots_per_gpu,
      });
    }
  });
  if (c.dashboard.session_ttl <= 0) problems.push("dashboard.session_ttl: must be more than 0");
  if (c.dashboard.live_poll < 100) problems.push("dashboard.live_poll: must be at least 100ms");
  if (c.nodes.heartbeat_interval <= 0) problems.push("nodes.heartbeat_interval: must be more than 0");
  if (c.nodes.heartbeat_timeout < 2 * c.nodes.heartbeat_interval) {
    problems.push(
      "nodes.heartbeat_timeout: must be at least twice nodes.heartbeat_interval, or one late heartbeat loses the node",
    );
  }
  const billing = normalizeBilling(c.billing, tiers, problems);
  const retention = normalizeRetention(c.retention, problems);
  const tracing = normalizeTracing(c.tracing, problems);
  if (problems.length > 0) throw new ConfigError(source, problems);
  return {
    server: { host: c.server.host, port: c.server.port, bodyLimitBytes: c.server.body_limit },
    storage: { url: c.storage.url },
    policy: {
      windowMs: c.quota.window,
      defaultDurationMs: c.quota.default_duration,
      defaultSize: c.quota.default_size,
      tiers,
      sizes,
      queueTimeoutMs,
      queueMaxLength: c.queue.max_length,
      ...(billing === undefined ? {} : { billing }),
      ...(c.queue.predicted_wait ? {} : { predictedWait: false }),
      ...(c.queue.predicted_wait_headroom === PREDICTED_WAIT_HEADROOM
        ? {}
        : { predictedWaitHeadroom: c.queue.predicted_wait_headroom }),
      ...(c.queue.predicted_wait_via_agents ? { predictedWaitViaAgents: true } : {}),
    },
    pool: { devices },
    nodes: { heartbeatIntervalMs: c.nodes.heartbeat_interval, heartbeatTimeoutMs: c.nodes.heartbeat_timeout },
    identity: {
      ipTokenTtlMs: c.identity.ip_token_ttl,
      trustedProxies: c.identity.trusted_proxies,
      issuer: c.identity.issuer,
    },
    logLevel: c.log.level,
    dashboard: {
      publicUrl: c.dashboard.public_url,
      sessionTtlMs: c.dashboard.session_ttl,
      distDir: c.dashboard.dist,
      livePollMs: c.dashboard.live_poll,
    },
    retention,
    tracing,
  };
}

/** Reads YAML from `path` (or the defaults when undefined). */
export async function loadConfig(path: string | undefined): Promise<ServerConfig> {
  if (path === undefined) return normalizeConfig({}, "default configuration");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new ConfigError(path, [`cannot read the file: ${(err as NodeJS.ErrnoException).code ?? String(err)}`]);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError(path, [`not valid YAML: ${(err as Error).message.split("\n")[0] ?? ""}`]);
  }
  return normalizeConfig(raw, path);
}

/** A stable, UUID-shaped id for a simulated device, in the form nvidia-smi prints. */
export function simulatedUuid(node: string, index: number): string {
  const h = createHash("sha256").update(`${node}#${index}`).digest("hex");
  return `GPU-${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}
