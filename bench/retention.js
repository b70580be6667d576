// npm run bench -- retention [--leases 200000] [--storage sqlite|postgres|both]
//
// Table sizes per million leases before and after retention (issue 17), on both adapters. Fills a
// fresh database through the Store with N ended leases spread over the last 60 days, each with its
// usage record, a ledger per identity (70% of leases by IP identities, three leases per IP; 20% by
// 50 apps; 10% by 1,000 users), an edge session per 10 leases and a dashboard session and sign-in
// code per 100; then runs the retention job with its defaults (leases 30 d, sessions 7 d, idle
// ledgers 7 d after their window, usage records kept) and measures again. PostgreSQL: a throwaway
// cluster (or GPUPOOL_BENCH_POSTGRES_URL), pg_total_relation_size per table (heap + indexes +
// TOAST): before, after the job and a plain VACUUM (the space is free for new rows but stays in
// the files), and after VACUUM FULL (what the rows kept need). SQLite: dbstat per table (with its
// indexes), before, after the job (freed pages go to the file's free list) and after VACUUM.
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import postgres from "postgres";
import { Retention, normalizeConfig, openStorage } from "@gpupool/server";
import { HOW_TO_GET_POSTGRES } from "./pg-cluster.js";
import { database } from "./admission-postgres.js";

const DAY = 86_400_000;
const TABLES = ["leases", "usage_records", "ledgers", "sessions", "dashboard_sessions", "dashboard_codes"];
const INDEXES = {
  leases: ["leases_live", "leases_app", "leases_user"],
  usage_records: ["usage_ended", "usage_user", "usage_app"],
  ledgers: [],
  sessions: ["sessions_user", "sessions_expires", "sessions_revoked"],
  dashboard_sessions: ["dashboard_sessions_expires", "dashboard_sessions_revoked"],
  dashboard_codes: ["dashboard_codes_expires"],
};

function option(args, name, fallback) {
  const at = args.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  if (at < 0) return fallback;
  const arg = args[at];
  return arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : args[at + 1];
}

const id = (prefix, i) => `${prefix}_${i.toString(36).padStart(12, "0")}${"x".repeat(8)}`;

/** The i-th lease's identity: 70% IPs (three leases each), 20% apps, 10% users. */
function identityOf(i) {
  const k = i % 10;
  if (k < 7) return { kind: "ip", id: `198.51.${(i >> 16) & 255}.${(i >> 8) & 255}/${Math.floor(i / 3)}` };
  if (k < 9) return { kind: "app", id: id("ap", i % 50) };
  return { kind: "user", id: id("us", i % 1000) };
}

function endedLease(i, n, now) {
  const queuedAt = now - 60 * DAY + Math.floor((i * 60 * DAY) / n);
  const who = identityOf(i);
  const grantedAt = queuedAt + 5;
  const endedAt = grantedAt + 30_000;
  return {
    id: id("ls", i),
    appId: id("ap", i % 50),
    identityKind: who.kind,
    identityId: who.id,
    tier: "anonymous",
    size: "large",
    slots: 1,
    cost: 1,
    durationMs: 60_000,
    reservedMs: 60_000,
    status: "released",
    node: "node-1",
    deviceIndex: i % 8,
    deviceUuid: `GPU-${"0".repeat(8)}-0000-0000-0000-${(i % 8).toString().padStart(12, "0")}`,
    deviceName: "NVIDIA H200",
    slotIndexes: [i % 2],
    queuedAt,
    grantedAt,
    deadline: grantedAt + 60_000,
    endedAt,
    heldMs: 30_000,
    chargedMs: 30_000,
    refundedMs: 0,
    failed: false,
    windowStartedAt: grantedAt,
    problemCode: null,
    problemDetail: null,
    quotaMs: 60_000,
    overageMs: 0,
    holdMicros: 0,
    holdShares: null,
    chargedMicros: 0,
    maxWaitMs: null,
  };
}

function usageOf(l) {
  return {
    id: l.id,
    identityKind: l.identityKind,
    identityId: l.identityId,
    tier: l.tier,
    appId: l.appId,
    node: l.node,
    size: l.size,
    status: l.status,
    queuedAt: l.queuedAt,
    grantedAt: l.grantedAt,
    endedAt: l.endedAt,
    heldMs: l.heldMs,
    reservedMs: l.reservedMs,
    chargedMs: l.chargedMs,
    quotaMs: l.quotaMs,
    overageMs: 0,
    chargedMicros: 0,
    refundedMs: 0,
    problemCode: null,
  };
}

/** What is stored: 1,000 users, N ended leases with usage records, sessions, codes, a ledger per identity. */
function rows(n, now) {
  const out = { users: [], leases: [], usage_records: [], sessions: [], dashboard_sessions: [], dashboard_codes: [] };
  for (let u = 0; u < 1000; u++)
    out.users.push({
      id: id("us", u),
      name: `user-${u}`,
      tier: "free",
      tokenHash: `th-${u}`,
      quotaOverrideMs: null,
      createdAt: now - 90 * DAY,
    });
  const ledgers = new Map();
  for (let i = 0; i < n; i++) {
    const l = endedLease(i, n, now);
    out.leases.push(l);
    out.usage_records.push(usageOf(l));
    const key = `${l.identityKind}:${l.identityId}`;
    const was = ledgers.get(key);
    const sameWindow = was && l.grantedAt < was.windowStartedAt + DAY;
    ledgers.set(key, {
      windowStartedAt: sameWindow ? was.windowStartedAt : l.grantedAt,
      usedMs: (sameWindow ? was.usedMs : 0) + l.chargedMs,
      reservedMs: 0,
      bonusMs: 0,
      runs: (sameWindow ? was.runs : 0) + 1,
    });
    const createdAt = l.queuedAt;
    const userId = id("us", i % 1000);
    if (i % 10 === 0)
      out.sessions.push({ idHash: id("sh", i), userId, createdAt, expiresAt: createdAt + 7 * DAY, revokedAt: null });
    if (i % 100 === 0) {
      const expiresAt = createdAt + 12 * 3_600_000;
      out.dashboard_sessions.push({ idHash: id("dh", i), role: "user", userId, createdAt, expiresAt, revokedAt: null });
      const used = { usedAt: createdAt + 60_000, expiresAt: createdAt + 600_000 };
      out.dashboard_codes.push({ codeHash: id("dc", i), role: "user", userId, createdAt, ...used });
    }
  }
  out.ledgers = [...ledgers].map(([identity, s]) => ({ identity, ...s }));
  return out;
}

/** SQLite: through the Store, 1,000 rows per transaction. */
async function fillStore(store, data) {
  const BATCH = 1_000;
  const put = {
    users: (t, r) => t.users.insert(r),
    leases: (t, r) => t.leases.insert(r),
    usage_records: (t, r) => t.usage.insert(r),
    sessions: (t, r) => t.sessions.insert(r),
    dashboard_sessions: (t, r) => t.dashboard.insertSession(r),
    dashboard_codes: (t, r) => t.dashboard.insertCode(r),
    ledgers: (t, { identity, ...s }) => t.ledgers.put(identity, s),
  };
  for (const [name, list] of Object.entries(data))
    for (let from = 0; from < list.length; from += BATCH)
      await store.transaction(async (t) => {
        for (const r of list.slice(from, from + BATCH)) await put[name](t, r);
      });
}

/**
 * PostgreSQL: the same rows in bulk (json_populate_recordset, 5,000 per statement): through the
 * Store every row would be a round trip, minutes for 200k leases. The columns are the records'
 * fields in snake_case, encoded as the adapter does (slot indexes "0,1").
 */
async function fillBulk(sql, schema, data) {
  const snake = (k) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  for (const [name, list] of Object.entries(data)) {
    if (list.length === 0) continue;
    const cols = Object.keys(list[0]).map(snake);
    for (let from = 0; from < list.length; from += 5_000) {
      const chunk = list.slice(from, from + 5_000).map((r) => {
        const o = {};
        for (const [k, v] of Object.entries(r)) o[snake(k)] = Array.isArray(v) ? v.join(",") : v;
        return o;
      });
      await sql.unsafe(
        `INSERT INTO ${schema}.${name} (${cols.join(", ")}) SELECT ${cols.join(", ")} FROM json_populate_recordset(NULL::${schema}.${name}, $1::text::json)`,
        [JSON.stringify(chunk)],
      );
    }
  }
}

async function runRetention(store, now) {
  const config = normalizeConfig({ retention: { pause: 0 } });
  const retention = new Retention(store, config.retention, config.policy.windowMs, { leads: () => true });
  const started = process.hrtime.bigint();
  const counts = await retention.run(now);
  return { counts, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

const mb = (bytes) => Math.round((bytes / 1_048_576) * 10) / 10;
const perMillion = (bytes, n) => mb((bytes * 1_000_000) / n);

function table(title, n, stages) {
  console.log(`\n${title} — MB per million leases (measured at ${n.toLocaleString("en")} leases, scaled)`);
  const names = Object.keys(stages);
  console.log(
    [
      "table".padEnd(20),
      ...names.map((s) => s.padStart(16)),
      "rows before".padStart(12),
      "rows after".padStart(11),
    ].join(" "),
  );
  for (const t of [...TABLES, "total"]) {
    const cells = names.map((s) => String(perMillion(stages[s].bytes[t], n)).padStart(16));
    const rows = [stages[names[0]].rows[t], stages[names[names.length - 1]].rows[t]];
    console.log(
      [t.padEnd(20), ...cells, String(rows[0] ?? "").padStart(12), String(rows[1] ?? "").padStart(11)].join(" "),
    );
  }
}

async function postgresSizes(url) {
  const schema = new URL(url).searchParams.get("schema");
  const base = new URL(url);
  base.searchParams.delete("schema");
  const sql = postgres(base.toString(), { max: 1, onnotice: () => undefined });
  const measure = async () => {
    const bytes = {};
    const rows = {};
    let total = 0;
    for (const t of TABLES) {
      const [r] = await sql.unsafe(
        `SELECT pg_total_relation_size('${schema}.${t}')::bigint AS b, (SELECT count(*) FROM ${schema}.${t})::bigint AS n`,
      );
      bytes[t] = Number(r.b);
      rows[t] = Number(r.n);
      total += bytes[t];
    }
    bytes.total = total;
    return { bytes, rows };
  };
  return {
    measure,
    vacuum: async (full) => {
      for (const t of TABLES) await sql.unsafe(`VACUUM ${full ? "FULL " : ""}${schema}.${t}`);
    },
    sql,
    schema,
  };
}

function sqliteSizes(path) {
  const measure = () => {
    const db = new Database(path, { readonly: true });
    try {
      const bytes = {};
      const rows = {};
      let total = 0;
      for (const t of TABLES) {
        const names = [t, ...INDEXES[t], `sqlite_autoindex_${t}_1`];
        const r = db
          .prepare(
            `SELECT COALESCE(SUM(pgsize), 0) AS b FROM dbstat WHERE name IN (${names.map(() => "?").join(", ")})`,
          )
          .get(...names);
        bytes[t] = Number(r.b);
        rows[t] = Number(db.prepare(`SELECT count(*) AS n FROM ${t}`).get().n);
        total += bytes[t];
      }
      bytes.total = total;
      return { bytes, rows, file: statSync(path).size };
    } finally {
      db.close();
    }
  };
  return measure;
}

async function benchPostgres(n, now) {
  const db = await database();
  if (db === null) {
    console.error(HOW_TO_GET_POSTGRES);
    return null;
  }
  const url = `${db.url}${db.url.includes("?") ? "&" : "?"}schema=bench_retention`;
  const storage = await openStorage(url);
  const sizes = await postgresSizes(url);
  try {
    const t0 = Date.now();
    await fillBulk(sizes.sql, sizes.schema, rows(n, now));
    const fillS = (Date.now() - t0) / 1000;
    await sizes.vacuum(false);
    const before = await sizes.measure();
    const run = await runRetention(storage.store, now);
    await sizes.vacuum(false);
    const after = await sizes.measure();
    await sizes.vacuum(true);
    const compact = await sizes.measure();
    console.log(
      `PostgreSQL (${db.where}): filled in ${fillS} s; retention deleted ${JSON.stringify(run.counts)} in ${run.seconds.toFixed(1)} s`,
    );
    table("PostgreSQL", n, { before: before, "after + VACUUM": after, "after VACUUM FULL": compact });
    return {
      before: before.bytes,
      after: after.bytes,
      compact: compact.bytes,
      deleted: run.counts,
      seconds: run.seconds,
    };
  } finally {
    await sizes.sql.end();
    await storage.close();
    await db.stop();
  }
}

async function benchSqlite(n, now) {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-bench-retention-"));
  const path = join(dir, "retention.db");
  try {
    let storage = await openStorage(`sqlite:${path}`);
    const t0 = Date.now();
    await fillStore(storage.store, rows(n, now));
    const fillS = (Date.now() - t0) / 1000;
    await storage.close();
    const measure = sqliteSizes(path);
    const before = measure();
    storage = await openStorage(`sqlite:${path}`);
    const run = await runRetention(storage.store, now);
    await storage.close();
    const after = measure();
    const db = new Database(path);
    db.exec("VACUUM");
    db.close();
    const compact = measure();
    console.log(
      `\nSQLite: filled in ${fillS} s; retention deleted ${JSON.stringify(run.counts)} in ${run.seconds.toFixed(1)} s`,
    );
    console.log(
      `file: ${mb(before.file)} MB before, ${mb(after.file)} MB after (pages freed for reuse), ${mb(compact.file)} MB after VACUUM`,
    );
    table("SQLite", n, { before, "after (in use)": after, "after VACUUM": compact });
    return {
      before: before.bytes,
      after: after.bytes,
      compact: compact.bytes,
      deleted: run.counts,
      seconds: run.seconds,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function main(args) {
  const n = Number(option(args, "leases", "200000"));
  const which = option(args, "storage", "both");
  const now = Date.UTC(2026, 11, 1);
  const out = { bench: "retention", leases: n };
  if (which === "sqlite" || which === "both") out.sqlite = await benchSqlite(n, now);
  if (which === "postgres" || which === "both") out.postgres = await benchPostgres(n, now);
  console.log(JSON.stringify(out));
}
