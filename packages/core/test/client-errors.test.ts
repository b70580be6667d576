import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { PROBLEM_STATUS, clientErrorProblem, excerpt, rawProblemResponse } from "../src/index.js";

const LIMIT = 16 * 1024;
const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);

/** Requests Node's parser refused, and what a person is told about them. */
describe("clientErrorProblem", () => {
  it("a request too slow to arrive is 408 request_timeout", () => {
    expect(clientErrorProblem({ code: "ERR_HTTP_REQUEST_TIMEOUT" }, LIMIT)).toMatchObject({
      status: 408,
      code: "request_timeout",
    });
  });

  it("an overflow in the request line is 414 uri_too_long, one in the headers 431 headers_too_large", () => {
    const longUrl = bytes(`GET /${"a".repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const longHeader = bytes(`GET / HTTP/1.1\r\nX-A: ${"a".repeat(20_000)}\r\n\r\n`);
    expect(clientErrorProblem({ code: "HPE_HEADER_OVERFLOW", rawPacket: longUrl }, LIMIT)).toMatchObject({
      status: 414,
      code: "uri_too_long",
      detail: expect.stringMatching(/^The request's URL \(\/a{39}…\) is longer than this server reads \(16 KiB/),
    });
    expect(clientErrorProblem({ code: "HPE_HEADER_OVERFLOW", rawPacket: longHeader }, LIMIT)).toMatchObject({
      status: 431,
      code: "headers_too_large",
    });
    // A later piece of a request sent in several writes does not start with its method: headers.
    expect(clientErrorProblem({ code: "HPE_HEADER_OVERFLOW", rawPacket: bytes("aaaa") }, LIMIT).code).toBe(
      "headers_too_large",
    );
  });

  it("framing errors are 400 invalid_request saying what was wrong in words, and unknown ones say it generally", () => {
    expect(clientErrorProblem({ code: "HPE_INVALID_TRANSFER_ENCODING" }, LIMIT).detail).toMatch(
      /^The request is not well-formed HTTP\/1\.1: its Transfer-Encoding .* Content-Length\. It was not read/,
    );
    expect(clientErrorProblem({ code: "HPE_SOMETHING_NEW" }, LIMIT)).toMatchObject({
      status: 400,
      code: "invalid_request",
      detail: "The request is not well-formed HTTP/1.1. It was not read and nothing was changed.",
    });
  });

  it("every answer's status is its code's, and no detail grows with the input", () => {
    fc.assert(
      fc.property(
        fc.constantFrom(
          "HPE_HEADER_OVERFLOW",
          "HPE_INVALID_CHUNK_SIZE",
          "HPE_LF_EXPECTED",
          "ERR_HTTP_REQUEST_TIMEOUT",
          "HPE_INVALID_URL",
          undefined,
        ),
        fc.string({ maxLength: 30_000 }),
        (code, sent) => {
          const p = clientErrorProblem({ code, rawPacket: bytes(sent) }, LIMIT);
          expect(p.status).toBe(PROBLEM_STATUS[p.code]);
          expect(p.detail.length).toBeLessThan(300);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe("excerpt", () => {
  it("keeps at most `max` printable characters and marks a cut", () => {
    expect(excerpt("short")).toBe("short");
    expect(excerpt("x".repeat(50), 10)).toBe(`${"x".repeat(10)}…`);
    expect(excerpt("a\r\nb\u0000c\u00e9")).toBe("a??b?c?");
  });
});

describe("rawProblemResponse", () => {
  it("is a whole HTTP/1.1 response that closes the connection; a HEAD gets no body", () => {
    const p = clientErrorProblem({ code: "HPE_INVALID_METHOD" }, LIMIT);
    const response = rawProblemResponse(p, bytes("GET / HTTP/1.1\r\n"));
    const [head = "", body = ""] = response.split("\r\n\r\n");
    expect(head).toMatch(/^HTTP\/1\.1 400 Invalid request\r\n/);
    expect(head).toContain("Content-Type: application/problem+json");
    expect(head).toContain("Connection: close");
    expect(head).toContain(`Content-Length: ${new TextEncoder().encode(body).length}`);
    expect(JSON.parse(body)).toEqual(p);
    expect(rawProblemResponse(p, bytes("HEAD / HTTP/1.1\r\n")).endsWith("\r\n\r\n")).toBe(true);
  });
});
