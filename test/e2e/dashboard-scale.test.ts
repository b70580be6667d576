import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Route } from "playwright-core";
import { ADMIN, haveBrowser, inCi, requireBrowser, shownWithin, startDashWorld } from "./dashboard-fixture.js";
import type { DashWorld } from "./dashboard-fixture.js";

/** The page's globals, for the functions page.evaluate runs there. */
declare const document: any;
declare const window: any;
declare const MutationObserver: any;

const run = it.skipIf(!haveBrowser && !inCi);

const ACTIVE = 1_000;
const QUEUED = 10_000;
/** Queue entries a pool event lists (the server's QUEUE_LISTED). */
const LISTED = 200;

/** A pool of 500 GPUs (2 slots each) on 50 nodes, `busy` of its slots held, and QUEUED calls waiting. */
function bigPool(busy: number) {
  const nodes = Array.from({ length: 50 }, (_, n) => ({
    name: `node-${n}`,
    kind: "agent",
    state: "up",
    heartbeat_at: new Date().toISOString(),
    agent_url: null,
  }));
  const active: unknown[] = [];
  const devices = Array.from({ length: 500 }, (_, g) => ({
    node: `node-${Math.floor(g / 10)}`,
    index: g % 10,
    uuid: `GPU-${g}`,
    name: "H200",
    memory_mb: 141_000,
    slots: [0, 1].map((s) => {
      const i = g * 2 + s;
      if (i >= busy) return null;
      const id = `ls_${i}`;
      active.push({
        id,
        app: `a_${i % 40}`,
        identity: `user:u_${i % 300}`,
        size: "large",
        node: `node-${Math.floor(g / 10)}`,
        device: g % 10,
        deadline: new Date(Date.now() + 60_000).toISOString(),
      });
      return id;
    }),
  }));
  // As the server sends it: the first 200 in line, all of them counted.
  const queue = line(0, LISTED);
  const queued = { total: QUEUED, listed: LISTED, by_reason: { node: QUEUED }, by_kind: { ip: QUEUED } };
  return { leader: true, source: "leader", nodes, devices, slots: { total: 1000, busy }, active, queue, queued };
}

/** Queue entries at positions after `after`, at most `limit`. */
function line(after: number, limit: number) {
  return Array.from({ length: Math.max(0, Math.min(limit, QUEUED - after)) }, (_, k) => {
    const i = after + k;
    return {
      lease: `lq_${i}`,
      position: i + 1,
      reason: "node",
      identity: `ip:10.0.${Math.floor(i / 250)}.${i % 250}`,
      app: `a_${i % 40}`,
      slots: 1,
    };
  });
}

describe("the operator's pool view at scale, the page alone (synthetic answers: 1,000 active, 10,000 queued)", () => {
  let w: DashWorld;
  beforeAll(async () => {
    if (!haveBrowser) return;
    w = await startDashWorld();
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });

  run(
    "draws the pool and follows each pool event; the time to update is measured",
    async () => {
      requireBrowser();
      const context = await w.context();
      const page = await context.newPage();
      // The real sign-in, then the pool's answers replaced by a big one: what is measured is the page.
      await w.signIn(page, ADMIN);
      let served = 0;
      const sentAt: number[] = [];
      await context.route(`${w.url}/v1/admin/pool`, (route: Route) => route.fulfill({ json: bigPool(ACTIVE) }));
      // The rest of the line, a page at a time (the cursor here is the last position, in the clear).
      await context.route(`${w.url}/v1/admin/queue/entries**`, (route: Route) => {
        const q = new URL(route.request().url()).searchParams;
        const after = Number(q.get("cursor") ?? 0);
        const entries = line(after, Number(q.get("limit") ?? LISTED));
        const last = entries[entries.length - 1]?.position ?? QUEUED;
        return route.fulfill({
          json: { total: QUEUED, entries, next_cursor: last < QUEUED ? String(last) : null },
        });
      });
      console.log(
        `dashboard at scale: a pool event with ${QUEUED} queued is ${JSON.stringify(bigPool(ACTIVE)).length} bytes`,
      );
      await context.route(`${w.url}/v1/admin/pool/events`, async (route: Route) => {
        // One event per connection: the client reconnects after each, so each arrives on its own.
        const busy = ACTIVE - 1 - served++;
        sentAt.push(Date.now());
        await route.fulfill({
          status: 200,
          headers: { "content-type": "text/event-stream" },
          body: `event: pool\ndata: ${JSON.stringify(bigPool(busy))}\n\n`,
        });
      });
      const loaded = Date.now();
      await page.reload();
      await page.waitForFunction(
        (want) => document.querySelector("#slots-busy")?.textContent?.startsWith(want),
        "1,000 /",
        { timeout: 60_000 },
      );
      console.log(`dashboard at scale: the pool view drawn ${Date.now() - loaded} ms after a reload`);
      // Each event's busy count, as the page shows it, and when.
      await page.evaluate(() => {
        window.__seen = [];
        new MutationObserver(() =>
          window.__seen.push({ text: document.querySelector("#slots-busy")?.textContent, at: Date.now() }),
        ).observe(document.querySelector("#pool"), { subtree: true, characterData: true, childList: true });
      });
      await page
        .waitForFunction(() => window.__seen?.some((s: any) => s.text?.startsWith("996 /")), null, { timeout: 60_000 })
        .catch(async (e: unknown) => {
          console.log(`served ${served}; seen ${JSON.stringify(await page.evaluate(() => window.__seen?.slice(-5)))}`);
          throw e;
        });
      const seen: { text: string; at: number }[] = await page.evaluate(() => window.__seen);
      const latencies = [997, 996].map((busy) => {
        const shown = seen.find((s) => s.text.startsWith(`${busy} /`));
        return shown!.at - sentAt[ACTIVE - 1 - busy]!;
      });
      console.log(`dashboard at scale: a pool event shown ${latencies.join(" ms, ")} ms after it was sent`);
      // Every queued call counted, the first 50 shown, and honestly how many more; the next page from the line.
      await page.waitForFunction(() => document.querySelector("#queued-count")?.textContent === "10,000");
      await page.waitForFunction(() => document.querySelector("#queue-more")?.textContent?.includes("9,950 more"));
      await page.click("#queue-next");
      await page.waitForFunction(
        () => document.querySelector("#queue-more")?.textContent?.startsWith("51–100 of 10,000"),
        null,
        { timeout: 30_000 },
      );
      // Still responsive: a click on another view answers.
      await page.click('a[href="#/users"]');
      await page.waitForSelector("#user-search");
      await context.close();
    },
    180_000,
  );
});

/** Runs `jobs` with at most `width` at a time. */
async function inParallel<T>(jobs: (() => Promise<T>)[], width: number): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < jobs.length) {
        const i = next++;
        out[i] = await jobs[i]!();
      }
    }),
  );
  return out;
}

/** 100 users, each with 10 calls held and 100 waiting: 1,000 active and 10,000 queued on a real server. */
const USERS = 100;

describe("the operator's pool view at scale, a real server holding 1,000 active leases and 10,000 queued", () => {
  let w: DashWorld;
  beforeAll(async () => {
    if (!haveBrowser) return;
    // 50 nodes × 10 GPUs × 2 slots = 1,000 slots; calls wait up to an hour in a line of up to 20,000.
    const nodes = Array.from({ length: 50 }, (_, n) => `{ node: sim-${n}, gpus: 10, slots_per_gpu: 2 }`).join(", ");
    w = await startDashWorld(
      [
        "quota:",
        "  tiers:",
        "    anonymous: { quota: 2m, priority: 1, max_duration: 120s }",
        "    bulk: { quota: 100h, priority: 2, max_duration: 1800s }",
        "    pro: { quota: 25m, priority: 3, max_duration: 300s }",
        "queue:",
        "  timeout: 1h",
        "  max_length: 20000",
        "  predicted_wait: false",
      ],
      { pool: `[${nodes}]` },
    );
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });

  run(
    "draws the pool and queue, and shows a real release; first draw and time to update are measured",
    async () => {
      requireBrowser();
      const started = Date.now();
      const users = await inParallel(
        Array.from({ length: USERS }, (_, i) => () => w.admin.admin.createUser({ name: `bulk-${i}`, tier: "bulk" })),
        8,
      );
      const post = (token: string) => async () => {
        const res = await fetch(`${w.url}/v1/leases`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify({ duration: 1800 }),
        });
        return { status: res.status, id: ((await res.json()) as { id: string }).id, token };
      };
      // The held calls first (each user's first 10), then the waiting ones.
      const held = await inParallel(
        users.flatMap((u) => Array.from({ length: ACTIVE / USERS }, () => post(u.token))),
        16,
      );
      expect(held.filter((r) => r.status === 201).length).toBe(ACTIVE);
      const waiting = await inParallel(
        users.flatMap((u) => Array.from({ length: QUEUED / USERS }, () => post(u.token))),
        16,
      );
      expect(waiting.filter((r) => r.status === 202).length).toBe(QUEUED);
      const queue = await (
        await fetch(`${w.url}/v1/admin/queue`, { headers: { authorization: `Bearer ${ADMIN}` } })
      ).json();
      console.log(
        `dashboard at scale (real server): ${ACTIVE} held and ${QUEUED} queued made in ${Date.now() - started} ms; the queue says ${JSON.stringify(queue).slice(0, 160)}`,
      );

      const pool = await (
        await fetch(`${w.url}/v1/admin/pool`, { headers: { authorization: `Bearer ${ADMIN}` } })
      ).text();
      console.log(`dashboard at scale (real server): GET /v1/admin/pool is ${pool.length} bytes`);
      const context = await w.context();
      const page = await context.newPage();
      const drawn = () =>
        document.querySelector("#slots-busy")?.textContent?.startsWith("1,000 /") &&
        document.querySelector("#queued-count")?.textContent === "10,000"
          ? Date.now()
          : false;
      // Cold: from the sign-in click to the pool and the queue drawn.
      await page.goto(w.url + "/");
      await page.fill("#token", ADMIN);
      const clicked = Date.now();
      await page.click("button[type=submit]");
      await shownWithin(page, drawn, null, clicked, "at scale (real): sign-in → pool and queue drawn", 60_000);
      // Warm: a reload.
      const reloaded = Date.now();
      await page.reload();
      await shownWithin(page, drawn, null, reloaded, "at scale (real): reload → pool and queue drawn", 60_000);

      // Real changes: a held call released; the first in line takes its slot, the line is one shorter.
      for (let k = 0; k < 3; k++) {
        const gone = held[k]!;
        const res = await fetch(`${w.url}/v1/leases/${gone.id}/release`, {
          method: "POST",
          headers: { authorization: `Bearer ${gone.token}`, "content-type": "application/json" },
          body: "{}",
        });
        expect(res.status).toBe(200);
        const released = Date.now();
        await shownWithin(
          page,
          ({ id, left }) =>
            !document.querySelector(`[data-lease="${id}"]`) &&
            document.querySelector("#queued-count")?.textContent === left
              ? Date.now()
              : false,
          { id: gone.id, left: (QUEUED - k - 1).toLocaleString("en-US") },
          released,
          `at scale (real): release ${k + 1} → shown`,
          // Only a bound that fails rather than hangs: the number is what is reported.
          30_000,
        );
      }
      expect(await page.locator("#slots-busy").innerText()).toMatch(/^1,000 \//);
      // Still responsive: a click on another view answers.
      await page.click('a[href="#/users"]');
      await page.waitForSelector("#user-search");
      await context.close();
    },
    600_000,
  );
});
