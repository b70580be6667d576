import { describe, expect, it } from "vitest";
import { attribute } from "../src/index.js";
import type { IpTokenCheck, Principal } from "../src/index.js";

const USER: Principal = { kind: "user", userId: "u1", userName: "alice" };
const APPK: Principal = { kind: "app", appId: "a1", appName: "demo" };
const EXP = Date.UTC(2025, 0, 1, 0, 5);

describe("attribute", () => {
  it("user token: charged to the user", () => {
    const r = attribute(USER, { present: false });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.charged).toEqual({ kind: "user", id: "u1" });
    expect(r.via).toBe("user-token");
    expect(r.steps.map((s) => [s.step, s.outcome])).toEqual([
      ["authorization", "ok"],
      ["charged_identity", "ok"],
    ]);
    expect(r.steps[0]?.detail).toContain("alice");
  });

  it("user token + X-IP-Token: rejected, even when the token is valid", () => {
    const tokens: IpTokenCheck[] = [
      { present: true, valid: true, subject: { kind: "user", id: "u2" }, expiresAt: EXP },
      { present: true, valid: false, reason: "expired", message: "expired" },
    ];
    for (const token of tokens) {
      const r = attribute(USER, token);
      expect(r.ok).toBe(false);
      if (r.ok) return;
      expect(r.problem.code).toBe("invalid_ip_token");
      expect(r.problem.status).toBe(401);
      expect(r.problem.reason).toBe("not_accepted");
      expect(r.problem.detail).toMatch(/Remove the header/);
      expect(r.steps.at(-1)).toMatchObject({ step: "x-ip-token", outcome: "rejected" });
      expect("charged" in r).toBe(false);
    }
  });

  it("app key without a token: falls back to the app identity, with the steps explaining why", () => {
    const r = attribute(APPK, { present: false });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.charged).toEqual({ kind: "app", id: "a1" });
    expect(r.via).toBe("app-key");
    expect(r.steps.map((s) => [s.step, s.outcome])).toEqual([
      ["authorization", "ok"],
      ["x-ip-token", "fallback"],
      ["charged_identity", "fallback"],
    ]);
    expect(r.steps[1]?.detail).toMatch(/No X-IP-Token/);
    expect(r.steps[2]?.detail).toContain("app:a1");
    expect(r.steps[2]?.detail).toMatch(/anonymous/);
  });

  it.each([
    ["a signed-in viewer", { kind: "user" as const, id: "u9" }, "user:u9", /signed-in viewer/],
    ["an anonymous viewer", { kind: "ip" as const, id: "203.0.113.7" }, "ip:203.0.113.7", /IP address/],
  ])("app key + valid token for %s: charged to the token's subject", (_label, subject, key, why) => {
    const r = attribute(APPK, { present: true, valid: true, subject, expiresAt: EXP });
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.charged).toEqual(subject);
    expect(r.via).toBe("ip-token");
    expect(r.steps.map((s) => s.outcome)).toEqual(["ok", "ok", "ok"]);
    expect(r.steps[1]?.detail).toContain(key);
    expect(r.steps[1]?.detail).toContain(new Date(EXP).toISOString());
    expect(r.steps[2]?.detail).toMatch(why);
  });

  it.each([
    "malformed",
    "expired",
    "wrong_app",
    "bad_signature",
    "alg_not_allowed",
    "unknown_key",
    "wrong_issuer",
    "bad_subject",
    "unknown_user",
  ] as const)(
    "app key + invalid token (%s): invalid_ip_token with its reason, nothing charged, no fallback",
    (reason) => {
      const r = attribute(APPK, { present: true, valid: false, reason, message: `The X-IP-Token is ${reason}.` });
      expect(r.ok).toBe(false);
      if (r.ok) return;
      expect(r.problem.code).toBe("invalid_ip_token");
      expect(r.problem.reason).toBe(reason);
      expect(r.problem.detail).toContain(`The X-IP-Token is ${reason}.`);
      expect(r.problem.detail).toMatch(/not charged to anyone and nothing was reserved/);
      expect(r.steps.map((s) => [s.step, s.outcome])).toEqual([
        ["authorization", "ok"],
        ["x-ip-token", "rejected"],
      ]);
      expect("charged" in r).toBe(false);
    },
  );

  it("an IP subject explains what it means at the edge: no session or Bearer, or a token not forwarded", () => {
    const r = attribute(APPK, {
      present: true,
      valid: true,
      subject: { kind: "ip", id: "203.0.113.7" },
      expiresAt: EXP,
    });
    const why = r.steps.at(-1)?.detail ?? "";
    expect(why).toMatch(/no session cookie and no Bearer user token/);
    expect(why).toMatch(/\/login/);
    expect(why).toMatch(/did not forward the X-IP-Token/);
    expect(why).toMatch(/X-Gpupool-Token-Dropped/);
  });
});
