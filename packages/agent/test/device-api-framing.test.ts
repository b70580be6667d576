import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rawRequest } from "../../../test/raw-http.js";
import type { RawAnswer } from "../../../test/raw-http.js";
import { startAgent } from "../src/index.js";
import type { RunningAgent } from "../src/index.js";
import { startFakeControlPlane } from "./fake-control-plane.js";
import type { FakeControlPlane } from "./fake-control-plane.js";

/**
 * The device API over a real socket, for requests that fail before any route runs — in Node's
 * parser or Fastify's router: problems with a stable code whose status is the code's, never more
 * than an excerpt of the input, and no lease asked of the pool.
 */

const APP_KEY = "gpu_a_device-api-framing-key";
let cp: FakeControlPlane;
let agent: RunningAgent;
let port: number;

beforeAll(async () => {
  cp = await startFakeControlPlane();
  agent = await startAgent({
    server: cp.url,
    nodeKey: "gpu_n_device-api-framing-node",
    devices: [
      { index: 0, uuid: "GPU-00000000-0000-0000-0000-000000000000", name: "Simulated GPU", memoryMb: 1, slots: 2 },
    ],
    port: 0,
    log: pino({ level: "silent" }),
    defaultAppKey: null,
    stateFile: null,
  });
  port = Number(new URL(agent.url).port);
});
afterAll(async () => {
  await agent?.close();
  await cp?.close();
});

function expectProblem(r: RawAnswer, status: number, code: string): Record<string, unknown> {
  expect({ status: r.status, contentType: r.headers["content-type"] }, r.raw.slice(0, 400)).toEqual({
    status,
    contentType: expect.stringMatching(/^application\/problem\+json/),
  });
  const body = JSON.parse(r.body) as Record<string, unknown>;
  expect(body).toMatchObject({ status, code, type: `urn:gpupool:problem:${code}` });
  expect(r.raw.length).toBeLessThan(1_500);
  expect(r.body).not.toContain("a".repeat(100));
  return body;
}

const request = (line: string, headers: string[] = [], body = ""): string =>
  `${line}\r\nHost: 127.0.0.1\r\n${headers.map((h) => `${h}\r\n`).join("")}\r\n${body}`;

describe("the device API, before any route", () => {
  it("an app key of 10,000 characters in the path is 414 uri_too_long quoting only the path's start", async () => {
    const r = await rawRequest(port, request(`POST /apps/${"a".repeat(10_000)}/schedule HTTP/1.1`));
    const body = expectProblem(r, 414, "uri_too_long");
    expect(body["detail"]).toMatch(/\(\/apps\/a+…, 10015 characters\)/);
  });

  it("headers over 16 KiB are 431 headers_too_large", async () => {
    const r = await rawRequest(
      port,
      request(`POST /apps/${APP_KEY}/schedule HTTP/1.1`, [`X-Pad: ${"a".repeat(20_000)}`]),
    );
    expectProblem(r, 431, "headers_too_large");
  });

  it("a URL of 20 KB is 414 uri_too_long", async () => {
    const r = await rawRequest(port, request(`POST /apps/${APP_KEY}/schedule?taskId=${"a".repeat(20_000)} HTTP/1.1`));
    expectProblem(r, 414, "uri_too_long");
  });

  const malformed: [string, string][] = [
    [
      "Content-Length with Transfer-Encoding",
      request(
        `POST /apps/${APP_KEY}/schedule HTTP/1.1`,
        ["Content-Length: 5", "Transfer-Encoding: chunked"],
        "0\r\n\r\n",
      ),
    ],
    ["a bare CR", `POST /apps/${APP_KEY}/schedule HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n`],
    [
      "a chunk size that is not hexadecimal",
      request(`POST /apps/${APP_KEY}/schedule HTTP/1.1`, ["Transfer-Encoding: chunked"], "zz\r\nabc\r\n0\r\n\r\n"),
    ],
  ];
  it.each(malformed)("%s is 400 invalid_request, and the pool is asked nothing", async (_name, bytes) => {
    const r = await rawRequest(port, bytes);
    const body = expectProblem(r, 400, "invalid_request");
    expect(body["detail"]).toMatch(/not well-formed HTTP\/1\.1/);
    expect(r.headers["connection"]).toBe("close");
    expect(cp.requests.filter((q) => q.path === "/v1/leases")).toEqual([]);
  });

  it("a path that is not valid percent-encoding is 400 invalid_request", async () => {
    const r = await rawRequest(port, request("POST /apps/%zz/schedule HTTP/1.1"));
    expectProblem(r, 400, "invalid_request");
  });

  it("an unknown 10,000-character path is a 404 quoting only its start", async () => {
    const r = await rawRequest(port, request(`GET /${"a".repeat(10_000)} HTTP/1.1`));
    expect(expectProblem(r, 404, "not_found")["detail"]).toMatch(/There is no GET \/a+… on this gpupool agent/);
  });
});
