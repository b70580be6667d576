// What a request gets when it cannot be read at all: Node's HTTP parser refused it (its
// `clientError`), before any route or framework code saw it. The control plane and the node agent
// both answer these as problems, like every other error; the socket part is theirs.
import { problem } from "./problem.js";
import type { Problem } from "./problem.js";

/**
 * At most `max` characters of something a client sent, to quote in a detail: a person sees what
 * was meant, and an answer never grows with the input. Only printable ASCII is kept.
 */
export function excerpt(text: string, max = 40): string {
  const printable = text.replace(/[^\x20-\x7e]/g, "?");
  return printable.length <= max ? printable : `${printable.slice(0, max)}…`;
}

/** Why llhttp refused a request, by its error code, in words; other codes get the general sentence. */
const MALFORMED: Readonly<Record<string, string>> = {
  HPE_INVALID_TRANSFER_ENCODING:
    "its Transfer-Encoding is not one this server reads (chunked, last), or it is sent with Content-Length",
  HPE_UNEXPECTED_CONTENT_LENGTH: "it has Content-Length more than once, or with Transfer-Encoding",
  HPE_INVALID_CONTENT_LENGTH: "its Content-Length is not a number",
  HPE_INVALID_CHUNK_SIZE: "a chunk of its chunked body does not start with a hexadecimal size",
  HPE_STRICT: "a chunk of its chunked body does not end with CRLF",
  HPE_LF_EXPECTED: "a line does not end with CRLF (a bare CR)",
  HPE_CR_EXPECTED: "a line does not end with CRLF (a bare LF)",
  HPE_INVALID_HEADER_TOKEN: "a header name or value has a character HTTP does not allow",
  HPE_INVALID_METHOD: "its method is not an HTTP method",
  HPE_INVALID_URL: "its request target has a character HTTP does not allow",
  HPE_INVALID_VERSION: "its request line does not end with HTTP/1.0 or HTTP/1.1 and CRLF",
  HPE_INVALID_EOF_STATE: "the connection closed in the middle of it",
};

const LATIN1 = new TextDecoder("latin1");
const UTF8 = new TextEncoder();

/** The first bytes of what the client sent, as far as the parser said (its `rawPacket`). */
function head(rawPacket: unknown): string {
  return rawPacket instanceof Uint8Array ? LATIN1.decode(rawPacket.subarray(0, 64 * 1024)) : "";
}

/**
 * The problem a request Node's parser refused is answered with. `maxHeaderBytes` is the parser's
 * limit on the request line and headers together (`http.maxHeaderSize`). When the request line
 * alone takes more than half of it, the overflow is a 414 (the URL is too long), else a 431.
 */
export function clientErrorProblem(
  err: { readonly code?: string | undefined; readonly rawPacket?: unknown },
  maxHeaderBytes: number,
): Problem {
  const kib = Math.round(maxHeaderBytes / 1024);
  if (err.code === "ERR_HTTP_REQUEST_TIMEOUT" || err.code === "ERR_HTTP_HEADERS_TIMEOUT")
    return problem(
      "request_timeout",
      "The request did not arrive in time (its headers or body came too slowly), so it was not read. Nothing was changed; send it again.",
    );
  if (err.code === "HPE_HEADER_OVERFLOW") {
    const text = head(err.rawPacket);
    const lineEnd = text.indexOf("\n");
    if (/^[A-Z]{3,10} /.test(text) && (lineEnd < 0 || lineEnd > maxHeaderBytes / 2))
      return problem(
        "uri_too_long",
        `The request's URL (${excerpt(text.slice(text.indexOf(" ") + 1))}) is longer than this server reads (${kib} KiB with the headers), so it was not read. Nothing was changed.`,
      );
    return problem(
      "headers_too_large",
      `The request's headers are larger than this server reads (${kib} KiB with the request line), so it was not read. Nothing was changed; send fewer or shorter headers (a cookie or token that grew?).`,
    );
  }
  const why = err.code === undefined ? undefined : MALFORMED[err.code];
  return problem(
    "invalid_request",
    `The request is not well-formed HTTP/1.1${why === undefined ? "" : `: ${why}`}. It was not read and nothing was changed.`,
  );
}

/**
 * The whole HTTP/1.1 response carrying `p`, for a socket whose request never became a request
 * object. The connection is closed after it: what follows a request that could not be framed
 * cannot be framed either. A HEAD request (as far as its first bytes say) gets no body.
 */
export function rawProblemResponse(p: Problem, rawPacket?: unknown): string {
  const body = JSON.stringify(p);
  const headOnly = head(rawPacket).startsWith("HEAD ");
  return (
    `HTTP/1.1 ${p.status} ${p.title}\r\n` +
    "Content-Type: application/problem+json\r\n" +
    `Content-Length: ${UTF8.encode(body).length}\r\n` +
    "Connection: close\r\n\r\n" +
    (headOnly ? "" : body)
  );
}
