import { mkdirSync } from "node:fs";
import { isAbsolute, join, relative, resolve } from "node:path";
import { createClient } from "@gpupool/sdk";
import type { GpupoolClient, Quota } from "@gpupool/sdk";
import type { RunningAgent } from "@gpupool/agent";
import type { RunningEdge } from "@gpupool/edge";
import type { RunningServer } from "@gpupool/server";
import type { Command } from "commander";
import { adminTokenFromEnv, err, out, parsePort, StartError } from "../common.js";
import { startDemoApp } from "../demo/app.js";
import type { DemoApp } from "../demo/app.js";
import {
  ensureApp,
  ensureKeyed,
  ensureUser,
  randomAdminToken,
  readCredentials,
  writeCredentials,
} from "../demo/credentials.js";
import { DEMO_BILLING, endOwnCalls, ensureCleo } from "../demo/credits.js";
import { renderTour } from "../demo/tour.js";
import { dashboardLink } from "./dashboard.js";

const DEFAULT_PORT = 7070;
const APP_NAME = "sdxl-demo";

interface DemoFlags {
  readonly port?: number;
  readonly dir: string;
}

/** Ends the demo app's active and queued leases charged to user `userId` (the unused time is refunded). */
async function endCallsOf(asApp: GpupoolClient, userId: string): Promise<void> {
  for (const status of ["active", "queued"] as const) {
    const leases = await asApp.leases({ status, limit: 500 }).catch(() => []);
    for (const l of leases)
      if (l.identity.kind === "user" && l.identity.id === userId) await asApp.cancel(l.id).catch(() => undefined);
  }
}

/** `dir` as the tour shows it: relative to where it was started (`./.gpupool`) when inside it. */
function shownPath(dir: string): string {
  const rel = relative(process.cwd(), dir);
  return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel) ? `./${rel}` : dir;
}

/** Listens on `port`, or on a free port when that one is taken (saying so through `note`). */
async function startOnAnyPort(
  port: number,
  make: (port: number) => Promise<RunningServer>,
): Promise<{ server: RunningServer; note: string | null }> {
  try {
    return { server: await make(port), note: null };
  } catch (error) {
    if (!(error instanceof StartError && error.code === "EADDRINUSE") || port === 0) throw error;
    const server = await make(0);
    return { server, note: `(port ${port} was taken, so a free port was picked instead)` };
  }
}

async function appOnNextPort(poolPort: number, poolUrl: string, appKey: string): Promise<DemoApp> {
  const next = poolPort + 1 <= 65_535 ? poolPort + 1 : 0;
  try {
    return await startDemoApp({ poolUrl, appKey, port: next });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EADDRINUSE" || next === 0) throw error;
    return startDemoApp({ poolUrl, appKey, port: 0 });
  }
}

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .summary("run a pool, users, the edge and a demo app in one process, with a guided tour (npm start)")
    .description(
      "Run everything in one process on an embedded SQLite file: the control plane with a simulated pool of " +
        "2 GPUs, a pro user ada, a free user bob, an app sdxl-demo owned by ada, and a tiny demo app whose " +
        "POST /generate borrows a GPU through the SDK, behind the edge that names each viewer. Prints copy-pasteable " +
        "commands to try; Ctrl-C stops it. " +
        "Restarting with the same --dir reuses the same users, app and tokens, except that a fresh free user " +
        "plays bob when an earlier run of the tour used bob's quota.",
    )
    .option(
      "--port <port>",
      `control plane port; a free one is used if it is taken (default ${DEFAULT_PORT})`,
      parsePort,
    )
    .option("--dir <dir>", "directory for the demo's database and credentials", ".gpupool")
    .addHelpText(
      "after",
      "\nThe admin token is GPUPOOL_ADMIN_TOKEN when set, otherwise a random one (saved in the directory).",
    )
    .action(async (flags: DemoFlags) => {
      // Loaded here, not at the top: the server package is heavy and other commands do not need it.
      const { normalizeConfig } = await import("@gpupool/server");
      const { closeOnSignals, startServer, stderrLogger } = await import("../serve.js");
      const dir = resolve(flags.dir);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const creds = readCredentials(dir, (message) => err(`warning: ${message}`));
      const envToken = adminTokenFromEnv();
      const adminSource = envToken !== undefined ? "env" : creds.adminToken !== undefined ? "saved" : "generated";
      const adminToken = envToken ?? creds.adminToken ?? randomAdminToken();
      if (envToken === undefined) creds.adminToken = adminToken;

      const storage = `sqlite:${join(dir, "demo.db")}`;
      const config = (port: number) =>
        normalizeConfig(
          {
            server: { host: "127.0.0.1", port },
            storage: { url: storage },
            pool: { simulated: [{ node: "sim-0", gpus: 2, name: "Simulated H200", memory_gb: 141 }] },
            billing: DEMO_BILLING,
            log: { level: "warn" },
          },
          "demo configuration",
        );
      const logger = stderrLogger("warn");
      const { server, note } = await startOnAnyPort(flags.port ?? DEFAULT_PORT, (port) =>
        startServer(config(port), { adminToken, logger }),
      );
      let app: DemoApp | null = null;
      let edge: RunningEdge | null = null;
      let agent: RunningAgent | null = null;
      const closeAll = async () => {
        await agent?.close();
        await edge?.close();
        await app?.close();
        await server.close();
      };
      try {
        const admin = createClient({ url: server.url, adminToken }).admin;
        const ada = await ensureUser(admin, creds, "ada", "pro");
        const demoApp = await ensureApp(admin, creds, APP_NAME, ada.user.id);
        const asApp = createClient({ url: server.url, appKey: demoApp.app.key, adminToken });
        const quotaOf = async (userId: string): Promise<Quota> =>
          asApp.quota({ ipToken: (await asApp.ipToken({ app: demoApp.app.id, user: userId })).token });
        // The tour uses up bob's free quota, and a restart within the day would find it used: then
        // a fresh free user plays bob, so the tour's steps show the same on every start. The calls
        // the previous bob left running (step 3's) are ended, so their GPU slots are free again.
        const previousBob = creds.users["bob"];
        const bob = await ensureUser(admin, creds, "bob", "free", async (user) => {
          const q = await quotaOf(user.id).catch(() => null);
          return q === null || (q.used === 0 && q.reserved === 0 && q.runs === 0);
        });
        if (bob.outcome === "fresh" && previousBob !== undefined) await endCallsOf(asApp, previousBob.id);
        const previousCleo = creds.users["cleo"];
        const cleo = await ensureCleo(admin, creds, server.url);
        if (cleo.outcome === "fresh" && previousCleo !== undefined) await endOwnCalls(server.url, previousCleo.token);
        const demoEdge = await ensureKeyed(admin, creds, "edge", (key) =>
          createClient({ url: server.url, appKey: key })
            .ipToken({ app: demoApp.app.id, ip: "127.0.0.1" })
            .then(
              () => true,
              () => false,
            ),
        );
        // A node key is valid when the pool answers its heartbeat with anything but 401/403.
        const demoNode = await ensureKeyed(admin, creds, "node", (key) =>
          fetch(`${server.url}/v1/nodes/heartbeat`, {
            method: "POST",
            headers: { authorization: `Bearer ${key}` },
          }).then(
            (r) => r.status !== 401 && r.status !== 403,
            () => false,
          ),
        );
        const credentialsPath = writeCredentials(dir, creds);
        const poolPort = Number(new URL(server.url).port);
        app = await appOnNextPort(poolPort, server.url, demoApp.app.key);
        const { startEdge } = await import("@gpupool/edge");
        const appPort = Number(new URL(app.url).port);
        const edgeOn = (port: number) =>
          startEdge({
            server: server.url,
            edgeKey: demoEdge.principal.key,
            apps: [{ name: demoApp.app.name, upstream: new URL(app?.url ?? "") }],
            host: "127.0.0.1",
            port,
            log: (line) => err(`edge: ${line}`),
          });
        edge = await edgeOn(appPort + 1 <= 65_535 ? appPort + 1 : 0).catch((error: unknown) => {
          if ((error as NodeJS.ErrnoException).code !== "EADDRINUSE") throw error;
          return edgeOn(0);
        });
        // A GPU host's agent with one simulated GPU, serving the spaces device API.
        const agentPkg = await import("@gpupool/agent");
        const edgePort = Number(new URL(edge.url).port);
        const agentOn = (port: number) =>
          agentPkg.startAgent({
            server: server.url,
            nodeKey: demoNode.principal.key,
            devices: agentPkg.simulatedDevices(1, agentPkg.simulationSeed(demoNode.principal.key)),
            host: "127.0.0.1",
            port,
            log: logger,
            // Beside the demo's database, not in the user's home directory.
            stateFile: join(dir, "agent-state.json"),
          });
        agent = await agentOn(edgePort + 1 <= 65_535 ? edgePort + 1 : 0).catch((error: unknown) => {
          if ((error as NodeJS.ErrnoException).code !== "EADDRINUSE") throw error;
          return agentOn(0);
        });

        // Let the agent register its GPU before the tour tells people to use it.
        for (let i = 0; i < 50 && !agent.ready(); i++) await new Promise((r) => setTimeout(r, 100));

        // Only a nicety for the header; the tour works without it.
        const bobQuota = await quotaOf(bob.user.id).catch(() => null);
        // One-time sign-in links to the dashboard, for each demo user and the operator.
        const link = (token: string) => dashboardLink(server.url, token).catch(() => null);
        const links = {
          ada: await link(ada.user.token),
          bob: await link(bob.user.token),
          cleo: await link(cleo.user.token),
          admin: await link(adminToken),
        };
        closeOnSignals(closeAll);
        out(
          renderTour(
            {
              poolUrl: server.url,
              appUrl: app.url,
              edgeUrl: edge.url,
              agentUrl: agent.url,
              node: demoNode.principal.name,
              storage,
              portNote: note,
              adminToken,
              adminSource,
              ada: { ...ada.user, outcome: ada.outcome },
              bob: { ...bob.user, outcome: bob.outcome },
              cleo: { ...cleo.user, outcome: cleo.outcome },
              bobQuota,
              app: { ...demoApp.app, outcome: demoApp.outcome },
              credentialsPath,
              dir,
              scratchDir: shownPath(dir),
              dashboard: {
                ada: links.ada?.url ?? null,
                bob: links.bob?.url ?? null,
                cleo: links.cleo?.url ?? null,
                admin: links.admin?.url ?? null,
                expiresAt: links.admin?.expires_at ?? null,
              },
            },
            new Date(),
          ),
        );
      } catch (error) {
        await closeAll().catch(() => undefined);
        throw error;
      }
    });
}
