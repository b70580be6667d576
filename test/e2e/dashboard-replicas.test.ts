import { afterAll, describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { createClient } from "@gpupool/sdk";
import { freshPostgresUrl, postgresUrl } from "../pg/postgres-url.js";
import {
  ADMIN,
  haveBrowser,
  inCi,
  LONG_POLL,
  launchBrowser,
  personContext,
  requireBrowser,
  shownWithin,
  signInAt,
} from "./dashboard-fixture.js";
import { Replicas, leaderOf, until } from "./replica-fixture.js";

/**
 * The dashboard served by a replica that does not lead (two replicas on one PostgreSQL schema):
 * the operator's pool view and a user's meter follow a grant and a release made through the
 * leader, pushed to them (each logs how soon after the SDK call returned).
 */

/** The page's globals, for the functions page.evaluate runs there. */
declare const document: any;
declare const window: any;

const run = it.skipIf(!haveBrowser && !inCi);
const replicas = new Replicas(ADMIN);
let browser: Browser | undefined;
afterAll(async () => {
  await browser?.close().catch(() => undefined);
  await replicas.stopAll();
});

describe.skipIf(!postgresUrl())("the dashboard on a replica that does not lead (PostgreSQL)", () => {
  run(
    "the pool view and the user's meter on the follower are pushed a grant and a release made on the leader",
    async () => {
      requireBrowser();
      const servers = await replicas.start(2, [
        "storage:",
        `  url: "${freshPostgresUrl("dashreplicas")}"`,
        "pool:",
        "  simulated: [{ node: sim-0, gpus: 2, slots_per_gpu: 1 }]",
        // The streams' own looks an hour apart: what the follower's pages show was pushed to them.
        "dashboard:",
        `  live_poll: ${LONG_POLL}`,
        "log:",
        "  level: warn",
      ]);
      const leader = await until(() => leaderOf(servers), 30_000);
      const follower = servers.find((s) => s !== leader)!;
      expect(((await (await fetch(`${follower.url}/readyz`)).json()) as { leader?: boolean }).leader).toBe(false);
      const admin = createClient({ url: leader.url, adminToken: ADMIN });
      const u = await admin.admin.createUser({ name: "fiona", tier: "pro" });
      const fiona = createClient({ url: leader.url, token: u.token });

      browser = await launchBrowser();
      const pool = await (await personContext(browser)).newPage();
      await signInAt(pool, follower.url, ADMIN);
      await pool.waitForSelector("#nodes .slot");
      const meter = await (await personContext(browser)).newPage();
      await signInAt(meter, follower.url, u.token);
      await meter.waitForSelector("#quota-reserved");
      for (const p of [pool, meter]) await p.evaluate(() => (window.__notReloaded = true));

      const lease = await fiona.acquire({ duration: 40 });
      const granted = Date.now();
      const slot = `#nodes .slot[data-lease="${lease.id}"]`;
      const reserved = (want: string) =>
        document.querySelector("#quota-reserved")?.textContent === want ? Date.now() : false;
      await Promise.all([
        shownWithin(
          pool,
          (sel) => (document.querySelector(sel) ? Date.now() : false),
          slot,
          granted,
          "follower: grant on the leader → pool view",
        ),
        shownWithin(meter, reserved, "40s", granted, "follower: grant on the leader → user's meter"),
      ]);
      expect(await pool.locator(slot).innerText()).toContain(`user:${u.id}`);
      await fiona.release(lease.id);
      const released = Date.now();
      await Promise.all([
        shownWithin(
          pool,
          (sel) => (document.querySelector(sel) ? false : Date.now()),
          slot,
          released,
          "follower: release on the leader → pool view",
        ),
        shownWithin(meter, reserved, "0s", released, "follower: release on the leader → user's meter"),
      ]);
      for (const p of [pool, meter]) expect(await p.evaluate(() => window.__notReloaded)).toBe(true);
      // The page really was the follower's all along.
      expect(new URL(pool.url()).origin).toBe(follower.url);
      expect(((await (await fetch(`${follower.url}/readyz`)).json()) as { leader?: boolean }).leader).toBe(false);
    },
    180_000,
  );
});
