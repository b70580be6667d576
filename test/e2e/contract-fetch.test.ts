import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkAnswersOf } from "./contract-fetch.js";

/** A stand-in server whose /healthz answer is not what the contract says (a server binary that drifted). */
async function listen(): Promise<{ server: Server; url: string }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ nope: 1 }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe("the end-to-end suites check a control plane's answers against the contract", () => {
  let plane: { server: Server; url: string };
  let other: { server: Server; url: string };
  beforeAll(async () => {
    plane = await listen();
    other = await listen();
    checkAnswersOf(plane.url);
  });
  afterAll(() => {
    plane.server.close();
    other.server.close();
  });

  it("an answer of a control plane the contract does not describe fails the call that got it", async () => {
    await expect(fetch(`${plane.url}/healthz`)).rejects.toThrow(/healthz/);
  });

  it("answers of anything else (an edge, an app) are left alone", async () => {
    expect((await fetch(`${other.url}/healthz`)).status).toBe(200);
  });
});
