import { randomBytes } from "node:crypto";
import { inject } from "vitest";

/**
 * The test PostgreSQL server's URL (no schema), or null when this run has none (its suites skip).
 * Under CI=true a missing PostgreSQL is not a skip: this throws, failing the suite that asked.
 */
export function postgresUrl(): string | null {
  required();
  return inject("pgUrl");
}

/** Where initdb and pg_ctl live (for a private cluster), or null; throws like postgresUrl under CI. */
export function postgresBin(): string | null {
  required();
  return inject("pgBin");
}

function required(): void {
  const missing = inject("pgMissing");
  if (missing) throw new Error(missing);
}

/**
 * A URL for a schema of its own on the test server (created by the store's migration; dropped
 * with the cluster, or by the global teardown on an external server). `name` only helps a person
 * reading the server's schema list.
 */
export function freshPostgresUrl(name = "x"): string {
  const base = postgresUrl();
  if (!base) throw new Error("freshPostgresUrl: no PostgreSQL server in this run");
  const slug = name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "_")
    .slice(0, 24);
  const schema = `${inject("pgSchemaPrefix")}${slug}_${randomBytes(4).toString("hex")}`;
  return `${base}${base.includes("?") ? "&" : "?"}schema=${schema}`;
}
