import { DomainError, excerpt, problem } from "@gpupool/core";
import type { FastifyInstance, FastifyRequest } from "fastify";
import sjson from "secure-json-parse";
import { copies } from "./headers.js";

/** The `charset` parameter of a Content-Type, lower case, or null when there is none. */
function charsetOf(contentType: string): string | null {
  const m = /;\s*charset\s*=\s*"?([^";\s]*)"?/i.exec(contentType);
  return m === null ? null : (m[1] ?? "").toLowerCase();
}

/** Refuses what the JSON parser must not guess at: another charset than UTF-8, or two Content-Types. */
function refusal(req: FastifyRequest): DomainError | null {
  if (copies(req, "content-type") > 1)
    return new DomainError(
      problem(
        "invalid_request",
        "The request has more than one Content-Type header; send exactly one. Nothing was changed.",
        {
          errors: [{ field: "Content-Type", message: "is sent more than once" }],
        },
      ),
    );
  const charset = charsetOf(req.headers["content-type"] ?? "");
  if (charset !== null && charset !== "utf-8" && charset !== "utf8")
    return new DomainError(
      problem(
        "unsupported_media_type",
        `JSON bodies are read as UTF-8 only, and this one says charset=${excerpt(charset, 20)}. Send it as UTF-8 with Content-Type: application/json. Nothing was changed.`,
      ),
    );
  return null;
}

/**
 * JSON bodies only (text/plain would otherwise reach validation and fail with a confusing 400),
 * in UTF-8 only (another charset would be read as if it were UTF-8). An empty body is the same as
 * {} (all lease fields are optional); malformed JSON is a 400, and prototype-poisoning keys are
 * refused outright.
 */
export function acceptJsonBodies(app: FastifyInstance): void {
  app.removeContentTypeParser("text/plain");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (req, body, done) => {
    const refused = refusal(req);
    if (refused !== null) return done(refused, undefined);
    const text = typeof body === "string" ? body : body.toString("utf8");
    if (text.trim() === "") return done(null, null);
    try {
      done(null, sjson.parse(text, null, { protoAction: "error", constructorAction: "error" }));
    } catch {
      const err = Object.assign(new Error("invalid JSON"), { statusCode: 400, code: "FST_ERR_CTP_INVALID_JSON_BODY" });
      done(err, undefined);
    }
  });
}
