import { createServer } from "node:http";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Page } from "playwright-core";
import {
  ADMIN,
  axeViolations,
  haveBrowser,
  inCi,
  requireBrowser,
  screenshot,
  LONG_POLL,
  shownWithin,
  startDashWorld,
  until,
} from "./dashboard-fixture.js";
import type { DashWorld } from "./dashboard-fixture.js";

/** The page's globals, for the functions page.evaluate runs there. */
declare const document: any;
declare const window: any;

const run = it.skipIf(!haveBrowser && !inCi);

async function adminGet(w: DashWorld, path: string): Promise<any> {
  const res = await fetch(w.url + path, { headers: { authorization: `Bearer ${ADMIN}` } });
  return res.json();
}

describe("the dashboard in a browser: the operator", () => {
  let w: DashWorld;
  let dave: Awaited<ReturnType<DashWorld["user"]>>;
  let admin: Page;

  beforeAll(async () => {
    if (!haveBrowser) return;
    // The streams' own looks an hour apart: what the pages show below was pushed to them.
    w = await startDashWorld([], { livePoll: LONG_POLL });
    dave = await w.user("dave", "free");
    const app = await w.admin.admin.createApp({ name: "upscaler", owner: "dave" });
    void app;
    admin = await (await w.context()).newPage();
    const started = Date.now();
    await w.signIn(admin, ADMIN);
    await admin.waitForSelector("#nodes .slot");
    console.log(`dashboard: sign-in to the operator's pool view drawn: ${Date.now() - started} ms`);
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });

  run(
    "a lease granted through the SDK is pushed to the pool view and the user's meter without a reload, and leaves them on its release",
    async () => {
      requireBrowser();
      const user = await (await w.context()).newPage();
      await w.signIn(user, dave.token);
      await user.waitForSelector("#quota-reserved");
      await admin.evaluate(() => (window.__notReloaded = true));
      // Three rounds, each change shown long before the streams' next look (an hour away).
      for (let round = 1; round <= 3; round++) {
        const lease = await dave.client.acquire({ duration: 50 });
        const granted = Date.now();
        // Both pages are watched from the moment the grant returns; each logs how soon it shows it.
        const slot = `#nodes .slot[data-lease="${lease.id}"]`;
        await Promise.all([
          shownWithin(
            admin,
            (sel) => (document.querySelector(sel) ? Date.now() : false),
            slot,
            granted,
            `grant ${round} → pool view`,
          ),
          shownWithin(
            user,
            () => (document.querySelector("#quota-reserved")?.textContent === "50s" ? Date.now() : false),
            null,
            granted,
            `grant ${round} → user's meter`,
          ),
        ]);
        expect(await admin.locator(slot).innerText()).toContain(`user:${dave.id}`);
        await dave.client.release(lease.id);
        const released = Date.now();
        await Promise.all([
          shownWithin(
            admin,
            (sel) => (document.querySelector(sel) ? false : Date.now()),
            slot,
            released,
            `release ${round} → pool view`,
          ),
          shownWithin(
            user,
            () => (document.querySelector("#quota-reserved")?.textContent === "0s" ? Date.now() : false),
            null,
            released,
            `release ${round} → user's meter`,
          ),
        ]);
      }
      expect(await admin.evaluate(() => window.__notReloaded)).toBe(true);
      await user.context().close();
    },
  );

  run("finds a user, sets the tier and overrides the quota: the API answers the change", async () => {
    requireBrowser();
    await admin.goto(`${w.url}/#/users`);
    await admin.fill("#user-search", "dav");
    await admin.click('button[data-user="dave"]');
    await admin.selectOption("#set-tier", "pro");
    await admin.click('form:has(#set-tier) button[type="submit"]');
    await until(
      () => adminGet(w, `/v1/admin/users/${dave.id}`),
      (u) => u.tier === "pro",
      "the tier to change",
    );
    await admin.fill("#set-quota", "900");
    await admin.click('form:has(#set-quota) button[type="submit"]');
    const u = await until(
      () => adminGet(w, `/v1/admin/users/${dave.id}`),
      (v) => v.quota_override === 900,
      "the quota override",
    );
    expect(u.quota.quota).toBe(900);
    await until(
      () => admin.locator("#user-quota").innerText(),
      (t) => t.startsWith("900s"),
      "the page to show the override",
    );
    // Both actions are in the audit log the page shows, newest first.
    const audit = await until(
      () => admin.locator("#audit-table tbody").innerText(),
      (t) => (t.match(/user\.update/g) ?? []).length >= 2,
      "the audit log to show both changes",
    );
    expect(audit).toContain(dave.id);
    expect(audit).toContain("900");
  });

  run(
    "sets an app's max concurrency on the apps page, and removes it: the API answers each change, audited",
    async () => {
      requireBrowser();
      const upscaler = async () => (await adminGet(w, "/v1/admin/apps")).apps.find((a: any) => a.name === "upscaler");
      const appId = (await upscaler()).id as string;
      await admin.goto(`${w.url}/#/apps`);
      const row = admin.locator('tr[data-app="upscaler"]');
      await row.locator(`#limit-${appId}`).fill("3");
      await row.locator('button[type="submit"]').click();
      await until(upscaler, (a) => a.max_concurrency === 3, "the limit to be set");
      await until(
        () => row.locator(".app-limit").innerText(),
        (t) => t.trim() === "3",
        "the page to show the limit",
      );
      await row.locator(`#limit-${appId}`).fill("");
      await row.locator('button[type="submit"]').click();
      await until(upscaler, (a) => a.max_concurrency === null, "the limit to be removed");
      const audit = await until(
        () => admin.goto(`${w.url}/#/users`).then(() => admin.locator("#audit-table tbody").innerText()),
        (t) => (t.match(/app\.update/g) ?? []).length >= 2,
        "the audit log to show both changes",
      );
      expect(audit).toContain(appId);
    },
  );

  run(
    "a cross-site form post and a cross-site JSON fetch with credentials are refused and change nothing; so is the page's own request without its CSRF token",
    async () => {
      requireBrowser();
      // What a forged request could change: the wallet (credits), the user, the audit log.
      const state = async () => {
        const wallet = await adminGet(w, `/v1/admin/users/${dave.id}/wallet`);
        const user = await adminGet(w, `/v1/admin/users/${dave.id}`);
        const audit = await adminGet(w, `/v1/admin/audit`);
        return {
          balance: wallet.balance_micros,
          grants: wallet.grants,
          tier: user.tier,
          quota: user.quota_override,
          audit,
        };
      };
      const before = await state();
      const target = `${w.url}/v1/admin/users/${dave.id}/credits`;
      const body = JSON.stringify({ amount: "100", category: "promotional", idempotency_key: "forged" });
      // A form whose text/plain body is JSON: the classic cross-site request forgery of a JSON API.
      const form = `<!doctype html><form method="POST" action="${target}" enctype="text/plain">
      <input name='{"amount":"100","category":"promotional","idempotency_key":"forged","x":"' value='"}'>
      <button id="go">go</button></form>`;
      const evil: Server = createServer((_req, res) => res.writeHead(200, { "content-type": "text/html" }).end(form));
      await new Promise<void>((r) => evil.listen(0, "127.0.0.1", r));
      const port = (evil.address() as AddressInfo).port;
      // What reached the server from the attacker's pages, and what it answered.
      const answers: string[] = [];
      try {
        // Another site (evil.test), and the same site on another port: both refused.
        for (const origin of [`http://evil.test:${port}`, `http://127.0.0.1:${port}`]) {
          const attacker = await admin.context().newPage();
          attacker.on("response", (r) => {
            if (r.url().startsWith(w.url)) answers.push(`${origin} ${r.request().method()} ${r.status()}`);
          });
          await attacker.goto(`${origin}/`);
          const [response] = await Promise.all([attacker.waitForNavigation(), attacker.click("#go")]);
          expect(response?.status(), origin).toBeGreaterThanOrEqual(400);
          expect(response?.status(), origin).toBeLessThan(500);
          expect(await state(), `${origin}: the form changed nothing`).toEqual(before);
          // The attacker page's own script: a JSON POST with the browser's cookies, and the same
          // as a no-cors "simple" request the browser sends without asking.
          await attacker.goto(`${origin}/`);
          const fetched = await attacker.evaluate(
            async ({ target, body }) => {
              const out: string[] = [];
              for (const init of [
                { mode: "cors", headers: { "content-type": "application/json" } },
                { mode: "no-cors", headers: { "content-type": "text/plain" } },
              ] as const)
                try {
                  const res = await fetch(target, { method: "POST", credentials: "include", body, ...init });
                  out.push(`${init.mode}: ${res.type} ${res.status}`);
                } catch (e) {
                  out.push(`${init.mode}: refused (${String(e)})`);
                }
              return out;
            },
            { target, body },
          );
          console.log(`dashboard CSRF: from ${origin}: ${fetched.join("; ")}`);
          // The JSON fetch is refused to the script (no CORS for another origin); the no-cors one is opaque.
          expect(fetched[0], origin).toMatch(/^cors: refused/);
          expect(fetched[1], origin).toMatch(/^no-cors: (opaque 0|refused)/);
          expect(await state(), `${origin}: the fetches changed nothing`).toEqual(before);
          await attacker.close();
        }
      } finally {
        evil.close();
      }
      console.log(`dashboard CSRF: the server answered the attacker's requests: ${answers.join(", ")}`);
      for (const a of answers) expect(a).not.toMatch(/ (2\d\d)$/);
      // The CSRF check itself, past the media type: the operator's own cookie and a JSON body, as
      // the attacker's origins would send it if a browser let them (no X-CSRF-Token).
      const cookie = (await admin.context().cookies()).find((c) => c.name.endsWith("gpupool_dashboard"))!;
      for (const [origin, site] of [
        [`http://evil.test:${port}`, "cross-site"],
        [`http://127.0.0.1:${port}`, "same-site"],
      ] as const) {
        const res = await fetch(target, {
          method: "POST",
          headers: {
            cookie: `${cookie.name}=${cookie.value}`,
            "content-type": "application/json",
            origin,
            "sec-fetch-site": site,
          },
          body,
        });
        expect(res.status, origin).toBe(403);
        expect(((await res.json()) as { code?: string }).code, origin).toBe("csrf_failed");
      }
      // Even with the session's CSRF token (which only the dashboard's page can read), another
      // origin is refused: the origin check, not only the token's.
      const session = { cookie: `${cookie.name}=${cookie.value}` };
      const csrf = ((await (await fetch(`${w.url}/v1/dashboard/session`, { headers: session })).json()) as any)
        .csrf_token as string;
      const withToken = (origin: string, key: string) =>
        fetch(target, {
          method: "POST",
          headers: { ...session, "content-type": "application/json", "x-csrf-token": csrf, origin },
          body: JSON.stringify({ amount: "0.01", category: "promotional", idempotency_key: key }),
        });
      for (const origin of [`http://evil.test:${port}`, `http://127.0.0.1:${port}`]) {
        const res = await withToken(origin, `forged-${origin}`);
        expect(res.status, origin).toBe(403);
        expect(((await res.json()) as { code?: string }).code, origin).toBe("csrf_failed");
      }
      expect(await state()).toEqual(before);
      // The dashboard's own origin, with the cookie but without the X-CSRF-Token header.
      const answer = await admin.evaluate(
        async ({ url, id }) => {
          const res = await fetch(`${url}/v1/admin/users/${id}/credits`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ amount: "100", category: "promotional", idempotency_key: "no-csrf" }),
          });
          return { status: res.status, body: (await res.json()) as { code?: string } };
        },
        { url: w.url, id: dave.id },
      );
      expect(answer.status).toBe(403);
      expect(answer.body.code).toBe("csrf_failed");
      expect(await state()).toEqual(before);
      // The control: the same request from the dashboard's own origin is taken (so the refusals above
      // were the origin's and the token's, not a malformed request's).
      expect((await withToken(w.url, "control")).status).toBe(201);
      expect((await state()).balance).toBe(before.balance + 10_000);
    },
  );

  for (const dark of [false, true])
    for (const mobile of [false, true]) {
      const variant = `${dark ? "dark" : "light"}-${mobile ? "mobile" : "desktop"}`;
      run(`pool, users and apps views (${variant}): no serious or critical axe violation`, async () => {
        requireBrowser();
        const context = await w.context({ dark, mobile });
        const page = await context.newPage();
        // Two calls in flight, so the slots show holders.
        const held = await Promise.all([30, 45].map((duration) => dave.client.acquire({ duration })));
        await w.signIn(page, ADMIN);
        await page.waitForSelector("#nodes .slot.busy");
        expect(await axeViolations(page)).toEqual([]);
        await screenshot(page, `operator-pool-${variant}`);
        for (const l of held) await dave.client.release(l.id);
        await page.goto(`${w.url}/#/users`);
        await page.click('button[data-user="dave"]');
        await page.waitForSelector("#user-tier");
        expect(await axeViolations(page)).toEqual([]);
        await screenshot(page, `operator-users-${variant}`);
        await page.goto(`${w.url}/#/apps`);
        await page.waitForSelector("#apps-table");
        expect(await axeViolations(page)).toEqual([]);
        await screenshot(page, `operator-apps-${variant}`);
        await context.close();
      });
    }

  run("sign-out revokes the session: the page and the API refuse the old cookie", async () => {
    requireBrowser();
    const context = await w.context();
    const page = await context.newPage();
    await w.signIn(page, dave.token);
    const cookie = (await context.cookies()).find((c) => c.name.endsWith("gpupool_dashboard"));
    expect(cookie).toBeDefined();
    await page.click("#sign-out");
    await page.waitForSelector("#token");
    const res = await fetch(`${w.url}/v1/me`, { headers: { cookie: `${cookie!.name}=${cookie!.value}` } });
    expect(res.status).toBe(401);
    await context.close();
  });
});
