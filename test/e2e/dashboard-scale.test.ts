import { afterAll, beforeAll, describe, it } from "vitest";
import type { Route } from "playwright-core";
import { ADMIN, haveBrowser, inCi, requireBrowser, startDashWorld } from "./dashboard-fixture.js";
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

describe("the operator's pool view at scale (1,000 active leases, 10,000 queued)", () => {
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
