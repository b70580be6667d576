import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Lease } from "@gpupool/sdk";
import type { Page } from "playwright-core";
import { ADMIN, axeViolations, haveBrowser, inCi, requireBrowser, startDashWorld, until } from "./dashboard-fixture.js";
import type { DashWorld } from "./dashboard-fixture.js";

/**
 * The end user's page in the states the other browser tests do not reach: a window not started, a
 * grant's expiry, the month's overage spend against the cap, a queued call's expected wait, a call
 * that timed out in the queue — and axe scans of the states that add content.
 */

const run = it.skipIf(!haveBrowser && !inCi);

async function api(w: DashWorld, token: string, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(w.url + path, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

const text = (page: Page, selector: string) => page.locator(selector).innerText();

/** As the page writes a date and time (en-US, Europe/Berlin: the contexts' locale and zone). */
const when = (iso: string) =>
  new Intl.DateTimeFormat("en-US", { dateStyle: "medium", timeStyle: "short", timeZone: "Europe/Berlin" }).format(
    new Date(iso),
  );
/** As the page writes an amount the server sent no display string for. */
const usd = (micros: number) =>
  new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 2 }).format(micros / 1e6);

/** axe in light and dark on the page as it is now. */
async function axeBoth(page: Page, what: string): Promise<void> {
  for (const colorScheme of ["light", "dark"] as const) {
    await page.emulateMedia({ colorScheme });
    expect(await axeViolations(page), `${what} (${colorScheme})`).toEqual([]);
  }
  await page.emulateMedia({ colorScheme: "light" });
}

describe("the dashboard in a browser: states an end user meets", () => {
  let w: DashWorld;

  beforeAll(async () => {
    if (!haveBrowser) return;
    // The free tier waits at most 2 s in line, and calls are queued whatever their expected wait:
    // a free call behind a full pool times out (a refusal recorded in the user's history).
    // Overage at $60 a GPU-minute ($1 a second), so that a second or two of it shows in cents.
    w = await startDashWorld(["queue:", "  timeout: { default: 60s, free: 2s }", "  predicted_wait: false"], {
      price: "60.00",
    });
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });

  run("a user who never made a call sees 'window not started', then a countdown after the first call", async () => {
    requireBrowser();
    const frank = await w.user("frank", "pro");
    expect((await api(w, frank.token, "GET", "/v1/me")).body.quota.resets_at).toBeNull();
    const page = await (await w.context()).newPage();
    await w.signIn(page, frank.token);
    expect(await text(page, "#reset-countdown")).toBe("Window not started");
    expect(await text(page, "#reset")).toMatch(/starts at your first call/);
    expect(await page.locator("#reset [role=timer]").count()).toBe(0);
    const l = await frank.client.acquire({ duration: 10 });
    await frank.client.release(l.id);
    await page.waitForSelector("#reset [role=timer]");
    expect(await text(page, "#reset-countdown")).toMatch(/^\d+:\d\d:\d\d$|^\d+:\d\d$/);
    await page.context().close();
  });

  run("credits by grant: each grant's expiry (or 'never') as GET /v1/me/wallet says", async () => {
    requireBrowser();
    const gina = await w.user("gina", "pro");
    const expires = new Date(Date.now() + 10 * 86_400_000);
    await w.admin.admin.grantCredits(gina.id, {
      amount: "2.00",
      category: "promotional",
      source: "expiring gift",
      expiresAt: expires,
      idempotencyKey: "gina-expiring",
    });
    await w.admin.admin.grantCredits(gina.id, {
      amount: "1.00",
      category: "purchased",
      source: "kept forever",
      idempotencyKey: "gina-forever",
    });
    const wallet = (await api(w, gina.token, "GET", "/v1/me/wallet")).body;
    const expiring = wallet.grants.find((g: any) => g.source === "expiring gift");
    expect(expiring.expires_at).not.toBeNull();
    const page = await (await w.context()).newPage();
    await w.signIn(page, gina.token);
    const row = (source: string) => page.locator("#grants tbody tr", { hasText: source }).innerText();
    await page.waitForSelector("#grants");
    expect(await row("expiring gift")).toContain(when(expiring.expires_at));
    expect(await row("kept forever")).toContain("never");
    await page.context().close();
  });

  run("the month's overage spend and the cap bar show what GET /v1/me says", async () => {
    requireBrowser();
    const hana = await w.user("hana", "pro");
    // No quota: every second is overage, paid from credits, under a $5 cap.
    await w.admin.admin.updateUser(hana.id, { quota: 0 });
    await w.admin.admin.grantCredits(hana.id, { amount: "20.00", category: "purchased", idempotencyKey: "hana" });
    expect((await api(w, hana.token, "PATCH", "/v1/me/billing", { overage: true, monthly_cap: "5.00" })).status).toBe(
      200,
    );
    // A 4 s call holds $4 (under the cap and the credits); released after ~1.5 s, that is what it costs.
    const l = await hana.client.acquire({ duration: 4 });
    await new Promise((r) => setTimeout(r, 1_500));
    await hana.client.release(l.id);
    const me = (await api(w, hana.token, "GET", "/v1/me")).body;
    const o = me.overage;
    expect(o.spent_micros).toBeGreaterThan(0);
    expect(o.held_micros).toBe(0);
    const spent = o.display?.spent ?? usd(o.spent_micros);
    const cap = o.display?.monthly_cap ?? usd(o.monthly_cap_micros);
    expect(cap).toBe("$5.00");
    const page = await (await w.context()).newPage();
    await w.signIn(page, hana.token);
    await until(
      () => text(page, "#overage-spent"),
      (t) => t === spent,
      "the month's spend",
    );
    expect(await text(page, "#overage-cap")).toBe(cap);
    const bar = page.locator("#overage .bar[role=img]");
    expect(await bar.getAttribute("aria-label")).toBe(`Spent and held ${spent} of a cap of ${cap}`);
    // The spent segment is spent/cap of the bar's width.
    const widths = await bar.evaluate((el: any) => ({
      bar: el.getBoundingClientRect().width,
      used: el.querySelector(".seg.used").getBoundingClientRect().width,
    }));
    expect(widths.used / widths.bar).toBeCloseTo(o.spent_micros / o.monthly_cap_micros, 2);
    await page.context().close();
  });

  run(
    "a queued call shows its expected wait; a call that timed out in line is listed as refused; axe finds nothing in either, nor in the expanded 'why'",
    async () => {
      requireBrowser();
      const holder = await w.user("holder", "pro");
      const ivan = await w.user("ivan", "pro");
      const jack = await w.user("jack", "free");
      // Four 60 s calls fill the pool's four slots.
      const held: Lease[] = await Promise.all([1, 2, 3, 4].map(() => holder.client.acquire({ duration: 60 })));
      try {
        const queued = await api(w, ivan.token, "POST", "/v1/leases", { duration: 20 });
        expect(queued.status).toBe(202);
        const page = await (await w.context()).newPage();
        await w.signIn(page, ivan.token);
        const item = page.locator(`#queued-list li[data-lease="${queued.body.id}"]`);
        await item.waitFor();
        // "about 58s (at most 60s)": an expected wait the API gave between the call's admission and
        // now (not "within 3 s of now": a stall of the machine in between made that fail).
        const shown = await until(
          () => item.innerText(),
          (t) => /about [\d,.]+s/.test(t),
          "the expected wait",
        );
        const now = (await api(w, ivan.token, "GET", `/v1/leases/${queued.body.id}`)).body;
        const eta = Number(/about ([\d,.]+)s/.exec(shown)![1]!.replace(/,/g, ""));
        expect(now.eta_s).not.toBeNull();
        // ±1: whole seconds, rounded on the page.
        expect(eta).toBeGreaterThanOrEqual(now.eta_s - 1);
        expect(eta).toBeLessThanOrEqual(queued.body.eta_s + 1);
        expect(eta).toBeGreaterThan(0);
        expect(eta).toBeLessThanOrEqual(60);
        if (now.eta_max_s !== null && now.eta_max_s !== undefined) expect(shown).toMatch(/\(at most [\d,.]+s\)/);
        await axeBoth(page, "a queued call");
        await page.context().close();
        expect((await api(w, ivan.token, "DELETE", `/v1/leases/${queued.body.id}`)).status).toBeLessThan(300);

        // jack (free: 2 s in line at most) is queued behind the full pool and times out.
        const late = await api(w, jack.token, "POST", "/v1/leases", { duration: 20 });
        expect(late.status).toBe(202);
        const failed = await until(
          async () => (await api(w, jack.token, "GET", `/v1/leases/${late.body.id}`)).body,
          (l) => l.status === "failed",
          "the queued call to time out",
        );
        const code = failed.problem.code;
        expect(code).toBe("queue_timeout");
        const records = (await api(w, jack.token, "GET", "/v1/usage")).body;
        expect(records.records.some((r: any) => r.id === late.body.id && r.problem === code)).toBe(true);
        // Now jack's quota does not allow the next call either: the page explains both.
        await w.admin.admin.updateUser(jack.id, { quota: 10 });
        const p = await (await w.context()).newPage();
        await w.signIn(p, jack.token);
        const last = await until(
          () => text(p, "#last-refusal"),
          (t) => t.includes("Last refused call"),
          "the last refusal",
        );
        expect(last).toContain(code);
        expect(last).toContain("Nothing was charged for it.");
        await p.waitForSelector("#next-refusal");
        await axeBoth(p, "a refusal");
        await p.click("#why-details summary");
        await p.waitForSelector("#why-details[open] #verdict");
        expect(await text(p, "#verdict")).toMatch(/refused/);
        await axeBoth(p, "the expanded why");
        await p.context().close();
      } finally {
        for (const l of held) await holder.client.release(l.id);
      }
    },
  );

  run("the operator's audit table (after a grant and a change): no serious or critical axe violation", async () => {
    requireBrowser();
    const kim = await w.user("kim", "pro");
    await w.admin.admin.updateUser(kim.id, { quota: 600 });
    await w.admin.admin.grantCredits(kim.id, { amount: "1.00", category: "promotional", idempotencyKey: "kim" });
    const page = await (await w.context()).newPage();
    await w.signIn(page, ADMIN);
    await page.goto(`${w.url}/#/users`);
    await page.fill("#user-search", "kim");
    await page.click('button[data-user="kim"]');
    await until(
      () => page.locator("#audit-table tbody tr").count(),
      (n) => n >= 2,
      "the audit table's rows",
    );
    await axeBoth(page, "the audit table");
    await page.context().close();
  });
});
