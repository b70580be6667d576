import { describe, expect, it } from "vitest";
import type { Problem, ReserveOutcome } from "../src/index.js";
import { DEFAULT_POLICY, reserve } from "../src/index.js";
import { ANON_IP, APP, FREE_USER, PRO_USER, S, T0, input, ledger } from "./helpers.js";
import type { InputOptions } from "./helpers.js";

function refused(o: InputOptions): { problem: Problem; retryAfterS: number | null } {
  const r: ReserveOutcome = reserve(input(o));
  if (r.ok) throw new Error("expected a refusal");
  return r;
}

describe("quota_exceeded", () => {
  it("anonymous (ip): names the IP identity, suggests signing in with the free tier's quota, has every number", () => {
    const { problem, retryAfterS } = refused({
      identity: ANON_IP,
      ledger: ledger({ windowStartedAt: T0 - 3600 * S, usedMs: 100 * S }),
      durationMs: 60 * S,
    });
    expect(problem.code).toBe("quota_exceeded");
    expect(problem.status).toBe(429);
    expect(problem.next_step).toBe("sign_in");
    expect(problem.identity).toBe("ip:203.0.113.7");
    expect(problem.tier).toBe("anonymous");
    expect(problem.detail).toContain("ip:203.0.113.7");
    expect(problem.detail).toMatch(/IP address/);
    expect(problem.detail).toMatch(/Sign in/);
    expect(problem.detail).toContain("free tier gets 3m 30s");
    // needs 1m, 20s left of the 2m quota, 1m 40s used
    expect(problem.detail).toContain("needs 1m ");
    expect(problem.detail).toContain("20s left");
    expect(problem.detail).toContain("2m anonymous quota");
    expect(problem.detail).toContain("1m 40s used");
    expect(problem).toMatchObject({ requested: 60, left: 20, quota: 120, used: 100, reserved: 0 });
    // only the reset helps: retry at window start + 24h, 23h from now
    const resetsAt = new Date(T0 + 23 * 3600 * S).toISOString();
    expect(problem.resets_at).toBe(resetsAt);
    expect(problem.retry_at).toBe(resetsAt);
    expect(retryAfterS).toBe(23 * 3600);
    expect(problem.detail).toContain("in 23h");
  });

  it("free: names the pro tier with its quota", () => {
    const { problem } = refused({
      identity: FREE_USER,
      ledger: ledger({ windowStartedAt: T0 - 60 * S, usedMs: 200 * S }),
      durationMs: 30 * S,
    });
    expect(problem.next_step).toBe("upgrade");
    expect(problem.detail).toContain("user:alice");
    expect(problem.detail).toContain("pro tier");
    expect(problem.detail).toContain("25m");
    expect(problem.detail).toContain("needs 30s");
    expect(problem.detail).toContain("10s left");
    expect(problem.detail).toContain("3m 30s free quota");
    expect(problem.detail).toContain("3m 20s used");
    expect(problem).toMatchObject({ requested: 30, left: 10, quota: 210, used: 200, tier: "free" });
  });

  it("pro: says when the window resets and that credits do not extend the GPU quota", () => {
    const windowStartedAt = T0 - 2 * 3600 * S;
    const { problem } = refused({
      identity: PRO_USER,
      ledger: ledger({ windowStartedAt, usedMs: 1490 * S }),
      durationMs: 60 * S,
    });
    expect(problem.next_step).toBe("wait_for_reset");
    expect(problem.detail).toMatch(/resets at 2025-01-16 10:00 UTC \(in 22h\)/);
    expect(problem.detail).toMatch(/Credits do not extend the GPU quota/);
    expect(problem.resets_at).toBe(new Date(windowStartedAt + DEFAULT_POLICY.windowMs).toISOString());
    expect(problem.detail).toContain("needs 1m");
    expect(problem.detail).toContain("10s left");
    expect(problem.detail).toContain("25m pro quota");
    expect(problem.detail).toContain("24m 50s used");
    expect(problem).toMatchObject({ requested: 60, left: 10, quota: 1500, used: 1490 });
  });

  it('says a reset 23h 59m 30s away in well-formed units (not "23h 60m")', () => {
    const { problem } = refused({
      identity: PRO_USER,
      ledger: ledger({ windowStartedAt: T0 - 30 * S, usedMs: 1500 * S }),
      durationMs: 10 * S,
    });
    expect(problem.detail).toContain("(in ");
    expect(problem.detail).not.toMatch(/\b60[sm]\b/);
  });

  it("app identity: explains that no X-IP-Token was sent and how to forward it", () => {
    const { problem } = refused({
      identity: APP,
      ledger: ledger({ windowStartedAt: T0 - 60 * S, usedMs: 110 * S }),
      durationMs: 30 * S,
    });
    expect(problem.next_step).toBe("forward_identity");
    expect(problem.identity).toBe("app:appA");
    expect(problem.detail).toMatch(/app:appA \(the app sent no X-IP-Token/);
    expect(problem.detail).toContain("forward the viewer's X-IP-Token");
    expect(problem.detail).toContain("10s left");
    expect(problem.detail).toContain("1m 50s used");
  });

  it("xlarge: shows duration × cost", () => {
    const { problem } = refused({
      identity: FREE_USER,
      ledger: ledger({ windowStartedAt: T0, usedMs: 100 * S }),
      durationMs: 60 * S,
      size: "xlarge",
    });
    expect(problem.detail).toContain("needs 2m (1m × 2 for xlarge)");
    expect(problem.requested).toBe(120);
  });

  it("blocked only by own calls in flight: wait for them, retry at the earliest end", () => {
    const end = T0 + 45 * S;
    const { problem, retryAfterS } = refused({
      identity: FREE_USER,
      ledger: ledger({ windowStartedAt: T0 - 10 * S, usedMs: 0, reservedMs: 200 * S }),
      durationMs: 60 * S,
      earliestInFlightEnd: end,
    });
    expect(problem.next_step).toBe("wait_for_calls");
    expect(problem.retry_at).toBe(new Date(end).toISOString());
    expect(retryAfterS).toBe(45);
    expect(problem.detail).toContain("3m 20s reserved by calls in progress");
    expect(problem.detail).toContain("in 45s");
    expect(problem).toMatchObject({ reserved: 200, left: 10 });
  });

  it("no window yet (never granted, everything reserved): no reset time, retry_at null", () => {
    const { problem, retryAfterS } = refused({
      identity: ANON_IP,
      ledger: ledger({ reservedMs: 100 * S }),
      durationMs: 60 * S,
    });
    expect(problem.resets_at).toBeNull();
    expect(problem.retry_at).toBeNull();
    expect(retryAfterS).toBeNull();
  });
});

describe("duration_too_long", () => {
  it("over the tier's max duration", () => {
    const { problem, retryAfterS } = refused({ identity: FREE_USER, durationMs: 121 * S });
    expect(problem.code).toBe("duration_too_long");
    expect(problem.status).toBe(422);
    expect(retryAfterS).toBeNull();
    expect(problem.detail).toContain("2m 1s");
    expect(problem.detail).toContain("at most 2m per call");
    expect(problem.detail).toContain("user:alice");
    expect(problem.detail).toMatch(/never be granted/);
    expect(problem).toMatchObject({
      duration: 121,
      max_duration: 120,
      cost: 1,
      requested: 121,
      quota: 210,
      tier: "free",
    });
  });

  it("cost larger than the whole quota (anonymous xlarge): suggests signing in", () => {
    const { problem } = refused({ identity: ANON_IP, durationMs: 61 * S, size: "xlarge" });
    expect(problem.code).toBe("duration_too_long");
    expect(problem.detail).toContain("2m 2s");
    expect(problem.detail).toContain("1m 1s on xlarge, cost ×2");
    expect(problem.detail).toContain("whole anonymous quota of 2m");
    expect(problem.detail).toMatch(/Sign in for a larger quota/);
    expect(problem).toMatchObject({ duration: 61, cost: 2, requested: 122, quota: 120 });
  });

  it("cost larger than the whole quota (free): suggests a shorter duration or smaller size", () => {
    const { problem } = refused({ identity: FREE_USER, durationMs: 110 * S, size: "xlarge" });
    expect(problem.code).toBe("duration_too_long");
    expect(problem.detail).toContain("3m 40s");
    expect(problem.detail).toContain("3m 30s");
    expect(problem.detail).not.toMatch(/Sign in/);
    expect(problem.detail).toMatch(/shorter duration or a smaller size/);
  });

  it("wins over quota_exceeded even when nothing is left", () => {
    const { problem } = refused({
      identity: FREE_USER,
      ledger: ledger({ usedMs: 210 * S, windowStartedAt: T0 }),
      durationMs: 200 * S,
    });
    expect(problem.code).toBe("duration_too_long");
  });
});

describe("runs_exceeded", () => {
  it("refuses at the tier's runs limit and says when to retry", () => {
    const policy = {
      ...DEFAULT_POLICY,
      tiers: { ...DEFAULT_POLICY.tiers, free: { ...DEFAULT_POLICY.tiers.free!, maxRuns: 3 } },
    };
    const { problem, retryAfterS } = refused({
      policy,
      identity: FREE_USER,
      ledger: ledger({ windowStartedAt: T0 - 3600 * S, runs: 3 }),
      durationMs: 10 * S,
    });
    expect(problem.code).toBe("runs_exceeded");
    expect(problem).toMatchObject({ runs: 3, max_runs: 3, tier: "free", identity: "user:alice" });
    expect(problem.detail).toContain("3 GPU calls");
    expect(retryAfterS).toBe(23 * 3600);
  });
});
