import { randomBytes } from "node:crypto";
import { inject } from "vitest";

/** The test PostgreSQL server's URL (no schema), or null when this run has none. */
export function postgresUrl(): string | null {
  return inject("pgUrl");
}

/**
 * A URL for a schema of its own on the test server (created by the store's migration; dropped
 * with the cluster, or by the global teardown on an external server). `name` only helps a person
 * reading the server's schema list.
 */
export function freshPostgresUrl(name = "x"): string {
  const base = postgresUrl();
  if (!base) throw new Error("freshPostgresUrl: no PostgreSQL server in this run");
  const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, "_").slice(0, 24);
  const schema = `${inject("pgSchemaPrefix")}${slug}_${randomBytes(4).toString("hex")}`;
  return `${base}${base.includes("?") ? "&" : "?"}schema=${schema}`;
}
