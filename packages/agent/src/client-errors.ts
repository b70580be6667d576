import { maxHeaderSize } from "node:http";
import type { Socket } from "node:net";
import { clientErrorProblem, excerpt, problem, rawProblemResponse } from "@gpupool/core";
import type { Problem } from "@gpupool/core";
import type { FastifyError } from "fastify";

/** The longest path parameter of the device API: an app key (`/apps/<app-key>/…`) is ~40 characters. */
export const MAX_PARAM_LENGTH = 300;

/**
 * A request Node's parser could not read (bad framing, headers over 16 KiB, too slow): answered
 * as a problem like the device API's other errors, rather than Fastify's own JSON, and the
 * connection closed. Apps on the host cause these at will, so nothing is logged.
 */
export function answerClientError(err: Error & { code?: string; rawPacket?: unknown }, socket: Socket): void {
  if (err.code === "ECONNRESET" || socket.destroyed) return;
  // As Node's own handler does: nothing is written into a response already under way.
  const responding = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent;
  if (!socket.writable || responding === true) return void socket.destroy();
  socket.end(rawProblemResponse(clientErrorProblem(err, maxHeaderSize), err.rawPacket));
}

/** Fastify's router errors (a path that is not percent-encoding, an overlong path segment), quoting an excerpt of the path. */
export function frameworkErrorProblem(err: FastifyError, url: string): Problem {
  const path = url.split("?")[0] ?? "";
  if (err.code === "FST_ERR_MAX_PARAM_LENGTH")
    return problem(
      "uri_too_long",
      `The request's path (${excerpt(path)}, ${path.length} characters) has a segment longer than any app key (at most ${MAX_PARAM_LENGTH} characters).`,
    );
  return problem("invalid_request", `The request's path (${excerpt(path)}) is not valid percent-encoding.`);
}
