import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Fastify from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../../../test/pg/postgres-url.js";
import { installErrorHandling } from "../src/http/problems.js";
import { openStorage } from "../src/storage/open-store.js";
import { LeadershipLostError, StorageUnavailableError } from "../src/storage/store.js";
import type { Storage } from "../src/storage/store.js";
import { ADMIN, serveAt, waitFor } from "./harness.js";
import type { TestServer } from "./harness.js";
import { TcpProxy } from "./tcp-proxy.js";

/**
 * A TCP proxy to PostgreSQL that, once armed, cuts the connection on which a transaction that
 * inserted a row commits — after PostgreSQL committed it, before its answer (CommandComplete
 * `COMMIT`) reaches the replica: the write is in the database, and its caller cannot know.
 */
class CommitCutter {
  armed = false;
  cuts = 0;
  private readonly proxy: TcpProxy;

  constructor(target: { host: string; port: number }) {
    this.proxy = new TcpProxy(target, (conn) => {
      let pending = Buffer.alloc(0);
      let inserted = false;
      return {
        fromServer: (chunk) => {
          // The server's messages: a type byte, then a 4-byte length that counts itself.
          pending = Buffer.concat([pending, chunk]);
          let cut = false;
          while (pending.length >= 5 && pending.length >= 1 + pending.readUInt32BE(1)) {
            const end = 1 + pending.readUInt32BE(1);
            if (pending[0] === 0x43 /* CommandComplete */) {
              const tag = pending.subarray(5, end - 1).toString("latin1");
              if (tag === "BEGIN") inserted = false;
              else if (/^INSERT \d+ [1-9]/.test(tag)) inserted = true;
              else if (tag === "COMMIT" && inserted && this.armed) cut = true;
            }
            pending = pending.subarray(end);
          }
          if (!cut) return true;
          this.armed = false;
          this.cuts++;
          conn.cut();
          return false;
        },
      };
    });
  }

  /** `url` with its host and port replaced by the proxy's. */
  async listen(url: string): Promise<string> {
    const port = await this.proxy.listen();
    const u = new URL(url);
    u.hostname = "127.0.0.1";
    u.port = String(port);
    return u.toString();
  }

  close(): Promise<void> {
    return this.proxy.close();
  }
}

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c().catch(() => undefined);
});

/** A cutter in front of the test PostgreSQL server, and `url` through it. */
async function cutterFor(url: string): Promise<{ cutter: CommitCutter; via: string }> {
  const u = new URL(url);
  const cutter = new CommitCutter({ host: u.hostname, port: Number(u.port) });
  cleanup.push(() => cutter.close());
  return { cutter, via: await cutter.listen(url) };
}

/** What the answer must say once a COMMIT's answer was lost: maybe changed, and how to find out. */
function expectOutcomeUnknown(body: Record<string, unknown>): void {
  expect(body).toMatchObject({ code: "storage_unavailable", reason: "outcome_unknown", status: 503 });
  expect(body["detail"]).toMatch(/whether they took effect is not known/);
  expect(body["detail"]).toMatch(/same Idempotency-Key/);
  expect(body["detail"]).not.toMatch(/nothing was changed/i);
}

describe("an answer whose outcome is unknown never says nothing was changed", () => {
  it.each([
    ["a write whose COMMIT's answer was lost", new StorageUnavailableError("lost", { reason: "outcome_unknown" })],
    ["the leader's session lost while committing", new LeadershipLostError("lost", { outcomeUnknown: true })],
  ])("%s: 503 outcome_unknown, retry with the same Idempotency-Key", async (_, thrown) => {
    const app = Fastify({ logger: false });
    installErrorHandling(app);
    app.get("/x", async () => {
      throw thrown;
    });
    const res = await app.inject({ method: "GET", url: "/x" });
    expect(res.statusCode).toBe(503);
    expect(res.headers["retry-after"]).toBe("1");
    expectOutcomeUnknown(res.json());
    await app.close();
  });
});

describe.skipIf(!postgresUrl())("PostgreSQL: the connection breaks while a COMMIT is in flight", () => {
  it("a plain transaction: outcome_unknown (it did commit), not unreachable", async () => {
    const url = freshPostgresUrl("commit-cut");
    const direct = await openStorage(url);
    cleanup.push(() => direct.close());
    await direct.store.migrate();
    const { cutter, via } = await cutterFor(url);
    const cut = await openStorage(via);
    cleanup.push(() => cut.close());
    const user = { id: "u_cut", name: "cut", tier: "free", tokenHash: "th-cut", quotaOverrideMs: null, createdAt: 1 };
    cutter.armed = true;
    const err: unknown = await cut.store
      .transaction((t) => t.users.insert(user))
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(cutter.cuts).toBe(1);
    expect(err).toBeInstanceOf(StorageUnavailableError);
    expect((err as StorageUnavailableError).reason).toBe("outcome_unknown");
    expect(await direct.store.read((t) => t.users.get("u_cut"))).toMatchObject({ name: "cut" });
    // A read whose COMMIT's answer is lost changed nothing either way: the connection is just gone.
    cutter.armed = true;
    expect(await cut.store.read((t) => t.users.get("u_cut"))).toMatchObject({ name: "cut" });
  });

  it("an admission through a follower (its group's COMMIT): 503 outcome_unknown; the retry with the same Idempotency-Key gets the lease it made", async () => {
    const storageUrl = freshPostgresUrl("follower-cut");
    const raw = { pool: { simulated: [{ node: "sim-0", gpus: 2 }] } };
    const dir = () => mkdtempSync(join(tmpdir(), "gpupool-cut-"));
    const leader: TestServer = await serveAt(dir(), raw, { storageUrl });
    cleanup.push(() => leader.close());
    await waitFor(async () => (await leader.call("GET", "/readyz")).body.leader, 10_000);
    // The follower's store goes through the cutter; its coordination (leadership, messages) does not.
    const { cutter, via } = await cutterFor(storageUrl);
    const coordinated = await openStorage(storageUrl);
    const cut = await openStorage(via);
    const storage: Storage = {
      store: cut.store,
      coordination: coordinated.coordination,
      close: async () => {
        await coordinated.close();
        await cut.close();
      },
    };
    const follower: TestServer = await serveAt(dir(), raw, { storageUrl, storage });
    cleanup.push(() => follower.close());
    expect((await follower.call("GET", "/readyz")).body.leader).toBe(false);
    const owner = await leader.user("owner", "pro");
    const app = await leader.appFor("demo", owner.id);
    const post = () =>
      follower.call("POST", "/v1/leases", {
        token: app.key,
        body: { duration: 20 },
        headers: { "idempotency-key": "cut-1" },
      });

    cutter.armed = true;
    const lost = await post();
    expect(cutter.cuts).toBe(1);
    expect(lost.status).toBe(503);
    expectOutcomeUnknown(lost.body);

    const again = await post();
    expect([201, 202]).toContain(again.status);
    const leases = (await leader.call("GET", "/v1/leases?limit=50", { token: ADMIN })).body.leases;
    expect(leases.map((l: { id: string }) => l.id)).toEqual([again.body.id]);
  }, 60_000);
});
