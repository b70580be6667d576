import { readFileSync } from "node:fs";
import type { AppRoute } from "@gpupool/edge";
import { InvalidArgumentError, Option } from "commander";
import type { Command } from "commander";
import { pino } from "pino";
import { parse as parseYaml } from "yaml";
import { DEFAULT_URL, StartError, UsageError, err, out, parseUrl } from "../common.js";

interface EdgeFlags {
  readonly server: string;
  readonly edgeKey?: string;
  readonly app: string[];
  readonly appHost: string[];
  readonly listen?: string;
  readonly trustedProxy: string[];
  readonly publicUrl?: string;
  readonly appDomain?: string;
  readonly config?: string;
  readonly otlpEndpoint?: string;
}

/** The `edge:` section of the configuration file (and `identity.trusted_proxies`, shared with the server). */
interface EdgeFile {
  server?: string;
  listen?: string;
  apps: Record<string, string | { upstream: string; host?: string }>;
  trustedProxies: string[];
  publicUrl?: string;
  appDomain?: string;
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value.trim()) ?? /^()()(\d{1,5})$/.exec(value.trim());
  const port = Number(m?.[3]);
  if (!m || port > 65_535)
    throw new InvalidArgumentError(`"${value}" is not HOST:PORT (e.g. 127.0.0.1:7080, or :0 for any free port).`);
  return { host: m[1] ?? (m[2] === "" || m[2] === undefined ? "127.0.0.1" : m[2]), port };
}

function readEdgeFile(path: string): EdgeFile {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, "utf8"));
  } catch (e) {
    throw new UsageError(`cannot read ${path}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const root = (doc ?? {}) as Record<string, unknown>;
  const edge = (root["edge"] ?? {}) as Record<string, unknown>;
  const identity = (root["identity"] ?? {}) as Record<string, unknown>;
  const proxies = edge["trusted_proxies"] ?? identity["trusted_proxies"] ?? [];
  if (!Array.isArray(proxies) || proxies.some((p) => typeof p !== "string"))
    throw new UsageError(`${path}: trusted_proxies must be a list of addresses or CIDR blocks.`);
  const apps = edge["apps"] ?? {};
  if (typeof apps !== "object" || apps === null || Array.isArray(apps))
    throw new UsageError(`${path}: edge.apps must map app names to upstream URLs.`);
  return {
    ...(typeof edge["server"] === "string" ? { server: edge["server"] } : {}),
    ...(typeof edge["listen"] === "string" ? { listen: edge["listen"] } : {}),
    ...(typeof edge["public_url"] === "string" ? { publicUrl: edge["public_url"] } : {}),
    ...(typeof edge["app_domain"] === "string" ? { appDomain: edge["app_domain"] } : {}),
    apps: apps as EdgeFile["apps"],
    trustedProxies: proxies as string[],
  };
}

export function registerEdge(program: Command): void {
  program
    .command("edge")
    .summary("run the identity proxy in front of apps")
    .description(
      "Run the edge: a reverse proxy in front of apps that signs viewers in (session cookie or Bearer user token), " +
        "drops any X-IP-Token a client sent and injects a freshly signed one naming the viewer, so each viewer " +
        "is charged as themselves (or as their IP address when not signed in). Apps are served under /apps/<name>/ " +
        "(one origin: only for apps you trust), or each on a host of its own (--app-domain, --app-host: recommended, " +
        "the browser then keeps apps apart from each other and from the sign-in pages at --public-url). See docs/edge.md.",
    )
    .addOption(
      new Option("--server <url>", "control plane URL").env("GPUPOOL_URL").default(DEFAULT_URL).argParser(parseUrl),
    )
    .addOption(
      new Option("--edge-key <key>", "edge key from `gpupool admin edges create` (never printed)").env(
        "GPUPOOL_EDGE_KEY",
      ),
    )
    .option("--app <NAME=URL>", "an app (its name in the pool) and its upstream URL; repeat for several", collect, [])
    .option(
      "--app-host <NAME=HOST>",
      "serve app NAME at the root of host name HOST (and not under /apps/); repeatable",
      collect,
      [],
    )
    .option(
      "--app-domain <domain>",
      "serve each app at <name>.<domain> (e.g. apps.example.com → painter.apps.example.com)",
    )
    .option(
      "--public-url <url>",
      "where viewers reach the edge's sign-in pages, e.g. https://pool.example.com (https: cookies are Secure, __Host-); required with --app-host/--app-domain",
    )
    .option("--listen <host:port>", "address to listen on (default 127.0.0.1:7080; port 0 picks a free one)")
    .option(
      "--trusted-proxy <cidr>",
      "a proxy whose X-Forwarded-For is believed (address or CIDR); repeatable",
      collect,
      [],
    )
    .option(
      "--otlp-endpoint <url>",
      "send OpenTelemetry spans of proxied requests here (OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces); default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, else off",
    )
    .addOption(
      new Option(
        "--config <file>",
        "YAML file with an edge: section (apps, listen, server, trusted_proxies, public_url, app_domain)",
      ).env("GPUPOOL_CONFIG"),
    )
    .addHelpText(
      "after",
      `
Examples:
  GPUPOOL_EDGE_KEY=gpu_e_… gpupool edge --server http://127.0.0.1:7070 --app painter=http://127.0.0.1:8001
  # each app on its own host, sign-in at pool.example.com, behind a TLS proxy at 10.0.0.5:
  gpupool edge --app painter=http://127.0.0.1:8001 --app-domain apps.example.com --public-url https://pool.example.com --trusted-proxy 10.0.0.5
  gpupool edge --config gpupool.yaml          # edge: { apps: { painter: http://127.0.0.1:8001 } }

Once listening it prints one line to stdout, e.g.
  gpupool edge listening on http://127.0.0.1:7080 (apps painter)
Viewers sign in at /login (of --public-url) and out with its Sign out button. SIGINT / SIGTERM close it.`,
    )
    .action(async (flags: EdgeFlags) => {
      const file = flags.config === undefined || flags.config.trim() === "" ? null : readEdgeFile(flags.config);
      const edgeKey = flags.edgeKey?.trim();
      if (!edgeKey)
        throw new UsageError(
          "an edge key is required: pass --edge-key or set GPUPOOL_EDGE_KEY (create one with POST /v1/admin/edges).",
        );
      // Loaded here, not at the top: other commands should not pay for it.
      const { parseAppFlag, startEdge } = await import("@gpupool/edge");
      const apps = new Map<string, AppRoute>();
      try {
        for (const [name, v] of Object.entries(file?.apps ?? {})) {
          const upstream = typeof v === "string" ? v : v.upstream;
          const parsed = parseAppFlag(`${name}=${upstream}`);
          apps.set(name, typeof v !== "string" && v.host !== undefined ? { ...parsed, host: v.host } : parsed);
        }
        for (const a of flags.app) {
          const parsed = parseAppFlag(a);
          apps.set(parsed.name, parsed);
        }
        for (const h of flags.appHost) {
          const [name = "", host = ""] = h.split("=");
          const app = apps.get(name);
          if (!app || host === "") throw new Error(`--app-host ${h}: write NAME=HOST for an app given with --app`);
          apps.set(name, { ...app, host: host.toLowerCase() });
        }
      } catch (e) {
        throw new UsageError(e instanceof Error ? e.message : String(e));
      }
      if (apps.size === 0)
        throw new UsageError("no apps: pass --app NAME=URL (or list them under edge.apps in --config).");
      const listen = parseListen(flags.listen ?? file?.listen ?? "127.0.0.1:7080");
      const trustedProxies = flags.trustedProxy.length > 0 ? flags.trustedProxy : (file?.trustedProxies ?? []);
      const server = flags.server !== DEFAULT_URL || file?.server === undefined ? flags.server : file.server;
      const publicUrl = flags.publicUrl ?? file?.publicUrl;
      const appDomain = flags.appDomain ?? file?.appDomain;
      // JSON lines on stderr with a level, as the server and the agent log.
      const logger = pino(
        { level: "info", base: { service: "gpupool-edge" } },
        pino.destination({ dest: 2, sync: true }),
      );
      const tracing = await edgeTracing(flags.otlpEndpoint);
      let edge: Awaited<ReturnType<typeof startEdge>>;
      try {
        edge = await startEdge({
          server,
          edgeKey,
          apps: [...apps.values()],
          trustedProxies,
          ...(publicUrl !== undefined ? { publicUrl } : {}),
          ...(appDomain !== undefined ? { appDomain } : {}),
          host: listen.host,
          port: listen.port,
          log: (line, level) => logger[level](line),
          ...(tracing === null ? {} : { tracer: tracing.tracer }),
        });
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === "EADDRINUSE")
          throw new StartError(
            `${listen.host}:${listen.port} is already in use; pick another address with --listen (port 0 picks a free one).`,
            code,
          );
        if (e instanceof Error && !code) throw new UsageError(e.message); // a bad --trusted-proxy or --public-url, a duplicate app
        throw e;
      }
      let closing = false;
      const stop = (signal: NodeJS.Signals) => {
        if (closing) process.exit(1);
        closing = true;
        err(`${signal} received: shutting down the edge…`);
        // The last spans go before the process does.
        edge
          .close()
          .then(() => tracing?.shutdown())
          .then(
            () => process.exit(0),
            () => process.exit(1),
          );
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
      out(`gpupool edge listening on ${edge.url} (apps ${[...apps.keys()].join(", ")}; control plane ${server})`);
    });
}

/** The edge's tracing when an OTLP endpoint is named (flag, else the standard variables); null: off. */
async function edgeTracing(flag: string | undefined) {
  const endpoint = flag?.trim() || null;
  if (endpoint !== null && !/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/.test(endpoint))
    throw new UsageError(`--otlp-endpoint ${endpoint}: write an http(s) URL, e.g. http://127.0.0.1:4318/v1/traces`);
  const env = process.env;
  // Off: the server package (and OpenTelemetry's SDK in it) is not even loaded.
  if (endpoint === null && !env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] && !env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    return null;
  const { startTracing, withTracingEnvironment } = await import("@gpupool/server");
  const config = withTracingEnvironment(
    { endpoint, serviceName: "gpupool-edge", sampleRatio: 1, headers: {}, exportDelayMs: 2_000 },
    env,
  );
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  return startTracing(config, pkg.version);
}
