import { maxHeaderSize } from "node:http";
import type { Socket } from "node:net";
import { clientErrorProblem, excerpt, problem, rawProblemResponse } from "@gpupool/core";
import type { Problem } from "@gpupool/core";
import type { FastifyError } from "fastify";

/** The longest path parameter: ids are ~20 characters, names at most 64. */
export const MAX_PARAM_LENGTH = 100;

/**
 * A request Node's parser could not read (bad framing, a bare CR, Content-Length with
 * Transfer-Encoding, headers over 16 KiB, too slow): answered as a problem like every other
 * error, rather than Fastify's own JSON, and the connection closed. Clients cause these at will,
 * so nothing is logged.
 */
export function answerClientError(err: Error & { code?: string; rawPacket?: unknown }, socket: Socket): void {
  if (err.code === "ECONNRESET" || socket.destroyed) return;
  // As Node's own handler does: nothing is written into a response already under way.
  const responding = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent;
  if (!socket.writable || responding === true) return void socket.destroy();
  socket.end(rawProblemResponse(clientErrorProblem(err, maxHeaderSize), err.rawPacket));
}

/**
 * The problem for the errors Fastify's router raises before any route runs: a path that is not
 * valid percent-encoding, or a path parameter longer than any id or name (`maxParamLength`).
 * Neither quotes more than an excerpt of the path.
 */
export function frameworkErrorProblem(err: FastifyError, url: string): Problem {
  const path = url.split("?")[0] ?? "";
  if (err.code === "FST_ERR_MAX_PARAM_LENGTH")
    return problem(
      "uri_too_long",
      `The request's path (${excerpt(path)}, ${path.length} characters) has a segment longer than any id or name this server has (at most ${MAX_PARAM_LENGTH} characters). Nothing was changed.`,
    );
  return problem(
    "invalid_request",
    `The request's path (${excerpt(path)}) is not valid percent-encoding. Nothing was changed.`,
  );
}
