import { fail } from "@gpupool/core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EngineRunner } from "../src/engine/runner.js";
import { openStorage } from "../src/storage/open-store.js";
import { LeadershipLostError } from "../src/storage/store.js";
import type { Stager, Storage } from "../src/storage/store.js";
import { waitFor } from "./harness.js";

/**
 * The engine runner's one error policy, on the real SQLite stager with faults injected into its
 * commits: refusals never rebuild memory; a failed commit rebuilds it once for the whole group;
 * a rebuild that fails leaves memory stale, and the next operation rebuilds it before it runs.
 */

let dir: string;
let storage: Storage;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "gpupool-runner-"));
  storage = await openStorage(`sqlite:${join(dir, "test.db")}`);
});

afterEach(async () => {
  await storage.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The storage's stager, whose commits are reported failed (as a disk error would make them) while `failing` is set. */
function faulty(real: Stager): Stager & { failing: boolean } {
  const s = {
    failing: false,
    ordered: real.ordered,
    async stage<T>(fn: Parameters<Stager["stage"]>[0]) {
      const failNow = s.failing;
      const staged = await real.stage(fn);
      return {
        value: staged.value as T,
        committed: failNow
          ? staged.committed.then(() => Promise.reject(new Error("disk I/O error")))
          : staged.committed,
      };
    },
  };
  return s;
}

function runner(
  stager: Stager,
  rebuild: () => Promise<void>,
  onLeadershipLost: (err: LeadershipLostError) => void = () => undefined,
): EngineRunner {
  return new EngineRunner({ stager, rebuild, onLeadershipLost, log: pino({ level: "silent" }) });
}

describe("EngineRunner's error policy", () => {
  it("a refusal or a not-found goes to the caller and rebuilds nothing", async () => {
    let rebuilds = 0;
    const r = runner(storage.coordination.leaderStager, async () => void rebuilds++);
    await expect(
      r.run(
        async () => fail("not_found", "No lease ls_x."),
        () => "after",
      ),
    ).rejects.toMatchObject({ code: "not_found" });
    await expect(
      r.run(
        async () => fail("quota_exceeded", "Over."),
        () => "after",
      ),
    ).rejects.toMatchObject({ code: "quota_exceeded" });
    expect(rebuilds).toBe(0);
    expect(
      await r.run(
        async () => 1,
        (v) => v + 1,
      ),
    ).toBe(2);
  });

  it("a failed commit fails every operation of its group and rebuilds memory once for all of them", async () => {
    const stager = faulty(storage.coordination.leaderStager);
    let rebuilds = 0;
    const r = runner(stager, async () => void rebuilds++);
    stager.failing = true;
    const afters: number[] = [];
    const ops = [1, 2, 3].map((n) =>
      r.run(
        async () => n,
        (v) => afters.push(v),
      ),
    );
    const results = await Promise.allSettled(ops);
    expect(results.map((x) => x.status)).toEqual(["rejected", "rejected", "rejected"]);
    // Nobody was told of success: what follows a commit never ran.
    expect(afters).toEqual([]);
    expect(rebuilds).toBe(1);
    stager.failing = false;
    expect(
      await r.run(
        async () => 4,
        (v) => v,
      ),
    ).toBe(4);
    expect(rebuilds).toBe(1);
  });

  it("when the rebuild fails too, memory is stale: the next operation rebuilds first, and fails without running while it cannot", async () => {
    const stager = faulty(storage.coordination.leaderStager);
    let rebuildWorks = false;
    let rebuilds = 0;
    const r = runner(stager, async () => {
      rebuilds++;
      if (!rebuildWorks) throw new Error("database is locked");
    });
    stager.failing = true;
    await expect(
      r.run(
        async () => 1,
        (v) => v,
      ),
    ).rejects.toThrow("disk I/O error");
    stager.failing = false;
    let ran = false;
    await expect(
      r.run(
        async () => {
          ran = true;
          return 2;
        },
        (v) => v,
      ),
    ).rejects.toThrow("database is locked");
    expect(ran).toBe(false);
    rebuildWorks = true;
    expect(
      await r.run(
        async () => 3,
        (v) => v,
      ),
    ).toBe(3);
    expect(rebuilds).toBe(3);
  });

  it("a rebuild the store refused is retried in the background until it succeeds, with no request to trigger it", async () => {
    const stager = faulty(storage.coordination.leaderStager);
    let rebuildWorks = false;
    let rebuilt = false;
    const r = runner(stager, async () => {
      if (!rebuildWorks) throw new Error("database or disk is full");
      rebuilt = true;
    });
    stager.failing = true;
    await expect(
      r.run(
        async () => 1,
        (v) => v,
      ),
    ).rejects.toThrow("disk I/O error");
    // Space comes back; nobody calls the runner.
    stager.failing = false;
    rebuildWorks = true;
    await waitFor(() => rebuilt, 5_000);
    r.stop();
  });

  it("lost leadership steps down and rebuilds nothing", async () => {
    let rebuilds = 0;
    const lost: Error[] = [];
    const r = runner(
      storage.coordination.leaderStager,
      async () => void rebuilds++,
      (err) => lost.push(err),
    );
    await expect(
      r.run(
        async () => {
          throw new LeadershipLostError();
        },
        () => "after",
      ),
    ).rejects.toBeInstanceOf(LeadershipLostError);
    expect(lost).toHaveLength(1);
    expect(rebuilds).toBe(0);
  });
});
