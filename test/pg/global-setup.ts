import { randomBytes } from "node:crypto";
import postgres from "postgres";
import type { TestProject } from "vitest/node";
import { findPostgresBin, startCluster } from "./cluster.js";
import type { Cluster } from "./cluster.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** The PostgreSQL server the tests use, or null when there is none (those suites are skipped). */
    pgUrl: string | null;
    /** Prefix of every schema this run creates (dropped at the end). */
    pgSchemaPrefix: string;
    /** Where initdb and pg_ctl live, for tests that start a private cluster; null without them. */
    pgBin: string | null;
    /** Set when PostgreSQL is required (CI=true) but missing: every PostgreSQL suite fails with it. */
    pgMissing: string | null;
  }
}

const HOW_TO =
  "The PostgreSQL suites did not run: no PostgreSQL here. Install it (Debian: apt-get install postgresql; " +
  "initdb and pg_ctl are found on PATH or in /usr/lib/postgresql/*/bin) or point GPUPOOL_TEST_POSTGRES_URL at a server " +
  "(postgres://user:pass@host:port/db; each test file works in its own schema). Under CI=true this fails the run.";
const HOW_TO_OFF = "The PostgreSQL suites did not run (GPUPOOL_TEST_POSTGRES=off).";

let cluster: Cluster | null = null;
let external: { url: string; prefix: string } | null = null;
/** What to tell the person at the end of the run when the PostgreSQL suites were skipped. */
let missing: string | null = null;

/**
 * Gives the tests a PostgreSQL server: GPUPOOL_TEST_POSTGRES_URL when set, else a throwaway
 * cluster started here (and deleted at the end). Without one, PostgreSQL suites skip and the run
 * says so at the end; with CI=true it fails instead, so CI never passes without them silently.
 */
export async function setup(project: TestProject): Promise<void> {
  const prefix = `t_${randomBytes(3).toString("hex")}_`;
  // GPUPOOL_TEST_POSTGRES=off: behave as if PostgreSQL were not installed (a quicker local run).
  const off = process.env["GPUPOOL_TEST_POSTGRES"] === "off";
  const bin = off ? null : findPostgresBin();
  project.provide("pgSchemaPrefix", prefix);
  project.provide("pgBin", bin);
  project.provide("pgMissing", null);
  const given = process.env["GPUPOOL_TEST_POSTGRES_URL"];
  if (given && !off) {
    external = { url: given, prefix };
    project.provide("pgUrl", given);
    return;
  }
  if (!bin) {
    // Every suite is a PostgreSQL suite then: nothing to run.
    if (process.env["GPUPOOL_TEST_STORAGE"] === "postgres") throw new Error(off ? HOW_TO_OFF : HOW_TO);
    missing = off ? HOW_TO_OFF : HOW_TO;
    project.provide("pgUrl", null);
    // Under CI the other suites still run, and each PostgreSQL suite fails saying why.
    if (process.env["CI"] === "true") project.provide("pgMissing", missing);
    return;
  }
  cluster = await startCluster(bin);
  project.provide("pgUrl", cluster.url);
}

export async function teardown(): Promise<void> {
  if (cluster) {
    await cluster.stop();
    cluster = null;
  }
  if (external) {
    // Only the schemas this run created: the server may hold anything else.
    const sql = postgres(external.url, { max: 1, onnotice: () => undefined });
    try {
      const rows = await sql<
        { name: string }[]
      >`SELECT nspname AS name FROM pg_namespace WHERE starts_with(nspname, ${external.prefix})`;
      for (const { name } of rows) await sql`DROP SCHEMA ${sql(name)} CASCADE`;
    } finally {
      await sql.end({ timeout: 5 });
    }
  }
  if (missing) console.warn(`\n${missing}\n`);
}
