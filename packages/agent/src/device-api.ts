import { createHash } from "node:crypto";
import type { Lease } from "@gpupool/contract";
import { DomainError, excerpt, fail, problem } from "@gpupool/core";
import Fastify from "fastify";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Logger } from "pino";
import { callerUid } from "./caller.js";
import { MAX_PARAM_LENGTH, answerClientError, frameworkErrorProblem } from "./client-errors.js";
import { ControlPlaneDown, ControlPlaneRefusal } from "./control-plane.js";
import type { ControlPlane } from "./control-plane.js";
import { authLevel, problemAnswer, refusalAnswer } from "./device-answers.js";
import type { DeviceAnswer, GrantJson } from "./device-answers.js";
import type { NodeDevice } from "./devices.js";
import type { LocalLeases } from "./local-leases.js";
import { judgePid, readPidOwner } from "./pid-ownership.js";
import type { PidCheck } from "./pid-ownership.js";
import { MAX_PID } from "./processes.js";
import { boolParam, parseScheduleQuery, requiredParam } from "./query.js";
import type { RawQuery } from "./query.js";
import { QueueStreams } from "./queue-streams.js";
import { UnusableGrant, grantOnThisHost } from "./host-grant.js";
import type { Requester } from "./host-grant.js";

/** What the device API needs to know about the node's registration. */
export interface Readiness {
  readonly ready: boolean;
  readonly whyNotReady: string;
  readonly nodeName: string | null;
}

export interface DeviceApiOptions {
  readonly cp: ControlPlane;
  readonly leases: LocalLeases;
  readonly readiness: () => Readiness;
  readonly log: Logger;
  /** App key for requests that carry none in their path (/apps/<key>/…) or Authorization header. */
  readonly defaultAppKey: string | null;
  readonly pingIntervalMs: number;
  /** This host's devices: a grant of any other device is given back. */
  readonly devices: readonly NodeDevice[];
  /** How /allow ties a pid to its caller (pid-ownership.ts). */
  readonly pidCheck: PidCheck;
}

export interface DeviceApi {
  readonly app: FastifyInstance;
  readonly queues: QueueStreams;
}

const MAX_URL = 16 * 1024;
const APP_KEY = /^[A-Za-z0-9_-]{1,256}$/;

function send(reply: FastifyReply, a: DeviceAnswer): FastifyReply {
  return reply.code(a.status).headers(a.headers).type(a.contentType).send(a.body);
}

function sendProblem(reply: FastifyReply, p: ReturnType<typeof problem>): FastifyReply {
  return send(reply, problemAnswer(p));
}

/** The app key of a request: in the path (the usual way), else a Bearer header, else the agent's default. */
function appKeyOf(req: FastifyRequest, fallback: string | null): string {
  const fromPath = (req.params as { appKey?: string }).appKey;
  if (fromPath !== undefined) {
    if (!APP_KEY.test(fromPath)) fail("invalid_request", "The app key in the path (/apps/<app-key>/…) is malformed.");
    return fromPath;
  }
  const auth = req.headers.authorization;
  const bearer = typeof auth === "string" ? /^Bearer\s+(\S{1,256})\s*$/i.exec(auth)?.[1] : undefined;
  if (bearer !== undefined) return bearer;
  if (fallback !== null) return fallback;
  return fail(
    "forbidden",
    "No app key: point SPACES_ZERO_DEVICE_API_URL at http://<agent>/apps/<app-key> (or send Authorization: Bearer <app key>, or start the agent with --app-key).",
  );
}

function shortHash(s: string): string {
  return createHash("sha256").update(s).digest("hex").slice(0, 16);
}

/**
 * The device API (docs/agent.md) — what the `spaces` package's ZeroGPU client calls — served at the
 * root and under /apps/<app-key>/. All parameters are query parameters.
 */
export function buildDeviceApi(options: DeviceApiOptions): DeviceApi {
  const { cp, leases, log } = options;
  const app = Fastify({
    logger: false,
    bodyLimit: 4096,
    // App keys travel in the path.
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    return503OnClosing: true,
    // Whatever cannot become a request is answered as a problem too, quoting at most an excerpt.
    clientErrorHandler: answerClientError,
    frameworkErrors: (err, req, reply) => void sendProblem(reply, frameworkErrorProblem(err, req.url)),
  });

  const grant = (lease: Lease, appKey: string, requester: Requester): Promise<GrantJson> =>
    grantOnThisHost(options, lease, appKey, requester);

  const requesters = new Map<string, Requester>();
  const queues = new QueueStreams({
    cp,
    log,
    pingIntervalMs: options.pingIntervalMs,
    // Queued requests carry what /schedule learnt of their caller through this map.
    grant: (lease, appKey) =>
      grant(lease, appKey, requesters.get(lease.id) ?? { reuseKey: null, cgroupPath: null, uid: null }),
    abandon: async (g, appKey) => {
      await leases.release(g.allowToken, appKey, false);
    },
  });

  app.addHook("onRequest", async (req, reply) => {
    if ((req.url ?? "").length > MAX_URL)
      return sendProblem(reply, problem("uri_too_long", `The request URL is longer than ${MAX_URL} characters.`));
  });

  app.setNotFoundHandler((req, reply) => {
    void sendProblem(
      reply,
      problem(
        "not_found",
        `There is no ${excerpt(req.method, 10)} ${excerpt(req.url.split("?")[0] ?? "")} on this gpupool agent. The device API is POST /schedule, /allow, /release, /startup-report and GET /queue-size, at / or under /apps/<app-key>/.`,
      ),
    );
  });

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    if (err instanceof DomainError) return sendProblem(reply, err.problem);
    if (err.code === "FST_ERR_CTP_BODY_TOO_LARGE")
      return sendProblem(
        reply,
        problem("payload_too_large", "The device API takes its parameters in the query string; the body is too large."),
      );
    if (typeof err.statusCode === "number" && err.statusCode >= 400 && err.statusCode < 500)
      return sendProblem(
        reply,
        problem(
          "invalid_request",
          "The request could not be read. The device API takes its parameters in the query string.",
        ),
      );
    log.error({ err, url: req.url.split("?")[0] }, "device API request failed");
    return sendProblem(reply, problem("internal", "The GPU node's agent failed to handle this request; see its log."));
  });

  // Requests carry no body worth reading; whatever the client sends (JSON, form, nothing) is ignored.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, _body, done) => done(null, undefined));

  const routes = async (scope: FastifyInstance): Promise<void> => {
    scope.post("/startup-report", async (_req, reply) => reply.code(200).send({}));

    scope.get("/queue-size", async (_req, reply) => reply.code(200).type("application/json").send(String(queues.size)));

    scope.post("/schedule", async (req, reply) => {
      const appKey = appKeyOf(req, options.defaultAppKey);
      const q = parseScheduleQuery(req.query as RawQuery);
      const readiness = options.readiness();
      if (!readiness.ready) {
        return sendProblem(
          reply,
          problem(
            "control_plane_unavailable",
            `This GPU node cannot take work now: ${readiness.whyNotReady.replace(/\.$/, "")}. Try again shortly.`,
          ),
        );
      }
      const requester: Requester = {
        reuseKey:
          q.cgroupPath !== undefined && q.taskId !== undefined
            ? `${shortHash(appKey)}\n${q.cgroupPath}\n${q.taskId}`
            : null,
        cgroupPath: q.cgroupPath === undefined || q.cgroupPath === "" ? null : q.cgroupPath,
        uid: callerUid(req.socket),
      };
      let answer;
      try {
        answer = await cp.requestLease(
          appKey,
          {
            ...(q.durationS !== undefined ? { duration: q.durationS } : {}),
            ...(q.gpuSize !== undefined ? { size: q.gpuSize } : {}),
            queue: q.enableQueue,
          },
          q.token,
          traceparentOf(req.headers["traceparent"]),
        );
      } catch (error) {
        if (error instanceof ControlPlaneRefusal) {
          log.info(
            { code: error.problem.code, status: error.problem.status },
            `schedule refused by the control plane: ${error.problem.detail}`,
          );
          return send(reply, refusalAnswer(error.problem, error.retryAfterS, Date.now()));
        }
        if (error instanceof ControlPlaneDown) {
          log.warn({ err: error.message }, "schedule: the control plane is unreachable");
          return sendProblem(
            reply,
            problem(
              "control_plane_unavailable",
              `The GPU pool's control plane is not answering (${error.message}). Try again shortly.`,
            ),
          );
        }
        throw error;
      }
      const level = authLevel(answer.lease.identity);
      const headers: Record<string, string> = level === null ? {} : { "x-authenticated": level };
      if (answer.kind === "granted") {
        try {
          return await reply
            .code(200)
            .headers(headers)
            .type("application/json")
            .send(await grant(answer.lease, appKey, requester));
        } catch (error) {
          return sendProblem(
            reply,
            problem(
              "control_plane_unavailable",
              error instanceof Error ? error.message : String(error),
              error instanceof UnusableGrant ? { reason: error.reason } : {},
            ),
          );
        }
      }
      log.info(
        { lease: answer.lease.id, position: answer.lease.position, reason: answer.lease.reason },
        "lease queued; following it for the client",
      );
      requesters.set(answer.lease.id, requester);
      reply.hijack();
      queues.follow(
        reply.raw,
        { ...headers, "x-queuing-reason": answer.lease.reason === "concurrency" ? "concurrency" : "node" },
        appKey,
        answer.lease,
      );
      void reply.raw.once("close", () => requesters.delete(answer.lease.id));
      return reply;
    });

    scope.post("/allow", async (req, reply) => {
      const appKey = appKeyOf(req, options.defaultAppKey);
      const query = req.query as RawQuery;
      const token = requiredParam(query, "allowToken", 256);
      const pidText = requiredParam(query, "pid", 10);
      const pid = /^\d+$/.test(pidText) ? Number(pidText) : NaN;
      if (!(pid >= 2 && pid <= MAX_PID))
        fail(
          "invalid_request",
          `pid must be a process id from 2 to ${MAX_PID}, not "${pidText}" (pid 1 is the init process).`,
          { errors: [{ field: "pid", message: "is not a process id" }] },
        );
      if (pid === process.pid)
        fail("invalid_request", `pid ${pid} is the agent itself.`, {
          errors: [{ field: "pid", message: "is the agent" }],
        });
      const allowUid = callerUid(req.socket);
      const outcome = leases.allow(token, appKey, pid, (lease) =>
        judgePid(options.pidCheck, pid, readPidOwner(pid), {
          allowUid,
          scheduleUid: lease.scheduleUid,
          cgroupPath: lease.cgroupPath,
        }),
      );
      switch (outcome.kind) {
        case "allowed":
          log.info({ lease: outcome.lease.leaseId, pid }, "process allowed on the lease");
          return reply
            .code(200)
            .send({ lease: outcome.lease.leaseId, pid, deadline: new Date(outcome.lease.deadlineAt).toISOString() });
        case "unknown":
          return sendProblem(
            reply,
            problem(
              "not_found",
              "No lease with this allowToken on this agent (unknown token, or granted to another app key).",
            ),
          );
        case "ended":
          return sendProblem(reply, problem("not_found", `This allowToken no longer works: ${outcome.why}.`));
        case "no_such_process":
          return sendProblem(
            reply,
            problem(
              "invalid_request",
              `No process with pid ${pid} on this host. The agent and the app must share a PID namespace (run the agent on the host, outside the app's container, with the app's container in the host PID namespace, or inside the app's container).`,
            ),
          );
        case "not_owned":
          log.warn(
            { pid, reason: outcome.reason, caller_uid: allowUid },
            `refused to allow a process on a lease: ${outcome.detail}`,
          );
          return sendProblem(reply, problem("forbidden", outcome.detail, { reason: outcome.reason }));
        case "forbidden":
          return sendProblem(
            reply,
            problem(
              "forbidden",
              `The agent may not signal pid ${pid} (another user's process): give the agent CAP_KILL (docs/agent.md, Security).`,
              { reason: "agent_may_not_signal" },
            ),
          );
      }
    });

    scope.post("/release", async (req, reply) => {
      const appKey = appKeyOf(req, options.defaultAppKey);
      const query = req.query as RawQuery;
      const token = requiredParam(query, "allowToken", 256);
      const failed = boolParam(query, "fail", false);
      const outcome = await leases.release(token, appKey, failed);
      switch (outcome.kind) {
        case "released":
          log.info({ lease: outcome.lease.leaseId, failed, used: outcome.lease.used }, "lease released");
          // 204: no process was ever allowed on the lease ("GPU device not used" for the client).
          return outcome.lease.used
            ? reply.code(200).send({ lease: outcome.lease.leaseId, released: true })
            : reply.code(204).send();
        case "unknown":
          return sendProblem(
            reply,
            problem(
              "not_found",
              "No lease with this allowToken on this agent (unknown token, or granted to another app key).",
            ),
          );
        case "ended":
          return sendProblem(reply, problem("not_found", `This allowToken no longer works: ${outcome.why}.`));
      }
    });
  };

  void app.register(routes);
  void app.register(routes, { prefix: "/apps/:appKey" });

  app.get("/healthz", async (_req, reply) => {
    const r = options.readiness();
    return reply.code(r.ready ? 200 : 503).send({
      status: r.ready ? "ready" : "not_registered",
      node: r.nodeName,
      devices: options.devices.length,
      leases: leases.size,
      queued: queues.size,
      ...(r.ready ? {} : { detail: r.whyNotReady }),
    });
  });

  return { app, queues };
}

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[^\s]*)?$/;

/** A client's `traceparent`, passed on to the pool when it is well formed (else dropped). */
function traceparentOf(header: string | string[] | undefined): string | undefined {
  return typeof header === "string" && header.length <= 512 && TRACEPARENT.test(header) ? header : undefined;
}
