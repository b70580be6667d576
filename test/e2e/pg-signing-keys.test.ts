import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { freshPostgresUrl, postgresUrl } from "../pg/postgres-url.js";
import postgres from "postgres";
import { ReplicaSet, call, until } from "./pg-fault-kit.js";
import type { Replica } from "./pg-fault-kit.js";

/**
 * Replicas started together on an empty schema share one signing key (issue 14 item 7): each used
 * to make its own, so a token minted on one was `401 unknown_key` on the others until restarts.
 */

const ADMIN = "signing-keys-admin-token-0123456789";
let set: ReplicaSet | null = null;
let dir: string | null = null;

afterEach(async () => {
  await set?.stopAll();
  set = null;
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = null;
});

describe.skipIf(postgresUrl() === null)("signing keys on PostgreSQL replicas", () => {
  it("3 replicas started at once on a schema without keys: one key set, and a token minted on any is accepted by all", async () => {
    let servers: Replica[];
    dir = mkdtempSync(join(tmpdir(), "gpupool-keys-"));
    const config = join(dir, "gpupool.yaml");
    // Statements may wait for a lock as long as the test holds one (below).
    const url = `${freshPostgresUrl("keys")}&lock_timeout=30000&statement_timeout=30000`;
    writeFileSync(config, ["storage:", `  url: "${url}"`, "log:", "  level: warn"].join("\n"));
    const replicas = new ReplicaSet(config, { GPUPOOL_ADMIN_TOKEN: ADMIN });
    set = replicas;
    // A migrated schema without keys: one replica migrates it, then its key is deleted.
    const first = await replicas.start();
    await replicas.stop(first, "SIGTERM");
    const schema = new URL(url).searchParams.get("schema")!;
    const sql = postgres(postgresUrl()!, { max: 2, onnotice: () => undefined, connection: { search_path: schema } });
    try {
      await sql`DELETE FROM signing_keys`;
      // The three start together: the table is held until all three wait on a lock (the table,
      // or the signing keys' lock), so that they all look for a key at the same moment.
      let started!: Promise<Replica[]>;
      await sql.begin(async (tx) => {
        await tx`LOCK TABLE signing_keys IN ACCESS EXCLUSIVE MODE`;
        started = Promise.all([0, 1, 2].map(() => replicas.start()));
        started.catch(() => undefined);
        await until(
          "three replicas waiting for the signing keys",
          async () =>
            Number(
              (
                await sql`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name LIKE ${`gpupool:${schema}:%`}`
              )[0]!["n"],
            ) >= 3,
          30_000,
        );
      });
      servers = await started;
    } finally {
      await sql.end({ timeout: 1 });
    }
    const urls = servers.map((s) => s.process.url);

    const jwks = await Promise.all(urls.map(async (u) => (await call(u, "GET", "/.well-known/jwks.json", "")).body));
    const kids = jwks.map((j) => (j.keys as { kid: string }[]).map((k) => k.kid).sort());
    expect(kids[0]).toHaveLength(1);
    expect(kids[1]).toEqual(kids[0]);
    expect(kids[2]).toEqual(kids[0]);

    const owner = await call(urls[0]!, "POST", "/v1/admin/users", ADMIN, { name: "owner", tier: "pro" });
    const app = await call(urls[0]!, "POST", "/v1/admin/apps", ADMIN, { name: "demo", owner: owner.body.id });
    expect(app.status).toBe(201);
    const tokens = await Promise.all(
      urls.map(async (u, i) => {
        const r = await call(u, "POST", "/v1/ip-tokens", ADMIN, { app: "demo", ip: `203.0.113.${i + 1}` });
        expect(r.status).toBe(201);
        return r.body.token as string;
      }),
    );
    const refused: string[] = [];
    for (const [i, token] of tokens.entries())
      for (const [j, u] of urls.entries()) {
        const res = await fetch(`${u}/v1/quota`, {
          headers: { authorization: `Bearer ${app.body.key as string}`, "x-ip-token": token },
        });
        const body = (await res.json()) as { code?: string; identity?: { id: string } };
        if (res.status !== 200) refused.push(`minted on ${i}, refused by ${j}: ${res.status} ${body.code}`);
        else expect(body.identity?.id).toBe(`203.0.113.${i + 1}`);
      }
    expect(refused).toEqual([]);
  }, 120_000);
});
