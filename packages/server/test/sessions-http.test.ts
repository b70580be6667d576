import { SignJWT, decodeJwt, importJWK } from "jose";
import type { JWK } from "jose";
import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { ADMIN, expectProblem, quotaOf, startTestServer } from "./harness.js";

/** What the edge asks of the control plane: sessions, and re-issuing X-IP-Tokens (docs/edge.md). */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

async function setup() {
  t = await startTestServer();
  const alice = await t.user("alice", "pro");
  const owner = await t.user("owner", "pro");
  const front = await t.appFor("front", owner.id);
  const back = await t.appFor("back", owner.id);
  const edge = await t.call("POST", "/v1/admin/edges", { token: ADMIN, body: { name: "edge-1" } });
  return { alice, owner, front, back, edgeKey: edge.body.key as string };
}

describe("sessions", () => {
  it("a user token opens a session that resolves to the user until it is revoked", async () => {
    const { alice, edgeKey } = await setup();
    const opened = await t.call("POST", "/v1/sessions", { token: edgeKey, body: { token: alice.token } });
    expect(opened.status).toBe(201);
    expect(opened.body).toMatchObject({ user: { id: alice.id, name: "alice", tier: "pro" } });
    expect(opened.body.session).toMatch(/^gps_/);
    expect(Date.parse(opened.body.expires_at)).toBeGreaterThan(Date.now());
    const resolved = await t.call("POST", "/v1/sessions/resolve", {
      token: edgeKey,
      body: { session: opened.body.session },
    });
    expect(resolved.status).toBe(200);
    expect(resolved.body.user).toEqual({ id: alice.id, name: "alice", tier: "pro" });

    const revoked = await t.call("POST", "/v1/sessions/revoke", {
      token: edgeKey,
      body: { session: opened.body.session },
    });
    expect(revoked.body).toEqual({ revoked: true });
    expectProblem(
      await t.call("POST", "/v1/sessions/resolve", { token: edgeKey, body: { session: opened.body.session } }),
      401,
      "invalid_session",
    );
    // Signing out twice is fine.
    expect(
      (await t.call("POST", "/v1/sessions/revoke", { token: edgeKey, body: { session: opened.body.session } })).status,
    ).toBe(200);
  });

  it("the session secret is not stored, only its hash", async () => {
    const { alice, edgeKey } = await setup();
    const opened = await t.call("POST", "/v1/sessions", {
      token: edgeKey,
      body: { token: alice.token, name: "alice" },
    });
    expect(opened.status).toBe(201);
    expect(await t.server.context.store.transaction((tx) => tx.sessions.get(opened.body.session))).toBeNull();
  });

  it("a wrong token, or a name that is not the token's owner, is invalid_credentials", async () => {
    const { alice, edgeKey } = await setup();
    expectProblem(
      await t.call("POST", "/v1/sessions", { token: edgeKey, body: { token: "gpu_u_nope" } }),
      401,
      "invalid_credentials",
    );
    expectProblem(
      await t.call("POST", "/v1/sessions", { token: edgeKey, body: { token: alice.token, name: "owner" } }),
      401,
      "invalid_credentials",
    );
    expectProblem(
      await t.call("POST", "/v1/sessions/resolve", { token: edgeKey, body: { session: "gps_made-up" } }),
      401,
      "invalid_session",
    );
  });

  it("only an edge key may open sessions; the admin revokes all of a user's sessions", async () => {
    const { alice, edgeKey, front } = await setup();
    expectProblem(
      await t.call("POST", "/v1/sessions", { token: front.key, body: { token: alice.token } }),
      403,
      "forbidden",
    );
    expectProblem(await t.call("POST", "/v1/sessions", { body: { token: alice.token } }), 401, "unauthorized");
    const a = await t.call("POST", "/v1/sessions", { token: edgeKey, body: { token: alice.token } });
    const b = await t.call("POST", "/v1/sessions", { token: edgeKey, body: { token: alice.token } });
    expectProblem(await t.call("DELETE", "/v1/admin/users/alice/sessions", { token: edgeKey }), 403, "forbidden");
    const r = await t.call("DELETE", "/v1/admin/users/alice/sessions", { token: ADMIN });
    expect(r.body).toEqual({ user: alice.id, revoked: 2 });
    for (const s of [a, b])
      expectProblem(
        await t.call("POST", "/v1/sessions/resolve", { token: edgeKey, body: { session: s.body.session } }),
        401,
        "invalid_session",
      );
    expectProblem(await t.call("DELETE", "/v1/admin/users/nobody/sessions", { token: ADMIN }), 404, "not_found");
  });
});

describe("re-issuing an X-IP-Token for another app", () => {
  it("keeps the subject and changes the audience; the target app's calls charge the original viewer", async () => {
    const { alice, edgeKey, front, back } = await setup();
    const forFront = await t.ipToken(front.id, { user: alice.id });
    const r = await t.call("POST", "/v1/ip-tokens/reissue", { token: edgeKey, body: { token: forFront, app: "back" } });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ subject: `user:${alice.id}`, app: back.id });
    expect(decodeJwt(r.body.token)).toMatchObject({ sub: `user:${alice.id}`, aud: back.id });
    expect(await quotaOf(t, back.key, r.body.token)).toMatchObject({ identity: { kind: "user", id: alice.id } });
  });

  it("refuses forged, expired and foreign tokens with the reason", async () => {
    const { edgeKey, front } = await setup();
    const [rec] = await t.server.context.store.transaction((tx) => tx.signingKeys.list());
    const key = await importJWK(JSON.parse(rec!.privateJwk) as JWK, "EdDSA");
    const past = Math.floor(Date.now() / 1000) - 3600;
    const expired = await new SignJWT({})
      .setProtectedHeader({ alg: "EdDSA", kid: rec!.kid })
      .setIssuer("gpupool")
      .setSubject("user:u_x")
      .setAudience(front.id)
      .setIssuedAt(past - 60)
      .setExpirationTime(past)
      .sign(key);
    const reissue = (token: string) =>
      t.call("POST", "/v1/ip-tokens/reissue", { token: edgeKey, body: { token, app: "back" } });
    expect(expectProblem(await reissue(expired), 401, "invalid_ip_token").reason).toBe("expired");
    // Signed by the pool, unexpired, but naming a user the pool does not have: nobody to charge.
    const now = Math.floor(Date.now() / 1000);
    const nobody = await new SignJWT({})
      .setProtectedHeader({ alg: "EdDSA", kid: rec!.kid })
      .setIssuer("gpupool")
      .setSubject("user:u_doesnotexist")
      .setAudience(front.id)
      .setIssuedAt(now)
      .setExpirationTime(now + 300)
      .sign(key);
    const unknown = expectProblem(await reissue(nobody), 401, "invalid_ip_token");
    expect(unknown).toMatchObject({ reason: "unknown_user", detail: expect.stringMatching(/user:u_doesnotexist/) });
    const good = await t.ipToken(front.id, { ip: "198.51.100.4" });
    const [h, p] = good.split(".");
    const tampered = `${h}.${p}.${"A".repeat(86)}`;
    expect(expectProblem(await reissue(tampered), 401, "invalid_ip_token").reason).toBe("bad_signature");
    expect(expectProblem(await reissue("not-a-token"), 401, "invalid_ip_token").reason).toBe("malformed");
    const unsigned = `${Buffer.from('{"alg":"none"}').toString("base64url")}.${p}.`;
    expect(expectProblem(await reissue(unsigned), 401, "invalid_ip_token").reason).toMatch(
      /alg_not_allowed|unknown_key|malformed/,
    );
    expectProblem(
      await t.call("POST", "/v1/ip-tokens/reissue", { token: front.key, body: { token: good, app: "back" } }),
      403,
      "forbidden",
    );
    expectProblem(
      await t.call("POST", "/v1/ip-tokens/reissue", { token: edgeKey, body: { token: good, app: "nope" } }),
      400,
      "invalid_request",
    );
  });
});
