import type Database from "better-sqlite3";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { normalizeConfig } from "../src/config.js";
import { createServer } from "../src/main/server.js";
import type { TestServer } from "./harness.js";
import { ADMIN, allLeases, checkEveryAnswer, expectProblem, quotaOf, startTestServer } from "./harness.js";

/**
 * docs/design.md: bad input of every kind gets a clear 4xx problem (problem+json, code, status, detail,
 * no stack) and changes nothing — the identity's quota and the lease list are as before.
 */

let t: TestServer;
let alice: { id: string; token: string };
let app: { id: string; key: string };
let nodeKey: string;
let activeLease: string;

beforeAll(async () => {
  t = await startTestServer();
  alice = await t.user("alice", "free");
  app = await t.appFor("demo", alice.id);
  nodeKey = (await t.call("POST", "/v1/admin/nodes", { token: ADMIN, body: { name: "node-1" } })).body.key;
  // Some state to keep intact: one active lease charged to alice.
  const l = await t.call("POST", "/v1/leases", { token: alice.token, body: { duration: 60 } });
  expect(l.status).toBe(201);
  activeLease = l.body.id;
});
afterAll(async () => {
  await t?.close();
});

type Req = {
  method?: string;
  url?: string;
  token?: () => string | undefined;
  body?: unknown;
  headers?: Record<string, string>;
};
const json = "application/json";

/** [name, request, status, code, fields the errors list must name] */
const TABLE: [string, Req, number, string, string[]?][] = [
  ["malformed JSON", { body: '{"duration": 5' }, 400, "invalid_request", ["body"]],
  ["JSON with trailing garbage", { body: '{"duration": 5} x' }, 400, "invalid_request", ["body"]],
  ["an unknown field", { body: { duration: 5, gpus: "all" } }, 400, "invalid_request", ["gpus"]],
  [
    "several invalid fields, each named",
    { body: { duration: -1, size: "huge", queue: "yes" } },
    400,
    "invalid_request",
    ["duration", "size", "queue"],
  ],
  ["a huge duration", { body: { duration: 1e9 } }, 400, "invalid_request", ["duration"]],
  ["an infinite duration (1e400)", { body: '{"duration": 1e400}' }, 400, "invalid_request", ["duration"]],
  ["a negative duration", { body: { duration: -60 } }, 400, "invalid_request", ["duration"]],
  ["a zero duration", { body: { duration: 0 } }, 400, "invalid_request", ["duration"]],
  ['"NaN" as a string', { body: { duration: "NaN" } }, 400, "invalid_request", ["duration"]],
  ["a number as a string", { body: { duration: "60" } }, 400, "invalid_request", ["duration"]],
  ["a null duration", { body: { duration: null } }, 400, "invalid_request", ["duration"]],
  ["an unknown size", { body: { size: "huge" } }, 400, "invalid_request", ["size"]],
  ["queue as a string", { body: { queue: "false" } }, 400, "invalid_request", ["queue"]],
  ["an array body", { body: "[]" }, 400, "invalid_request"],
  ["a string body", { body: '"hello"' }, 400, "invalid_request"],
  ["__proto__ pollution", { body: '{"__proto__": {"admin": true}}' }, 400, "invalid_request"],
  [
    "constructor.prototype pollution",
    { body: '{"constructor": {"prototype": {"admin": true}}}' },
    400,
    "invalid_request",
  ],
  ["text/plain", { body: '{"duration": 5}', headers: { "content-type": "text/plain" } }, 415, "unsupported_media_type"],
  [
    "a form body",
    { body: "duration=5", headers: { "content-type": "application/x-www-form-urlencoded" } },
    415,
    "unsupported_media_type",
  ],
  ["a body over 64 KiB", { body: JSON.stringify({ duration: 5, pad: "x".repeat(70_000) }) }, 413, "payload_too_large"],
  ["no Authorization", { token: () => undefined, body: {} }, 401, "unauthorized"],
  ["an unknown app key", { token: () => "gpu_a_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", body: {} }, 401, "unauthorized"],
  ["a made-up bearer", { token: () => "letmein", body: {} }, 401, "unauthorized"],
  [
    "Basic instead of Bearer",
    { token: () => undefined, headers: { authorization: "Basic YWxpY2U6cHc=", "content-type": json }, body: {} },
    401,
    "unauthorized",
  ],
  ["an overlong bearer", { token: () => `gpu_a_${"A".repeat(2000)}`, body: {} }, 401, "unauthorized"],
  ["a node key on /v1/leases", { token: () => nodeKey, body: {} }, 403, "forbidden"],
  [
    "an app key on an admin route",
    { url: "/v1/admin/users", token: () => app.key, body: { name: "mallory", tier: "pro" } },
    403,
    "forbidden",
  ],
  [
    "a user token on an admin route",
    { url: "/v1/admin/users", token: () => alice.token, body: { name: "mallory", tier: "pro" } },
    403,
    "forbidden",
  ],
  [
    "an app key patching a user",
    { method: "PATCH", url: "/v1/admin/users/alice", token: () => app.key, body: { quota: 99_999 } },
    403,
    "forbidden",
  ],
  [
    "an invalid admin user name",
    { url: "/v1/admin/users", token: () => ADMIN, body: { name: "../etc/passwd" } },
    400,
    "invalid_request",
    ["name"],
  ],
  [
    "an infinite quota override",
    { method: "PATCH", url: "/v1/admin/users/alice", token: () => ADMIN, body: '{"quota": 1e400}' },
    400,
    "invalid_request",
    ["quota"],
  ],
  [
    "a huge bonus",
    { method: "PATCH", url: "/v1/admin/users/alice", token: () => ADMIN, body: { bonus: 1e12 } },
    400,
    "invalid_request",
    ["bonus"],
  ],
  ["an unknown route", { method: "GET", url: "/v1/nope" }, 404, "not_found"],
  ["an unknown lease", { method: "GET", url: "/v1/leases/ls_nope" }, 404, "not_found"],
  ["a bad status filter", { method: "GET", url: "/v1/leases?status=bogus" }, 400, "invalid_request", ["status"]],
  ["a negative limit", { method: "GET", url: "/v1/leases?limit=-1" }, 400, "invalid_request", ["limit"]],
  ["a limit of 0", { method: "GET", url: "/v1/leases?limit=0" }, 400, "invalid_request", ["limit"]],
  ["a limit over 500", { method: "GET", url: "/v1/leases?limit=501" }, 400, "invalid_request", ["limit"]],
  [
    "JSON in UTF-16",
    { body: '{"duration": 5}', headers: { "content-type": "application/json; charset=utf-16" } },
    415,
    "unsupported_media_type",
  ],
  [
    "JSON in Latin-1",
    { body: '{"duration": 5}', headers: { "content-type": 'application/json;charset="ISO-8859-1"' } },
    415,
    "unsupported_media_type",
  ],
  [
    "a negative diagnose duration",
    { method: "GET", url: "/v1/diagnose?duration=-5" },
    400,
    "invalid_request",
    ["duration"],
  ],
  ["a zero diagnose duration", { method: "GET", url: "/v1/diagnose?duration=0" }, 400, "invalid_request", ["duration"]],
  [
    "a bad release body",
    { url: "/v1/leases/ACTIVE/release", body: { failed: "yes" } },
    400,
    "invalid_request",
    ["failed"],
  ],
  [
    "an unknown release field",
    { url: "/v1/leases/ACTIVE/release", body: { charge: 0 } },
    400,
    "invalid_request",
    ["charge"],
  ],
];

const CASES = TABLE.map(([name, req, status, code, fields]) => ({ name, req, status, code, fields }));

describe("every kind of bad input → a clear 4xx that changes nothing", () => {
  it.each(CASES)("$name → $status $code", async ({ req, status, code, fields }) => {
    const before = {
      quota: await quotaOf(t, alice.token),
      leases: await allLeases(t),
      users: (await t.call("GET", "/v1/admin/users", { token: ADMIN })).body,
    };
    const token = req.token ? req.token() : alice.token;
    const res = await t.call(req.method ?? "POST", (req.url ?? "/v1/leases").replace("ACTIVE", activeLease), {
      ...(token ? { token } : {}),
      ...(req.body !== undefined ? { body: req.body } : {}),
      ...(req.headers ? { headers: req.headers } : {}),
    });
    const p = expectProblem(res, status, code);
    if (fields) {
      expect(p.errors, JSON.stringify(p)).toBeInstanceOf(Array);
      const named = p.errors.map((e: { field: string }) => e.field);
      for (const f of fields) expect(named).toContain(f);
      for (const f of fields) if (f !== "body") expect(p.detail).toContain(f);
    }
    // Nothing changed.
    expect(await quotaOf(t, alice.token)).toEqual(before.quota);
    expect(await allLeases(t)).toEqual(before.leases);
    expect((await t.call("GET", "/v1/admin/users", { token: ADMIN })).body).toEqual(before.users);
  });

  it("a limit out of range is refused in words, not as a regular expression", async () => {
    const p = expectProblem(await t.call("GET", "/v1/leases?limit=0", { token: alice.token }), 400, "invalid_request");
    expect(p.errors).toEqual([{ field: "limit", message: "must be a whole number from 1 to 500" }]);
  });

  it("a charset other than UTF-8 is named in the refusal; JSON declared UTF-8 (any spelling) is read", async () => {
    const refused = await t.call("POST", "/v1/leases", {
      token: alice.token,
      body: '{"duration": 5}',
      headers: { "content-type": "application/json; charset=utf-16" },
    });
    expect(expectProblem(refused, 415, "unsupported_media_type").detail).toMatch(/UTF-8 only.*charset=utf-16/);
    for (const contentType of ["application/json; charset=utf-8", 'application/json; Charset="UTF8"']) {
      const ok = await t.call("PATCH", "/v1/admin/users/alice", {
        token: ADMIN,
        body: '{"bonus": 0}',
        headers: { "content-type": contentType },
      });
      expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    }
  });

  it("the pre-existing lease is still active after all of it", async () => {
    const r = await t.call("GET", `/v1/leases/${activeLease}`, { token: alice.token });
    expect(r.body).toMatchObject({ status: "active", charged: 0 });
  });
});

describe("a duration that rounds to 0 ms", () => {
  it("is refused like a zero duration, and no zero-length lease is granted", async () => {
    const s = await startTestServer();
    try {
      const bob = await s.user("bob", "free");
      const res = await s.call("POST", "/v1/leases", { token: bob.token, body: { duration: 0.0001 } });
      expect(expectProblem(res, 400, "invalid_request").errors.map((e: { field: string }) => e.field)).toContain(
        "duration",
      );
      expect(await allLeases(s)).toEqual([]);
      expect(await quotaOf(s, bob.token)).toMatchObject({ window_started_at: null, runs: 0 });
    } finally {
      await s.close();
    }
  });
});

describe("the admin API without GPUPOOL_ADMIN_TOKEN", () => {
  it("answers 403 admin_disabled and creates nothing", async () => {
    const config = normalizeConfig({ storage: { url: "sqlite::memory:" } });
    const server = await createServer(config, { adminToken: null, logger: pino({ level: "silent" }) });
    checkEveryAnswer(server);
    try {
      for (const token of ["", ADMIN, "anything"]) {
        const res = await server.app.inject({
          method: "POST",
          url: "/v1/admin/users",
          headers: { authorization: `Bearer ${token}`, "content-type": json },
          payload: JSON.stringify({ name: "eve", tier: "pro" }),
        });
        const body = res.json();
        if (token === "") {
          expect(res.statusCode).toBe(401);
          continue;
        }
        expect(res.statusCode).toBe(403);
        expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
        expect(body).toMatchObject({ code: "admin_disabled", status: 403 });
        expect(body.detail).toMatch(/GPUPOOL_ADMIN_TOKEN/);
      }
      const pool = await server.app.inject({
        method: "GET",
        url: "/v1/admin/pool",
        headers: { authorization: `Bearer ${ADMIN}` },
      });
      expect(pool.json()).toMatchObject({ code: "admin_disabled" });
      const users = await server.context.store.transaction((tx) => tx.users.page(null, { after: null, limit: 1_000 }));
      expect(users).toEqual([]);
    } finally {
      await server.close();
    }
  });
});

describe("server failures", () => {
  it("a 500 reveals no stack and no secret; readiness reports the storage down", async () => {
    const s = await startTestServer();
    const store = s.server.context.store;
    const transaction = store.transaction.bind(store);
    const ping = store.ping.bind(store);
    try {
      const bob = await s.user("bob", "free");
      const boom = () => {
        throw Object.assign(
          new Error(`disk I/O error at /srv/gpupool/secret.db (token ${bob.token}, admin ${ADMIN})`),
          { code: "EWEIRD" },
        );
      };
      Object.assign(store, { transaction: boom, ping: boom });
      for (const [method, url] of [
        ["GET", "/v1/quota"],
        ["POST", "/v1/leases"],
        ["GET", "/v1/leases"],
      ] as const) {
        const res = await s.call(method, url, { token: bob.token, ...(method === "POST" ? { body: {} } : {}) });
        const p = expectProblem(res, 500, "internal");
        const text = JSON.stringify(p) + JSON.stringify(res.headers);
        expect(text).not.toContain(bob.token);
        expect(text).not.toContain(ADMIN);
        expect(text).not.toMatch(/secret\.db|disk I\/O|EWEIRD/);
      }
      expectProblem(await s.call("GET", "/readyz"), 503, "storage_unavailable");
    } finally {
      Object.assign(store, { transaction, ping });
      await s.close();
    }
  });
});

describe("a full disk (SQLite)", () => {
  it.skipIf(process.env["GPUPOOL_TEST_STORAGE"] === "postgres")(
    "answers 503 storage_unavailable with a reason and Retry-After, changes nothing, and works again once there is room",
    async () => {
      const s = await startTestServer();
      // The database may not grow past its current size: SQLite then fails writes with SQLITE_FULL,
      // as it does when the disk is full. (The connection is the adapter's own; nothing is mocked.)
      const db = (s.server.context.store as unknown as { db: Database.Database }).db;
      try {
        db.pragma(`max_page_count = ${Number(db.pragma("page_count", { simple: true }))}`);
        let refused: Awaited<ReturnType<TestServer["call"]>> | null = null;
        let created = 0;
        for (let i = 0; i < 500 && refused === null; i++) {
          const r = await s.call("POST", "/v1/admin/users", {
            token: ADMIN,
            body: { name: `u${i}-${"x".repeat(50)}` },
          });
          if (r.status === 201) created++;
          else refused = r;
        }
        expect(refused, "the database never filled up").not.toBeNull();
        const p = expectProblem(refused!, 503, "storage_unavailable");
        expect(p).toMatchObject({
          reason: "disk_full",
          detail: expect.stringMatching(/is full; nothing was changed/),
        });
        expect(refused!.headers["retry-after"]).toBe("30");
        expect(JSON.stringify(p)).not.toMatch(/SQLITE|database or disk/);
        const users = (await s.call("GET", "/v1/admin/users", { token: ADMIN })).body.users;
        expect(users).toHaveLength(created);

        db.pragma("max_page_count = 1073741823");
        expect((await s.call("POST", "/v1/admin/users", { token: ADMIN, body: { name: "after" } })).status).toBe(201);
      } finally {
        await s.close();
      }
    },
  );
});
