import { patternWords } from "@gpupool/contract";
import { DomainError, excerpt, problem } from "@gpupool/core";
import type { Problem } from "@gpupool/core";
import type { FastifyBaseLogger, FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { sqliteReason } from "../storage/sqlite/file-health.js";
import { LeadershipLostError, StorageUnavailableError, outcomeUnknown } from "../storage/store.js";
import type { StorageUnavailableReason } from "../storage/store.js";

export function sendProblem(reply: FastifyReply, p: Problem, retryAfterS: number | null = null): FastifyReply {
  if (retryAfterS !== null) reply.header("retry-after", String(retryAfterS));
  return reply.code(p.status).type("application/problem+json").send(p);
}

interface AjvError {
  instancePath?: string;
  message?: string;
  keyword?: string;
  params?: Record<string, unknown>;
}

function param(e: AjvError, name: string): string {
  const v = e.params?.[name];
  return typeof v === "string" ? v : "";
}

function fieldOf(e: AjvError, context: string): string {
  const base = (e.instancePath ?? "").replace(/^\//, "").replace(/\//g, ".");
  // A property name is the client's: quoted only as an excerpt, so the answer cannot grow with it.
  if (e.keyword === "additionalProperties")
    return [base, excerpt(param(e, "additionalProperty"))].filter(Boolean).join(".");
  if (e.keyword === "required") return [base, param(e, "missingProperty")].filter(Boolean).join(".");
  return base || context;
}

/**
 * One entry per field. A value that may be one of several kinds (`anyOf`, e.g. a number or null)
 * fails each: its branches' messages are said as alternatives ("must be >= 1 or must be null"),
 * not beside a third that only says none matched.
 */
function validationErrors(validation: readonly AjvError[], context: string): { field: string; message: string }[] {
  const byField = new Map<string, { messages: string[]; anyOf: boolean }>();
  for (const e of validation) {
    const field = fieldOf(e, context);
    const entry = byField.get(field) ?? { messages: [], anyOf: false };
    const message = messageOf(e);
    if (e.keyword === "anyOf") entry.anyOf = true;
    else if (!entry.messages.includes(message)) entry.messages.push(message);
    byField.set(field, entry);
  }
  return [...byField].flatMap(([field, { messages, anyOf }]) =>
    anyOf
      ? [{ field, message: messages.join(" or ") || "is not of an accepted kind" }]
      : messages.map((message) => ({ field, message })),
  );
}

function messageOf(e: AjvError): string {
  if (e.keyword === "additionalProperties") return "is not a known field";
  if (e.keyword === "pattern") {
    const words = patternWords(param(e, "pattern"));
    if (words !== undefined) return `must be ${words}`;
  }
  if (e.keyword === "enum")
    return `must be one of ${(e.params?.["allowedValues"] as unknown[] | undefined)?.join(", ") ?? "the allowed values"}`;
  return e.message ?? "is invalid";
}

/** What a person is told when the database could not do the work, by why (the log has the database's own words). */
const STORAGE_UNAVAILABLE = {
  unreachable: {
    detail: "The pool's database cannot be reached right now; nothing was changed. Retry in a few seconds.",
    retryAfterS: 5,
  },
  timeout: {
    detail: "The pool's database did not answer in time; nothing was changed. Retry in a few seconds.",
    retryAfterS: 2,
  },
  contention: {
    detail:
      "Another request for the same person or lease was being handled at the same moment (on this server or another replica); nothing was changed. Retry in a second.",
    retryAfterS: 1,
  },
  stalled: {
    detail:
      "This server stalled in the middle of a database transaction and the database ended it; nothing was changed. Retry.",
    retryAfterS: 1,
  },
  outcome_unknown: {
    detail:
      "The connection to the pool's database broke while this request's changes were being committed, so whether they took effect is not known: they may have. Retry with the same Idempotency-Key (the SDK does), which returns the lease if it was made, or look the lease up.",
    retryAfterS: 1,
  },
  disk_full: {
    detail:
      "The disk the pool's database is on is full; nothing was changed. The operator must free space: the pool catches up by itself once there is room.",
    retryAfterS: 30,
  },
  database_missing: {
    detail:
      "The pool's database file was deleted or replaced while the server ran, or is damaged (it no longer reads as a database), so the server writes nothing more (it would be lost); nothing was changed. Tell the operator: the server must be restarted on its database (restored from a backup if damaged).",
    retryAfterS: 60,
  },
  write_failed: {
    detail:
      "The pool's database could not write (an I/O error); nothing was changed. Retry shortly, and tell the operator if it persists.",
    retryAfterS: 5,
  },
  starting: {
    detail: "The pool is starting: its state is being restored from the database. Retry in a moment.",
    retryAfterS: 1,
  },
} satisfies Record<StorageUnavailableReason, { detail: string; retryAfterS: number }>;

/** The 503 for a storage failure: what its reason means for a person, and when to retry. */
export function sendStorageUnavailable(reply: FastifyReply, err: StorageUnavailableError): FastifyReply {
  const { detail, retryAfterS } = STORAGE_UNAVAILABLE[err.reason];
  return sendProblem(reply, problem("storage_unavailable", detail, { reason: err.reason }), retryAfterS);
}

/** The request's logger with its id bound (requests share the server's logger unless request logging is on). */
function logFor(req: FastifyRequest): FastifyBaseLogger {
  return req.log === req.server.log ? req.log.child({ reqId: req.id }) : req.log;
}

/**
 * Every error leaves as problem+json with a stable code. Broken rules (DomainError) carry their
 * own problem; framework errors map to 4xx codes; anything else is a bug: logged with its stack,
 * answered with a plain 500 that reveals nothing.
 */
export function installErrorHandling(
  app: FastifyInstance,
  /** Answers a request no route took, when it can (the dashboard's pages); false: 404 problem. */
  fallback: (req: FastifyRequest, reply: FastifyReply) => Promise<boolean> = async () => false,
): void {
  app.setNotFoundHandler(async (req, reply) => {
    if (await fallback(req, reply)) return reply;
    return sendProblem(
      reply,
      problem(
        "not_found",
        `There is no ${excerpt(req.method, 10)} ${excerpt(req.url.split("?")[0] ?? "")} on this server. The API is under /v1 (see the README).`,
      ),
    );
  });
  app.setErrorHandler((err: FastifyError & { validation?: AjvError[]; validationContext?: string }, req, reply) => {
    if (err instanceof DomainError) return sendProblem(reply, err.problem);
    if (err.validation) {
      const errors = validationErrors(err.validation, err.validationContext ?? "body");
      const detail = `The request ${err.validationContext ?? "body"} is invalid: ${errors.map((e) => `${e.field} ${e.message}`).join("; ")}. Nothing was changed.`;
      return sendProblem(reply, problem("invalid_request", detail, { errors }));
    }
    switch (err.code) {
      case "FST_ERR_CTP_BODY_TOO_LARGE":
        return sendProblem(
          reply,
          problem("payload_too_large", "The request body is larger than this server accepts. Nothing was changed."),
        );
      case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
        return sendProblem(
          reply,
          problem("unsupported_media_type", "Send JSON bodies with Content-Type: application/json."),
        );
      case "FST_ERR_CTP_INVALID_JSON_BODY":
      case "FST_ERR_CTP_EMPTY_JSON_BODY":
        return sendProblem(
          reply,
          problem("invalid_request", "The request body is not valid JSON. Nothing was changed.", {
            errors: [{ field: "body", message: "is not valid JSON" }],
          }),
        );
      default:
        break;
    }
    if ((err as Error) instanceof StorageUnavailableError) {
      const unavailable = err as unknown as StorageUnavailableError;
      // Starting and contention are the ordinary course of things; the rest is the operator's to see.
      if (unavailable.reason === "starting" || unavailable.reason === "contention")
        logFor(req).warn({ err }, "storage unavailable");
      else logFor(req).error({ err }, "storage unavailable");
      return sendStorageUnavailable(reply, unavailable);
    }
    if ((err as Error) instanceof LeadershipLostError) {
      logFor(req).warn({ err }, "leadership lost during a request");
      const lost = err as unknown as LeadershipLostError;
      // Lost while committing: the same answer as any write whose COMMIT's answer was lost.
      if (lost.outcomeUnknown) return sendStorageUnavailable(reply, outcomeUnknown(lost));
      return sendProblem(
        reply,
        problem(
          "storage_unavailable",
          "This replica's session with the pool's database ended while handling the request (the database restarted or cannot be reached), so it no longer leads the pool; another replica, or this one once the database is back, takes over within seconds. Nothing was changed; retry.",
          { reason: "leadership_lost" },
        ),
        1,
      );
    }
    // A SQLite error the adapter passed on as it was (a failed read): the same reasons as its own.
    const sqlite = typeof err.code === "string" && err.code.startsWith("SQLITE_") ? sqliteReason(err.code) : null;
    if (sqlite !== null) {
      logFor(req).error({ err }, "storage error");
      return sendStorageUnavailable(reply, new StorageUnavailableError(err.message, { cause: err, reason: sqlite }));
    }
    const status = typeof err.statusCode === "number" ? err.statusCode : 500;
    if (status >= 400 && status < 500) {
      const code =
        status === 401
          ? "unauthorized"
          : status === 404
            ? "not_found"
            : status === 413
              ? "payload_too_large"
              : "invalid_request";
      return sendProblem(reply, problem(code, `The request was refused: ${excerpt(err.message, 200)}`));
    }
    logFor(req).error({ err }, "unhandled error");
    return sendProblem(
      reply,
      problem(
        "internal",
        "Something went wrong on the server; it has been logged. Nothing secret is shown here — retry, and tell the operator if it persists.",
      ),
    );
  });
}
