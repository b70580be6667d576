// The demo's plain-text credentials, kept next to its database (mode 0600) so the commands it
// prints stay valid across restarts: the server itself only ever stores hashes.
import { randomBytes } from "node:crypto";
import { chmodSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { AdminClient } from "@gpupool/sdk";

export interface DemoUser {
  readonly id: string;
  readonly name: string;
  readonly tier: string;
  readonly token: string;
}

export interface DemoCredentials {
  adminToken?: string;
  users: Record<string, DemoUser>;
  app?: { readonly id: string; readonly name: string; readonly key: string };
  edge?: KeyedCredential;
  node?: KeyedCredential;
}

export interface KeyedCredential {
  readonly id: string;
  readonly name: string;
  readonly key: string;
}

function isKeyed(value: unknown): value is KeyedCredential {
  return isRecord(value) && ["id", "name", "key"].every((k) => typeof value[k] === "string");
}

export const CREDENTIALS_FILE = "demo-credentials.json";

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isUser(value: unknown): value is DemoUser {
  return isRecord(value) && ["id", "name", "tier", "token"].every((k) => typeof value[k] === "string");
}

/** Reads the file; a missing or unreadable one is an empty set (reported through `warn`). */
export function readCredentials(dir: string, warn: (message: string) => void): DemoCredentials {
  const path = join(dir, CREDENTIALS_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") warn(`ignoring ${path}: ${(error as Error).message}`);
    return { users: {} };
  }
  if (!isRecord(raw)) return { users: {} };
  const users: Record<string, DemoUser> = {};
  if (isRecord(raw["users"]))
    for (const [role, user] of Object.entries(raw["users"])) if (isUser(user)) users[role] = user;
  const creds: DemoCredentials = { users };
  if (typeof raw["admin_token"] === "string" && raw["admin_token"] !== "") creds.adminToken = raw["admin_token"];
  const app = raw["app"];
  if (
    isRecord(app) &&
    typeof app["id"] === "string" &&
    typeof app["name"] === "string" &&
    typeof app["key"] === "string"
  ) {
    creds.app = { id: app["id"], name: app["name"], key: app["key"] };
  }
  for (const kind of ["edge", "node"] as const) {
    const v = raw[kind];
    if (isKeyed(v)) creds[kind] = { id: v.id, name: v.name, key: v.key };
  }
  return creds;
}

export function writeCredentials(dir: string, creds: DemoCredentials): string {
  const path = join(dir, CREDENTIALS_FILE);
  const body = {
    note: "Credentials of `gpupool demo`, kept so its printed commands keep working after a restart. Delete this directory to start over.",
    ...(creds.adminToken !== undefined ? { admin_token: creds.adminToken } : {}),
    users: creds.users,
    ...(creds.app !== undefined ? { app: creds.app } : {}),
    ...(creds.edge !== undefined ? { edge: creds.edge } : {}),
    ...(creds.node !== undefined ? { node: creds.node } : {}),
  };
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
  return path;
}

export function randomAdminToken(): string {
  return `demo_${randomBytes(24).toString("base64url")}`;
}

function freeName(wanted: string, taken: ReadonlySet<string>): string {
  if (!taken.has(wanted)) return wanted;
  for (let i = 2; ; i++) if (!taken.has(`${wanted}-${i}`)) return `${wanted}-${i}`;
}

/**
 * What became of a demo principal at this start: `fresh` is a user created in place of the saved
 * one, whose quota an earlier run of the tour had used (the tour needs a whole quota to show).
 */
export type Outcome = "created" | "existing" | "renamed" | "fresh";

/**
 * Reuses the user saved under `role` if the server still has it (and `keep` says it is still fit,
 * when given); otherwise creates one, under another name when the wanted one is taken.
 */
export async function ensureUser(
  admin: AdminClient,
  creds: DemoCredentials,
  role: string,
  tier: string,
  keep?: (user: DemoUser) => Promise<boolean>,
): Promise<{ user: DemoUser; outcome: Outcome }> {
  const users = await admin.listUsers();
  const saved = creds.users[role];
  const exists = saved !== undefined && users.some((u) => u.id === saved.id);
  if (saved !== undefined && exists && (keep === undefined || (await keep(saved))))
    return { user: saved, outcome: "existing" };
  const name = freeName(role, new Set(users.map((u) => u.name)));
  const created = await admin.createUser({ name, tier });
  const user = { id: created.id, name: created.name, tier: created.tier, token: created.token };
  creds.users[role] = user;
  return { user, outcome: exists ? "fresh" : name === role ? "created" : "renamed" };
}

export async function ensureApp(
  admin: AdminClient,
  creds: DemoCredentials,
  name: string,
  ownerId: string,
): Promise<{ app: NonNullable<DemoCredentials["app"]>; outcome: Outcome }> {
  const apps = await admin.listApps();
  const saved = creds.app;
  if (saved !== undefined && apps.some((a) => a.id === saved.id)) return { app: saved, outcome: "existing" };
  const actual = freeName(name, new Set(apps.map((a) => a.name)));
  const created = await admin.createApp({ name: actual, owner: ownerId });
  creds.app = { id: created.id, name: created.name, key: created.key };
  return { app: creds.app, outcome: actual === name ? "created" : "renamed" };
}

/**
 * The demo's edge or node key: the saved one if the pool still accepts it (there is no list of
 * keys to check against, so it is tried), else a new principal under a fresh name.
 */
export async function ensureKeyed(
  admin: AdminClient,
  creds: DemoCredentials,
  kind: "edge" | "node",
  works: (key: string) => Promise<boolean>,
): Promise<{ principal: KeyedCredential; outcome: Outcome }> {
  const saved = creds[kind];
  if (saved !== undefined && (await works(saved.key))) return { principal: saved, outcome: "existing" };
  const name = `demo-${kind}-${Date.now().toString(36)}`;
  const created = kind === "edge" ? await admin.createEdge({ name }) : await admin.createNode({ name });
  creds[kind] = { id: created.id, name: created.name, key: created.key };
  return { principal: creds[kind], outcome: "created" };
}
