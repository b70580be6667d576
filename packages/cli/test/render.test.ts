import type { Diagnosis, PoolState, Quota } from "@gpupool/sdk";
import { describe, expect, it } from "vitest";
import { relative, renderDiagnosis, renderLeases, renderPool, renderQuota, span, table, wrap } from "../src/render.js";

const now = new Date("2025-01-01T12:00:00Z");

const overageOff: Quota["overage"] = {
  available: false,
  enabled: false,
  blockedBy: "operator_disabled",
  pricePerGpuMinuteMicros: 0,
  monthlyCapMicros: null,
  spentMicros: 0,
  heldMicros: 0,
  month: "2025-01",
  monthEndsAt: new Date("2025-02-01T00:00:00Z"),
  currency: "USD",
  display: {},
};

function quota(overrides: Partial<Quota> = {}): Quota {
  return {
    identity: { kind: "user", id: "u_1", tier: "free" },
    quota: 210,
    used: 30,
    reserved: 60,
    left: 120,
    bonus: 0,
    window: 86_400,
    windowStartedAt: new Date("2025-01-01T08:48:00Z"),
    resetsAt: new Date("2025-01-02T08:48:00Z"),
    priority: 2,
    maxDuration: 120,
    runs: 3,
    maxRuns: null,
    credits: null,
    overage: overageOff,
    ...overrides,
  };
}

describe("render", () => {
  it("spans and relative times", () => {
    expect(span(45)).toBe("45s");
    expect(span(125)).toBe("2m 5s");
    expect(span(3 * 3600 + 12 * 60 + 30)).toBe("3h 12m");
    expect(span(86_400 * 2 + 3600)).toBe("2d 1h");
    expect(relative(new Date(now.getTime() + (3 * 3600 + 12 * 60) * 1000), now)).toBe("in 3h 12m");
    expect(relative(new Date(now.getTime() - 300_000), now)).toBe("5m ago");
    expect(relative(now, now)).toBe("now");
  });

  it("quota: amounts, reservations, and the reset in local time and relative", () => {
    const text = renderQuota(quota(), now);
    expect(text).toMatch(/^GPU quota of user:u_1 \(tier free\)$/m);
    expect(text).toMatch(/left\s+2m of 3m 30s .* 57% left {2}\(120 of 210 s\)/);
    expect(text).toMatch(/reserved\s+1m\s+\(held by calls in progress/);
    expect(text).toMatch(/resets\s+.*\(in 20h 48m\)/);
    expect(text).toMatch(/runs this window 3$/m);
  });

  it("quota: a window that has not started says when it will", () => {
    const text = renderQuota(quota({ windowStartedAt: null, resetsAt: null, used: 0, reserved: 0, left: 210 }), now);
    expect(text).toMatch(/window\s+24h, not started: it opens at the first GPU grant/);
    expect(text).not.toMatch(/^ +resets /m);
  });

  it("tables and wrapping", () => {
    expect(table(["A", "BB"], [["xxx", "y"]])).toBe("A    BB\nxxx  y");
    expect(wrap("one two three four", 12, 2)).toBe("one two\n  three four");
  });

  it("diagnosis: a queued verdict names the position, why and the estimated wait; a refused token charges nobody", () => {
    const base: Diagnosis = {
      identity: { kind: "user", id: "u_1", tier: "free" },
      steps: [{ step: "charged_identity", outcome: "ok", detail: "Charged to user:u_1." }],
      request: { duration: 60, size: "large", cost: 1, reserves: 60 },
      quota: null,
      buckets: [{ bucket: "credits", applies: false, detail: "Credits do not extend the GPU quota." }],
      verdict: { outcome: "queued", position: 3, reason: "concurrency", etaS: 20, etaMaxS: 45, problem: null },
      causes: [{ rank: 1, cause: "All slots busy.", fix: "Nothing to fix." }],
    };
    const queued = renderDiagnosis(base, now);
    expect(queued).toMatch(/1\. ✓ charged_identity \(ok\): Charged to user:u_1\./);
    expect(queued).toMatch(/1m on large \(cost ×1\) reserves 1m of GPU quota/);
    expect(queued).toMatch(/✗ does not apply\s+credits\s+Credits do not extend the GPU quota\./);
    expect(queued).toMatch(
      /QUEUED: it would wait at position 3 \(the app is at its concurrency limit, about 20s, 45s at most\)/,
    );
    expect(queued).toMatch(/1\. All slots busy\.\n {5}fix: Nothing to fix\./);

    const problem = { type: "t", title: "t", status: 401, detail: "Token expired.", code: "invalid_ip_token" };
    const refused = renderDiagnosis(
      {
        ...base,
        identity: null,
        request: null,
        verdict: { outcome: "rejected", position: null, reason: null, etaS: null, etaMaxS: null, problem },
      },
      now,
    );
    expect(refused).toMatch(/→ charged to nobody/);
    expect(refused).toMatch(/REJECTED \[invalid_ip_token\]: Token expired\./);
  });

  it("a pool view from a replica that does not lead says so, and where to ask", () => {
    const state: PoolState = {
      leader: false,
      source: "database",
      nodes: [{ name: "sim-0", kind: "configured", state: "up", heartbeatAt: null, agentUrl: null }],
      devices: [
        { node: "sim-0", index: 0, uuid: "GPU-0", name: "Simulated H200", memoryMb: 144_384, slots: ["ls_1", null] },
      ],
      slots: { total: 2, busy: 1 },
      active: [],
      queue: [{ lease: "ls_2", position: 1, reason: null, identity: "app:a_1", app: "a_1", slots: 1 }],
      queued: { total: 1, listed: 1, byReason: {}, byKind: { app: 1 } },
    };
    const text = renderPool(state, now);
    expect(text).toMatch(/^Pool: 1 node\(s\), 1 GPU\(s\), 2 slots \(1 busy, 1 free\), 1 queued/);
    expect(text).not.toMatch(/more in line/);
    // A deep queue: the server lists the first in line and counts the rest.
    const deep = renderPool({ ...state, queued: { total: 250, listed: 1, byReason: {}, byKind: { app: 250 } } }, now);
    expect(deep).toMatch(/^Pool: .*, 250 queued/);
    expect(deep).toMatch(/^Queue \(250\)$/m);
    expect(deep).toMatch(/… and 249 more in line/);
    expect(text).toMatch(/does not lead the pool/);
    expect(text).toMatch(/leader: true/);
    expect(renderPool({ ...state, leader: true }, now)).not.toMatch(/does not lead/);
  });

  it("an active lease's device is named node/index, as `gpupool leases` names it", () => {
    const active = [
      {
        id: "ls_1",
        app: "a_1",
        identity: "user:u_1",
        size: "large",
        node: "sim-0",
        device: 1,
        deadline: new Date("2025-01-01T12:00:45Z"),
      },
    ];
    const pool = renderPool(
      {
        leader: true,
        source: "leader",
        nodes: [],
        devices: [],
        slots: { total: 2, busy: 1 },
        active,
        queue: [],
        queued: { total: 0, listed: 0, byReason: {}, byKind: {} },
      },
      now,
    );
    const leases = renderLeases(
      [
        {
          id: "ls_1",
          status: "active",
          app: "a_1",
          identity: { kind: "user", id: "u_1", tier: "free" },
          size: "large",
          duration: 60,
          reserved: 60,
          cost: 1,
          node: "sim-0",
          device: { node: "sim-0", index: 1, uuid: "GPU-1", name: "H200", slots: [0] },
          queuedAt: now,
          grantedAt: now,
          deadline: new Date(now.getTime() + 45_000),
          endedAt: null,
          position: null,
          reason: null,
          etaS: null,
          etaMaxS: null,
          heldMs: null,
          charged: 0,
          refunded: 0,
          failed: false,
          billing: { quotaS: 60, overageS: 0, holdMicros: 0, chargedMicros: 0, currency: "USD", display: {} },
          problem: null,
          quota: null,
        },
      ],
      now,
    );
    expect(pool).toMatch(/ls_1 +a_1 +user:u_1 +large +sim-0\/1 +in 45s/);
    expect(leases).toMatch(/ sim-0\/1 /);
  });
});
