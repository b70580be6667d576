import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkServerResponse } from "../../../test/contract/check-response.js";
import { rawRequest } from "../../../test/raw-http.js";
import type { RawAnswer } from "../../../test/raw-http.js";
import type { TestServer } from "./harness.js";
import { ADMIN, allLeases, startTestServer } from "./harness.js";

/**
 * Requests that fail before any route runs — in Node's HTTP parser or Fastify's router — over a
 * real socket, byte for byte as a client sent them: each is answered as a problem with a stable
 * code, never with more than a short excerpt of the input, and changes nothing.
 */

let t: TestServer;
let port: number;
let app: { id: string; key: string };

beforeAll(async () => {
  t = await startTestServer({ server: { port: 0 } });
  port = Number(new URL(await t.server.listen()).port);
  const owner = await t.user("owner", "pro");
  app = await t.appFor("demo", owner.id);
});
afterAll(async () => {
  await t?.close();
});

const LONG = "a".repeat(10_000);

/** A problem with this status and code, as problem+json, and no bigger than a short detail makes it. */
function expectProblem(r: RawAnswer, status: number, code: string): Record<string, unknown> {
  expect({ status: r.status, contentType: r.headers["content-type"] }, r.raw.slice(0, 400)).toEqual({
    status,
    contentType: expect.stringMatching(/^application\/problem\+json/),
  });
  const body = JSON.parse(r.body) as Record<string, unknown>;
  expect(body).toMatchObject({ status, code, type: `urn:gpupool:problem:${code}` });
  expect(String(body["detail"]).length).toBeGreaterThan(10);
  // Never an echo of the input: the whole answer stays small whatever was sent.
  expect(r.raw.length).toBeLessThan(1_000);
  expect(r.body).not.toContain("a".repeat(100));
  return body;
}

const request = (line: string, headers: string[] = [], body = ""): string =>
  `${line}\r\nHost: 127.0.0.1\r\n${headers.map((h) => `${h}\r\n`).join("")}\r\n${body}`;

describe("before any route", () => {
  it("a 10,000-character lease id is 414 uri_too_long quoting only the path's start", async () => {
    const r = await rawRequest(port, request(`GET /v1/leases/${LONG} HTTP/1.1`, [`Authorization: Bearer ${app.key}`]));
    const body = expectProblem(r, 414, "uri_too_long");
    expect(body["detail"]).toMatch(/\(\/v1\/leases\/a{20,40}…, 10011 characters\)/);
    // The route's answer is the contract's.
    checkServerResponse({
      method: "GET",
      url: `/v1/leases/${LONG}`,
      status: r.status,
      contentType: r.headers["content-type"],
      body,
    });
  });

  it("a URL longer than the parser reads (20 KB) is 414 uri_too_long, and the connection is closed", async () => {
    const r = await rawRequest(port, request(`GET /v1/quota?x=${"a".repeat(20_000)} HTTP/1.1`));
    const body = expectProblem(r, 414, "uri_too_long");
    expect(body["detail"]).toMatch(/16 KiB/);
    expect(r.headers["connection"]).toBe("close");
  });

  it("headers over 16 KiB are 431 headers_too_large", async () => {
    const r = await rawRequest(port, request("GET /v1/quota HTTP/1.1", [`X-Padding: ${"a".repeat(20_000)}`]));
    expectProblem(r, 431, "headers_too_large");
  });

  it("the same headers sent in pieces are answered the same", async () => {
    const head = request("GET /v1/quota HTTP/1.1", [`X-Padding: ${"a".repeat(20_000)}`]);
    const r = await rawRequest(port, [head.slice(0, 5_000), head.slice(5_000, 12_000), head.slice(12_000)]);
    expectProblem(r, 431, "headers_too_large");
  });

  it("a HEAD request refused by the parser gets the problem's head and no body", async () => {
    const r = await rawRequest(port, request("HEAD /v1/quota HTTP/1.1", [`X-Padding: ${"a".repeat(20_000)}`]));
    expect(r.status).toBe(431);
    expect(r.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(r.body).toBe("");
  });

  const lease = JSON.stringify({ duration: 5 });
  const malformed: [string, string, RegExp][] = [
    [
      "Content-Length with Transfer-Encoding (request smuggling)",
      request(
        "POST /v1/leases HTTP/1.1",
        [
          "Authorization: Bearer APP_KEY",
          "Content-Type: application/json",
          `Content-Length: ${lease.length}`,
          "Transfer-Encoding: chunked",
        ],
        `${lease.length.toString(16)}\r\n${lease}\r\n0\r\n\r\n`,
      ),
      /Transfer-Encoding/,
    ],
    [
      "a bare CR in the headers",
      `POST /v1/leases HTTP/1.1\r\nHost: x\rX-Smuggled: 1\r\nContent-Length: ${lease.length}\r\n\r\n${lease}`,
      /bare CR/,
    ],
    [
      "a chunk size that is not hexadecimal",
      request(
        "POST /v1/leases HTTP/1.1",
        ["Content-Type: application/json", "Transfer-Encoding: chunked"],
        `zz\r\n${lease}\r\n0\r\n\r\n`,
      ),
      /chunk/,
    ],
    ["a space in a header name", request("GET /v1/quota HTTP/1.1", ["X Padding: 1"]), /header name/],
    ["an unknown HTTP version", request("GET /v1/quota HTTP/9.1"), /HTTP\/1\.1/],
  ];
  it.each(malformed)("%s is 400 invalid_request saying why, and creates no lease", async (_name, bytes, why) => {
    // The app key goes in once the app exists (the table is built before beforeAll runs).
    const r = await rawRequest(port, bytes.replace("APP_KEY", app.key));
    const body = expectProblem(r, 400, "invalid_request");
    expect(body["detail"]).toMatch(/not well-formed HTTP\/1\.1/);
    expect(body["detail"]).toMatch(why);
    expect(r.headers["connection"]).toBe("close");
    expect(await allLeases(t)).toEqual([]);
  });

  it("a path that is not valid percent-encoding is 400 invalid_request", async () => {
    const r = await rawRequest(port, request("GET /v1/leases/%zz HTTP/1.1", [`Authorization: Bearer ${ADMIN}`]));
    const body = expectProblem(r, 400, "invalid_request");
    expect(body["detail"]).toMatch(/percent-encoding/);
  });

  it("an unknown 10,000-character path is a 404 quoting only its start", async () => {
    const r = await rawRequest(port, request(`GET /v1/nope/${LONG} HTTP/1.1`));
    const body = expectProblem(r, 404, "not_found");
    expect(body["detail"]).toMatch(/There is no GET \/v1\/nope\/a+… on this server/);
  });

  it("an unknown field with a 10,000-character name is named by an excerpt", async () => {
    const body = `{"${LONG}": 1}`;
    const r = await rawRequest(
      port,
      request(
        "POST /v1/leases HTTP/1.1",
        [`Authorization: Bearer ${app.key}`, "Content-Type: application/json", `Content-Length: ${body.length}`],
        body,
      ),
    );
    const p = expectProblem(r, 400, "invalid_request");
    expect(p["errors"]).toEqual([{ field: expect.stringMatching(/^a{40}…$/), message: "is not a known field" }]);
  });

  it("a well-formed request on the same server still works", async () => {
    const r = await rawRequest(port, request("GET /v1/quota HTTP/1.1", [`Authorization: Bearer ${app.key}`]));
    expect(r.status).toBe(200);
  });
});

/**
 * Node keeps the first of two Authorization or Content-Type headers and joins two X-IP-Token
 * headers with ", "; a server that read them so would act on a guess. Each is refused instead.
 */
describe("headers sent twice", () => {
  it("two Authorization headers are 400 invalid_request naming the header, whichever would have worked", async () => {
    for (const [first, second] of [
      [app.key, ADMIN],
      [ADMIN, app.key],
    ]) {
      const r = await rawRequest(
        port,
        request("GET /v1/leases HTTP/1.1", [`Authorization: Bearer ${first}`, `authorization: Bearer ${second}`]),
      );
      const body = expectProblem(r, 400, "invalid_request");
      expect(body["errors"]).toEqual([{ field: "Authorization", message: "is sent more than once" }]);
      checkServerResponse({
        method: "GET",
        url: "/v1/leases",
        status: r.status,
        contentType: r.headers["content-type"],
        body,
      });
    }
  });

  it("two Content-Type headers are 400 invalid_request, and no lease is made", async () => {
    const lease = JSON.stringify({ duration: 5 });
    const r = await rawRequest(
      port,
      request(
        "POST /v1/leases HTTP/1.1",
        [
          `Authorization: Bearer ${app.key}`,
          "Content-Type: application/json",
          "Content-Type: text/plain",
          `Content-Length: ${lease.length}`,
        ],
        lease,
      ),
    );
    const body = expectProblem(r, 400, "invalid_request");
    expect(body["errors"]).toEqual([{ field: "Content-Type", message: "is sent more than once" }]);
    expect(await allLeases(t)).toEqual([]);
  });

  it("two X-IP-Token headers are refused as several tokens, not read as one joined value", async () => {
    const token = await t.ipToken(app.id, { ip: "203.0.113.9" });
    const r = await rawRequest(
      port,
      request("GET /v1/quota HTTP/1.1", [
        `Authorization: Bearer ${app.key}`,
        `X-IP-Token: ${token}`,
        `X-IP-Token: ${token}`,
      ]),
    );
    const body = expectProblem(r, 401, "invalid_ip_token");
    expect(body).toMatchObject({ reason: "malformed", detail: expect.stringMatching(/Several X-IP-Token headers/) });
  });
});
