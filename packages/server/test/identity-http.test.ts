import {
  SignJWT,
  UnsecuredJWT,
  createLocalJWKSet,
  decodeProtectedHeader,
  generateKeyPair,
  importJWK,
  jwtVerify,
} from "jose";
import type { JWK } from "jose";
import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { ADMIN, allLeases, expectProblem, lease, quotaOf, sleep, startTestServer } from "./harness.js";

/** Who pays (docs/design.md "Who is charged", docs/edge.md): X-IP-Token verification and the charged identity. */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

async function setup(raw: Record<string, unknown> = {}) {
  t = await startTestServer(raw);
  const alice = await t.user("alice", "free");
  const owner = await t.user("owner", "pro");
  const app = await t.appFor("demo", owner.id);
  const other = await t.appFor("other", owner.id);
  return { alice, owner, app, other };
}

/** The pool's own signing key, read from the store: lets a test forge claims the pool would never sign. */
async function poolKey() {
  const [rec] = await t.server.context.store.transaction((tx) => tx.signingKeys.list());
  if (!rec) throw new Error("no signing key");
  return { kid: rec.kid, key: await importJWK(JSON.parse(rec.privateJwk) as JWK, "EdDSA") };
}

type Claims = { sub?: string; aud?: string; iss?: string; exp?: number | null; iat?: number | null };
async function signWith(
  key: Parameters<SignJWT["sign"]>[0],
  kid: string | undefined,
  c: Claims,
  alg = "EdDSA",
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({})
    .setProtectedHeader({ alg, ...(kid ? { kid } : {}), typ: "JWT" })
    .setIssuer(c.iss ?? "gpupool");
  if (c.iat !== null) jwt = jwt.setIssuedAt(c.iat ?? now);
  if (c.sub !== undefined) jwt = jwt.setSubject(c.sub);
  if (c.aud !== undefined) jwt = jwt.setAudience(c.aud);
  if (c.exp !== null) jwt = jwt.setExpirationTime(c.exp ?? now + 300);
  return jwt.sign(key);
}

describe("valid X-IP-Token: the viewer named in it pays", () => {
  it("a signed-in viewer is charged as themselves, with their tier; the app pays nothing", async () => {
    const { alice, app } = await setup();
    const byName = await t.call("POST", "/v1/ip-tokens", { token: ADMIN, body: { app: "demo", user: "alice" } });
    expect(byName.status).toBe(201);
    expect(byName.body).toMatchObject({ subject: `user:${alice.id}`, app: app.id });
    const r = await lease(t, app.key, { duration: 12 }, byName.body.token);
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({
      app: app.id,
      identity: { kind: "user", id: alice.id, tier: "free" },
      quota: { quota: 210, reserved: 12 },
    });
    expect(await quotaOf(t, alice.token)).toMatchObject({ reserved: 12, left: 198 });
    expect(await quotaOf(t, app.key)).toMatchObject({ identity: { kind: "app" }, reserved: 0 });
  });

  it("a viewer who is not signed in is charged as their IP address, at the anonymous tier", async () => {
    const { app } = await setup();
    const tok = await t.ipToken(app.id, { ip: "203.0.113.7" });
    const r = await lease(t, app.key, { duration: 12 }, tok);
    expect(r.body).toMatchObject({
      identity: { kind: "ip", id: "203.0.113.7", tier: "anonymous" },
      quota: { quota: 120, reserved: 12 },
    });
    // The same address seen through a dual-stack socket is the same viewer.
    const mapped = await t.ipToken(app.id, { ip: "::ffff:203.0.113.7" });
    expect(await quotaOf(t, app.key, mapped)).toMatchObject({ identity: { id: "203.0.113.7" }, reserved: 12 });
  });

  it("IPv6 viewers are grouped by /64: two addresses in one /64 share one quota", async () => {
    const { app } = await setup();
    const a = await t.ipToken(app.id, { ip: "2001:db8:abcd:12::1" });
    const b = await t.ipToken(app.id, { ip: "2001:db8:abcd:12:ffff:1:2:3" });
    const elsewhere = await t.ipToken(app.id, { ip: "2001:db8:abcd:13::1" });
    const first = await lease(t, app.key, { duration: 100 }, a);
    expect(first.body.identity).toEqual({ kind: "ip", id: "2001:db8:abcd:12::/64", tier: "anonymous" });
    const second = await lease(t, app.key, { duration: 30 }, b);
    const p = expectProblem(second, 429, "quota_exceeded");
    expect(p).toMatchObject({ identity: "ip:2001:db8:abcd:12::/64", left: 20, reserved: 100 });
    expect((await lease(t, app.key, { duration: 20 }, b)).status).toBe(201);
    expect((await lease(t, app.key, { duration: 30 }, elsewhere)).body.identity.id).toBe("2001:db8:abcd:13::/64");
  });

  it("no X-IP-Token: the app itself pays, as anonymous", async () => {
    const { app } = await setup();
    const r = await lease(t, app.key, { duration: 12 });
    expect(r.body.identity).toEqual({ kind: "app", id: app.id, tier: "anonymous" });
  });

  it("a user token charges the user; with X-IP-Token added it is refused (not_accepted)", async () => {
    const { alice, app } = await setup();
    expect((await lease(t, alice.token, { duration: 5 })).body.identity).toMatchObject({ kind: "user", id: alice.id });
    const tok = await t.ipToken(app.id, { ip: "203.0.113.7" });
    const p = expectProblem(await lease(t, alice.token, { duration: 5 }, tok), 401, "invalid_ip_token");
    expect(p.reason).toBe("not_accepted");
    expect(await quotaOf(t, alice.token)).toMatchObject({ reserved: 5 });
  });

  it("X-Forwarded-For does not change who pays", async () => {
    const { app } = await setup();
    const tok = await t.ipToken(app.id, { ip: "203.0.113.7" });
    const spoofed = await t.call("POST", "/v1/leases", {
      token: app.key,
      body: { duration: 5 },
      headers: { "x-ip-token": tok, "x-forwarded-for": "198.51.100.99" },
    });
    expect(spoofed.body.identity).toMatchObject({ kind: "ip", id: "203.0.113.7" });
    const bare = await t.call("POST", "/v1/leases", {
      token: app.key,
      body: { duration: 5 },
      headers: { "x-forwarded-for": "198.51.100.99" },
    });
    expect(bare.body.identity).toMatchObject({ kind: "app", id: app.id });
  });
});

describe("invalid X-IP-Token → 401 invalid_ip_token with the reason, and nothing reserved", () => {
  const cases: [string, string, (ctx: Awaited<ReturnType<typeof setup>>) => Promise<string>][] = [
    [
      "expired",
      "expired",
      async ({ alice, app }) => {
        const { key, kid } = await poolKey();
        return signWith(key, kid, { sub: `user:${alice.id}`, aud: app.id, exp: Math.floor(Date.now() / 1000) - 60 });
      },
    ],
    [
      "signed by a key the pool does not know",
      "unknown_key",
      async ({ alice, app }) => {
        const { privateKey } = await generateKeyPair("EdDSA");
        return signWith(privateKey, "not-our-kid", { sub: `user:${alice.id}`, aud: app.id });
      },
    ],
    [
      "forged with another key under the pool's kid",
      "bad_signature",
      async ({ alice, app }) => {
        const { privateKey } = await generateKeyPair("EdDSA");
        return signWith(privateKey, (await poolKey()).kid, { sub: `user:${alice.id}`, aud: app.id });
      },
    ],
    [
      "a real token with its subject altered",
      "bad_signature",
      async ({ alice, owner, app }) => {
        const [h, p, s] = (await t.ipToken(app.id, { user: owner.id })).split(".");
        const payload = JSON.parse(Buffer.from(p!, "base64url").toString());
        payload.sub = `user:${alice.id}`;
        return [h, Buffer.from(JSON.stringify(payload)).toString("base64url"), s].join(".");
      },
    ],
    [
      "alg: none",
      "alg_not_allowed",
      async ({ alice, app }) =>
        new UnsecuredJWT({})
          .setSubject(`user:${alice.id}`)
          .setAudience(app.id)
          .setIssuer("gpupool")
          .setExpirationTime("5m")
          .encode(),
    ],
    [
      "HS256 (algorithm confusion)",
      "alg_not_allowed",
      async ({ alice, app }) =>
        signWith(
          new TextEncoder().encode("x".repeat(32)),
          (await poolKey()).kid,
          { sub: `user:${alice.id}`, aud: app.id },
          "HS256",
        ),
    ],
    ["minted for another app", "wrong_app", async ({ alice, other }) => t.ipToken(other.id, { user: alice.id })],
    [
      "from another issuer",
      "wrong_issuer",
      async ({ alice, app }) => {
        const { key, kid } = await poolKey();
        return signWith(key, kid, { sub: `user:${alice.id}`, aud: app.id, iss: "someone-else" });
      },
    ],
    [
      "naming neither a user nor an IP",
      "bad_subject",
      async ({ app }) => {
        const { key, kid } = await poolKey();
        return signWith(key, kid, { sub: "admin:root", aud: app.id });
      },
    ],
    [
      "without an expiry",
      "malformed",
      async ({ alice, app }) => {
        const { key, kid } = await poolKey();
        return signWith(key, kid, { sub: `user:${alice.id}`, aud: app.id, exp: null });
      },
    ],
    [
      "signed by the pool but issued an hour in the future",
      "malformed",
      async ({ alice, app }) => {
        const { key, kid } = await poolKey();
        const now = Math.floor(Date.now() / 1000);
        return signWith(key, kid, { sub: `user:${alice.id}`, aud: app.id, iat: now + 3600, exp: now + 3900 });
      },
    ],
    [
      "signed by the pool but valid for 10 years",
      "malformed",
      async ({ alice, app }) => {
        const { key, kid } = await poolKey();
        const now = Math.floor(Date.now() / 1000);
        return signWith(key, kid, { sub: `user:${alice.id}`, aud: app.id, exp: now + 10 * 365 * 86_400 });
      },
    ],
    [
      "signed by the pool but without an issue time",
      "malformed",
      async ({ alice, app }) => {
        const { key, kid } = await poolKey();
        return signWith(key, kid, { sub: `user:${alice.id}`, aud: app.id, iat: null });
      },
    ],
    ["not a JWT at all", "malformed", async () => "definitely-not-a-token"],
    ["absurdly long", "malformed", async () => "a".repeat(5000)],
    [
      "naming a user who does not exist",
      "unknown_user",
      async ({ app }) => {
        const { key, kid } = await poolKey();
        return signWith(key, kid, { sub: "user:u_ghost", aud: app.id });
      },
    ],
  ];

  it.each(cases)("%s → reason %s", async (_name, reason, make) => {
    const ctx = await setup();
    const token = await make(ctx);
    const before = {
      app: await quotaOf(t, ctx.app.key),
      alice: await quotaOf(t, ctx.alice.token),
      owner: await quotaOf(t, ctx.owner.token),
    };
    const r = await lease(t, ctx.app.key, { duration: 10 }, token);
    const p = expectProblem(r, 401, "invalid_ip_token");
    expect(p.reason).toBe(reason);
    // The same token is refused on the quota endpoint, and diagnose explains it without reserving.
    expect(
      expectProblem(
        await t.call("GET", "/v1/quota", { token: ctx.app.key, headers: { "x-ip-token": token } }),
        401,
        "invalid_ip_token",
      ).reason,
    ).toBe(reason);
    const d = await t.call("GET", "/v1/diagnose?duration=10", { token: ctx.app.key, headers: { "x-ip-token": token } });
    expect(d.status).toBe(200);
    expect(d.body.verdict).toMatchObject({ outcome: "rejected", problem: { code: "invalid_ip_token", reason } });
    // Never a silent fallback: no one was charged, nothing reserved, no lease.
    expect({
      app: await quotaOf(t, ctx.app.key),
      alice: await quotaOf(t, ctx.alice.token),
      owner: await quotaOf(t, ctx.owner.token),
    }).toEqual(before);
    expect(await allLeases(t)).toEqual([]);
  });

  it("two X-IP-Token headers are refused (malformed)", async () => {
    const { alice, app } = await setup();
    const tok = await t.ipToken(app.id, { user: alice.id });
    const r = await t.server.app.inject({
      method: "POST",
      url: "/v1/leases",
      headers: { authorization: `Bearer ${app.key}`, "x-ip-token": [tok, tok] as unknown as string },
    });
    expect(r.statusCode).toBe(401);
    expect(r.json()).toMatchObject({ code: "invalid_ip_token", reason: "malformed" });
    expect(await allLeases(t)).toEqual([]);
  });

  it("a token's issue time may be ahead by the allowed clock skew (30 s), and its life the ttl plus that", async () => {
    const { alice, app } = await setup();
    const { key, kid } = await poolKey();
    const now = Math.floor(Date.now() / 1000);
    // Another replica's clock 20 s ahead; the default ttl is 10 minutes.
    const ahead = await signWith(key, kid, { sub: `user:${alice.id}`, aud: app.id, iat: now + 20, exp: now + 620 });
    expect(await quotaOf(t, app.key, ahead)).toMatchObject({ identity: { kind: "user", id: alice.id } });
    const longest = await signWith(key, kid, { sub: `user:${alice.id}`, aud: app.id, iat: now, exp: now + 630 });
    expect(await quotaOf(t, app.key, longest)).toMatchObject({ identity: { kind: "user", id: alice.id } });
    const longer = await signWith(key, kid, { sub: `user:${alice.id}`, aud: app.id, iat: now, exp: now + 631 });
    const p = expectProblem(
      await t.call("GET", "/v1/quota", { token: app.key, headers: { "x-ip-token": longer } }),
      401,
      "invalid_ip_token",
    );
    expect(p).toMatchObject({ reason: "malformed", detail: expect.stringMatching(/live 631 s, longer than .* 600 s/) });
  });

  it("a token expires after identity.ip_token_ttl", async () => {
    const { alice, app } = await setup({ identity: { ip_token_ttl: 1 } });
    const minted = await t.call("POST", "/v1/ip-tokens", { token: ADMIN, body: { app: app.id, user: alice.id } });
    expect(Date.parse(minted.body.expires_at) - Date.now()).toBeLessThanOrEqual(1_000);
    await sleep(1_100);
    const p = expectProblem(await lease(t, app.key, { duration: 10 }, minted.body.token), 401, "invalid_ip_token");
    expect(p.reason).toBe("expired");
    expect(await quotaOf(t, alice.token)).toMatchObject({ reserved: 0, used: 0 });
  });
});

describe("JWKS and minting", () => {
  it("GET /.well-known/jwks.json publishes the Ed25519 public key by kid, and it verifies minted tokens", async () => {
    const { alice, app } = await setup();
    const r = await t.call("GET", "/.well-known/jwks.json");
    expect(r.status).toBe(200);
    expect(r.body.keys).toHaveLength(1);
    const jwk = r.body.keys[0];
    expect(jwk).toMatchObject({
      kty: "OKP",
      crv: "Ed25519",
      alg: "EdDSA",
      kid: expect.any(String),
      x: expect.any(String),
    });
    expect(jwk.d).toBeUndefined();
    const token = await t.ipToken(app.id, { user: alice.id });
    expect(decodeProtectedHeader(token)).toMatchObject({ alg: "EdDSA", kid: jwk.kid });
    const { payload } = await jwtVerify(token, createLocalJWKSet(r.body), { issuer: "gpupool", audience: app.id });
    expect(payload.sub).toBe(`user:${alice.id}`);
    expect(payload.exp! - payload.iat!).toBe(600);
  });

  it("edge keys and the admin may mint; app and node keys may not", async () => {
    const { app } = await setup();
    const edge = await t.call("POST", "/v1/admin/edges", { token: ADMIN, body: { name: "edge-1" } });
    const node = await t.call("POST", "/v1/admin/nodes", { token: ADMIN, body: { name: "node-1" } });
    const body = { app: app.id, ip: "192.0.2.1" };
    const minted = await t.call("POST", "/v1/ip-tokens", { token: edge.body.key, body });
    expect(minted.status).toBe(201);
    expect(minted.body.subject).toBe("ip:192.0.2.1");
    expectProblem(await t.call("POST", "/v1/ip-tokens", { token: app.key, body }), 403, "forbidden");
    expectProblem(await t.call("POST", "/v1/ip-tokens", { token: node.body.key, body }), 403, "forbidden");
    expectProblem(await t.call("POST", "/v1/ip-tokens", { body }), 401, "unauthorized");
  });

  it("refuses to mint for unknown apps, unknown users, bad addresses, or both/neither viewer", async () => {
    const { app } = await setup();
    const bad = async (body: unknown, field: string) => {
      const p = expectProblem(await t.call("POST", "/v1/ip-tokens", { token: ADMIN, body }), 400, "invalid_request");
      expect(p.errors.map((e: { field: string }) => e.field)).toContain(field);
    };
    await bad({ app: "nope", ip: "192.0.2.1" }, "app");
    await bad({ app: app.id, user: "nobody" }, "user");
    await bad({ app: app.id, ip: "300.1.2.3" }, "ip");
    await bad({ app: app.id, ip: "192.0.2.1", user: "alice" }, "ip");
    await bad({ app: app.id }, "user");
  });
});
