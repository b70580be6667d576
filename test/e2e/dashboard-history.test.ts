import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@gpupool/sdk";
import { haveBrowser, inCi, requireBrowser, startDashWorld } from "./dashboard-fixture.js";
import type { DashWorld } from "./dashboard-fixture.js";

/** The page's globals, for the functions page.evaluate runs there. */
declare const document: any;

const run = it.skipIf(!haveBrowser && !inCi);

describe("the dashboard in a browser: a user's call history", () => {
  let w: DashWorld;
  beforeAll(async () => {
    if (!haveBrowser) return;
    w = await startDashWorld();
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });

  run(
    "newest first a page at a time, what each call cost and which bucket paid, and the name of an app the user only called",
    async () => {
      requireBrowser();
      await w.user("dave");
      const dora = await w.user("dora");
      // dave's app, which dora only calls: the page names it, though dora owns no app.
      const app = await w.admin.admin.createApp({ name: "upscaler", owner: "dave" });
      const { token } = await w.admin.ipToken({ app: app.id, user: "dora" });
      const upscaler = createClient({ url: w.url, appKey: app.key });
      const viaApp = await upscaler.acquire({ duration: 10, ipToken: token });
      await upscaler.release(viaApp.id);
      for (let i = 0; i < 21; i++) {
        const l = await dora.client.acquire({ duration: 5 });
        await dora.client.release(l.id);
      }
      const res = await fetch(`${w.url}/v1/usage?order=desc&limit=100`, {
        headers: { authorization: `Bearer ${dora.token}` },
      });
      const records = ((await res.json()) as { records: any[] }).records;
      expect(records).toHaveLength(22);
      expect(records[21].id).toBe(viaApp.id);

      const page = await (await w.context()).newPage();
      await w.signIn(page, dora.token);
      const rows = page.locator("#calls-table tbody tr");
      await page.waitForSelector(`#calls-table tbody tr[data-call="${records[0].id}"]`);
      // The newest 20, in the server's order; the count is every call of the range.
      expect(await rows.evaluateAll((trs) => trs.map((tr: any) => tr.dataset.call))).toEqual(
        records.slice(0, 20).map((r) => r.id),
      );
      await page.waitForFunction(() => document.querySelector("#calls-count")?.textContent === "22 calls");
      const newest = page.locator(`#calls-table tr[data-call="${records[0].id}"]`);
      expect(await newest.locator(".call-cost").innerText()).toBe(records[0].cost.display.amount);
      expect(await newest.locator(".call-paid").innerText()).toBe(
        records[0].cost.paid_by === "nothing" ? "nothing" : "quota",
      );
      expect(await newest.locator(".call-app").innerText()).toBe("own script");

      // The next page reads on from the last row (order=desc with the cursor): the oldest two.
      await page.click('nav[aria-label="Calls pages"] button:has-text("Next")');
      const oldest = page.locator(`#calls-table tr[data-call="${viaApp.id}"]`);
      await oldest.waitFor();
      expect(await rows.evaluateAll((trs) => trs.map((tr: any) => tr.dataset.call))).toEqual(
        records.slice(20).map((r) => r.id),
      );
      expect(await oldest.locator(".call-app").innerText()).toBe("upscaler");
      await page.click('nav[aria-label="Calls pages"] button:has-text("Previous")');
      await page.waitForSelector(`#calls-table tbody tr[data-call="${records[0].id}"]`);
      await page.context().close();
    },
    120_000,
  );
});
