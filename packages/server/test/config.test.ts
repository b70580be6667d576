import { describe, expect, it } from "vitest";
import { ConfigError, normalizeConfig } from "../src/config.js";

describe("configuration", () => {
  it("runs with no file: the documented defaults", () => {
    const c = normalizeConfig({});
    expect(c.server).toEqual({ host: "127.0.0.1", port: 7070, bodyLimitBytes: 65536 });
    expect(c.storage.url).toBe("sqlite:./gpupool.db");
    expect(c.policy.windowMs).toBe(86_400_000);
    expect(c.policy.tiers["free"]).toEqual({
      name: "free",
      quotaMs: 210_000,
      priority: 2,
      maxDurationMs: 120_000,
      maxRuns: null,
    });
    expect(c.policy.tiers["pro"]?.quotaMs).toBe(1_500_000);
    expect(c.policy.sizes["xlarge"]).toEqual({ name: "xlarge", slots: 2, cost: 2 });
    expect(c.policy.queueTimeoutMs).toBe(60_000);
    expect(c.pool.devices).toHaveLength(2);
    expect(c.pool.devices[0]?.uuid).toMatch(/^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(c.identity.ipTokenTtlMs).toBe(600_000);
  });

  it("accepts durations as strings or seconds", () => {
    const c = normalizeConfig({
      quota: { window: "12h", default_duration: 30, tiers: { anonymous: { quota: "90s", max_duration: "1.5m" } } },
    });
    expect(c.policy.windowMs).toBe(43_200_000);
    expect(c.policy.defaultDurationMs).toBe(30_000);
    expect(c.policy.tiers["anonymous"]?.maxDurationMs).toBe(90_000);
    expect(Object.keys(c.policy.tiers)).toEqual(["anonymous"]);
  });

  it("takes queue.timeout as one duration or per tier, and honest admission switches", () => {
    const one = normalizeConfig({ queue: { timeout: "45s" } });
    expect(one.policy.queueTimeoutMs).toBe(45_000);
    expect(one.policy.tiers["free"]?.queueTimeoutMs).toBeUndefined();
    expect(one.policy.predictedWait).toBeUndefined();
    const per = normalizeConfig({
      queue: { timeout: { default: "50s", anonymous: "20s" }, predicted_wait: false, predicted_wait_via_agents: true },
    });
    expect(per.policy.queueTimeoutMs).toBe(50_000);
    expect(per.policy.tiers["anonymous"]?.queueTimeoutMs).toBe(20_000);
    expect(per.policy.tiers["pro"]?.queueTimeoutMs).toBeUndefined();
    expect(per.policy).toMatchObject({ predictedWait: false, predictedWaitViaAgents: true });
    expect(() => normalizeConfig({ queue: { timeout: { gold: "20s" } } })).toThrow(
      /queue\.timeout\.gold: "gold" is not one of quota\.tiers/,
    );
    // The headroom a paying call with no promise must be expected to leave: a tenth unless set.
    expect(one.policy.predictedWaitHeadroom).toBeUndefined();
    expect(normalizeConfig({ queue: { predicted_wait_headroom: 0 } }).policy.predictedWaitHeadroom).toBe(0);
    expect(normalizeConfig({ queue: { predicted_wait_headroom: 0.25 } }).policy.predictedWaitHeadroom).toBe(0.25);
    expect(() => normalizeConfig({ queue: { predicted_wait_headroom: 0.6 } })).toThrow(
      /queue\.predicted_wait_headroom/,
    );
  });

  it("reports every problem at once, each with the field's path", () => {
    let error: unknown;
    try {
      normalizeConfig({
        server: { port: -1, bogus: 1 },
        quota: { window: "abc", tiers: { free: { quota: "x" } } },
        queue: { timeout: -5 },
      });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems.join("\n");
    expect(problems).toMatch(/server\.port/);
    expect(problems).toMatch(/server: .*bogus|bogus/);
    expect(problems).toMatch(/quota\.window/);
    expect(problems).toMatch(/quota\.tiers\.free\.quota/);
    expect(problems).toMatch(/queue\.timeout/);
  });

  it("dashboard.live_poll: how often live streams look again unasked, a second unless set, from 100ms to 7 days", () => {
    expect(normalizeConfig({}).dashboard.livePollMs).toBe(1_000);
    expect(normalizeConfig({ dashboard: { live_poll: "5s" } }).dashboard.livePollMs).toBe(5_000);
    expect(() => normalizeConfig({ dashboard: { live_poll: "50ms" } })).toThrow(
      /dashboard\.live_poll: must be at least 100ms/,
    );
    // Like every duration: so long a timer would overflow (Node then fires it at once, over and over) is refused.
    expect(() => normalizeConfig({ dashboard: { live_poll: "30d" } })).toThrow(
      /dashboard\.live_poll: must be at most 7 days/,
    );
  });

  it("requires the anonymous tier and a known default size", () => {
    expect(() => normalizeConfig({ quota: { tiers: { free: { quota: "1m" } }, default_size: "huge" } })).toThrow(
      /anonymous[\s\S]*default_size|default_size[\s\S]*anonymous/,
    );
  });
});

describe("retention", () => {
  const problemsOf = (raw: unknown): string[] => {
    try {
      normalizeConfig(raw);
    } catch (e) {
      if (e instanceof ConfigError) return [...e.problems];
      throw e;
    }
    return [];
  };

  it("defaults: ended leases 30 days, sessions and idle ledgers 7 days, usage records (the bill) forever", () => {
    expect(normalizeConfig({}).retention).toEqual({
      leasesMs: 30 * 86_400_000,
      usageMs: null,
      sessionsMs: 7 * 86_400_000,
      ledgersMs: 7 * 86_400_000,
      intervalMs: 3_600_000,
      batchRows: 1_000,
      pauseMs: 100,
    });
  });

  it("takes durations of years, and forever (or null) for anything kept", () => {
    const r = normalizeConfig({
      retention: { leases: "90d", usage: "3650d", sessions: "forever", ledgers: null, batch: 500, pause: "1s" },
    }).retention;
    expect(r).toMatchObject({
      leasesMs: 90 * 86_400_000,
      usageMs: 3650 * 86_400_000,
      sessionsMs: null,
      ledgersMs: null,
    });
    expect(r).toMatchObject({ batchRows: 500, pauseMs: 1_000 });
  });

  it("reports every problem at once, with its path", () => {
    const problems = problemsOf({
      retention: { leases: "2h", usage: "1h", sessions: "soon", batch: 0, interval: "1s", bogus: 1 },
    });
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^retention\.sessions: .*not a duration/),
        expect.stringMatching(/^retention\.batch: /),
        expect.stringMatching(/^retention: .*bogus/),
      ]),
    );
    // The cross-field rules are checked once the fields parse.
    expect(problemsOf({ retention: { leases: "2h", usage: "1h", interval: "1s" } })).toEqual([
      expect.stringMatching(/^retention\.leases: must be at least 1 day/),
      expect.stringMatching(/^retention\.usage: must be at least retention\.leases/),
      expect.stringMatching(/^retention\.interval: must be at least 1 minute/),
    ]);
    // Usage records may not go while their leases are kept forever.
    expect(problemsOf({ retention: { leases: "forever", usage: "400d" } })).toEqual([
      expect.stringMatching(/^retention\.usage: /),
    ]);
  });
});
