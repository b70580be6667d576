import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { expect } from "vitest";
import { createClient } from "@gpupool/sdk";
import type { GpupoolClient } from "@gpupool/sdk";
import { startServerBinary, testStorage } from "./binary.js";
import { CHROMIUM, haveBrowser, inCi, launchBrowser } from "./browser.js";

export { CHROMIUM, haveBrowser, inCi, launchBrowser };
import type { ServerProcess } from "./binary.js";

/**
 * The dashboard's browser tests: the real server binary (serving the built dashboard at `/`),
 * Debian's chromium through playwright-core, users made through the SDK. Without chromium the
 * tests are skipped outside CI and fail under CI=true (.ci/run installs it).
 */
export const ADMIN = "dashboard-e2e-admin-token-abcdefghijklmnop";
export const SHOTS = fileURLToPath(new URL("../../docs/dashboard/", import.meta.url));

if (!haveBrowser && !inCi)
  console.warn(
    `warning: the dashboard browser tests did not run: no chromium at ${CHROMIUM}. Install it with \`apt-get install -y chromium\` (or set GPUPOOL_CHROMIUM).`,
  );

/** Fails (under CI) or tells why the test cannot run. */
export function requireBrowser(): void {
  if (!haveBrowser)
    expect.fail(`CI=true but there is no chromium at ${CHROMIUM}: the dashboard browser tests cannot run.`);
}

export interface DashWorld {
  readonly dir: string;
  readonly server: ServerProcess;
  readonly url: string;
  readonly admin: GpupoolClient;
  readonly browser: Browser;
  user(name: string, tier?: string): Promise<{ id: string; token: string; client: GpupoolClient }>;
  /** A browser context as a person sees the page: en-US numbers, a fixed time zone. */
  context(options?: { mobile?: boolean; dark?: boolean }): Promise<BrowserContext>;
  /** Signs in on the page with a token, as a person would, and waits for the first view. */
  signIn(page: Page, token: string): Promise<void>;
  stop(): Promise<void>;
}

export interface DashOptions {
  /** The pool's simulated nodes, as the YAML's flow list (default: one node, 2 GPUs × 2 slots). */
  readonly pool?: string;
  /** The overage price per GPU-minute (default "0.10"). */
  readonly price?: string;
  /**
   * dashboard.live_poll (default the server's, 1s). `LONG_POLL` makes the streams' own looks an
   * hour apart, so whatever a page shows within PUSHED_MS was pushed to it by a lease event.
   */
  readonly livePoll?: string;
}

/** A live_poll no test outlives. */
export const LONG_POLL = "1h";

export async function startDashWorld(
  extraConfig: readonly string[] = [],
  options: DashOptions = {},
): Promise<DashWorld> {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-dash-"));
  const config = join(dir, "gpupool.yaml");
  writeFileSync(
    config,
    [
      "storage:",
      `  url: "${testStorage(join(dir, "state.db"))}"`,
      "pool:",
      // Four slots: four large calls fill the pool and the fifth waits.
      `  simulated: ${options.pool ?? "[{ node: sim-0, gpus: 2, slots_per_gpu: 2 }]"}`,
      "billing:",
      "  currency: USD",
      "  overage:",
      "    enabled: true",
      "    tiers: [pro]",
      `    price_per_gpu_minute: "${options.price ?? "0.10"}"`,
      '    default_monthly_cap: "5.00"',
      ...extraConfig,
      ...(options.livePoll ? ["dashboard:", `  live_poll: ${options.livePoll}`] : []),
      "log:",
      "  level: warn",
    ].join("\n"),
  );
  const server = await startServerBinary(["--config", config], { GPUPOOL_ADMIN_TOKEN: ADMIN });
  const admin = createClient({ url: server.url, adminToken: ADMIN });
  const browser = await launchBrowser();
  return {
    dir,
    server,
    url: server.url,
    admin,
    browser,
    async user(name, tier = "pro") {
      const u = await admin.admin.createUser({ name, tier });
      return { id: u.id, token: u.token, client: createClient({ url: server.url, token: u.token }) };
    },
    context: (options = {}) => personContext(browser, options),
    signIn: (page, token) => signInAt(page, server.url, token),
    async stop() {
      await browser.close().catch(() => undefined);
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A browser context as a person sees the page: en-US numbers, a fixed time zone. */
export async function personContext(
  browser: Browser,
  options: { mobile?: boolean; dark?: boolean } = {},
): Promise<BrowserContext> {
  const ctx = await browser.newContext({
    locale: "en-US",
    timezoneId: "Europe/Berlin",
    colorScheme: options.dark ? "dark" : "light",
    acceptDownloads: true,
    ...(options.mobile
      ? { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true }
      : { viewport: { width: 1280, height: 900 } }),
  });
  // Under the test's own timeout, so a step that waits too long says which it was.
  ctx.setDefaultTimeout(20_000);
  return ctx;
}

/** Signs in on the page at `url` with a token, as a person would, and waits for the first view. */
export async function signInAt(page: Page, url: string, token: string): Promise<void> {
  await page.goto(url + "/");
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("#sign-out", { timeout: 30_000 });
}

const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/** axe-core's serious and critical violations on the page as it is now (WCAG 2.1 A/AA rules). */
export async function axeViolations(page: Page): Promise<string[]> {
  // Runtime.evaluate is not subject to the page's CSP (no inline script is allowed there).
  await page.evaluate(axeSource);
  const result: { id: string; impact: string | null; nodes: { target: string[] }[]; help: string }[] =
    await page.evaluate(async () => {
      const r = await (globalThis as any).axe.run(document, {
        runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] },
      });
      return r.violations.map((v: any) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        nodes: v.nodes.map((n: any) => ({ target: n.target })),
      }));
    });
  return result
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}

/**
 * Takes a full-page screenshot. With GPUPOOL_UPDATE_SCREENSHOTS=1 it replaces docs/dashboard/<name>.png
 * (the README shows them); otherwise it goes to a temporary directory, so that a test run does not
 * change the repository.
 */
export async function screenshot(page: Page, name: string): Promise<void> {
  const dir = process.env["GPUPOOL_UPDATE_SCREENSHOTS"] === "1" ? SHOTS : join(tmpdir(), "gpupool-dashboard-shots");
  mkdirSync(dir, { recursive: true });
  // Numbers that change (countdowns) may differ between runs; the layout is what matters.
  await page.screenshot({ path: join(dir, `${name}.png`), fullPage: true, animations: "disabled" });
}

/** The page's globals, for the functions page.evaluate runs there (the tests have no DOM types). */
declare const document: any;

/** `n` as the page writes GPU seconds in en-US: `1,499s`. */
export function secondsText(n: number): string {
  return new Intl.NumberFormat("en-US", {
    style: "unit",
    unit: "second",
    unitDisplay: "narrow",
    maximumFractionDigits: 1,
  }).format(n);
}

/** Polls `read` until `ok` holds (generous: a loaded 2-core machine). */
export async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, what: string, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  let last: T = await read();
  while (!ok(last)) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
    last = await read();
  }
  return last;
}

/**
 * How long a test waits for a change to show. The live target — on the page within a second — is a
 * latency, measured by `npm run bench -- dashboard`, not asserted here (a stalled test machine
 * would fail it); with the streams' own looks an hour apart (LONG_POLL), a change shown within
 * this was pushed, not looked for. Each wait's latency is logged.
 */
export const PUSHED_MS = 10_000;

/**
 * Waits until `shown(arg)` gives the page's Date.now() (it gives false until the change shows) and
 * returns how long after `since` (a Date.now() here, taken when the SDK call returned) the page saw
 * it, by the page's own clock (the same machine's). Fails when that is over `ms`; it then waits on
 * (up to 20 s) only to say how late it was.
 */
export async function shownWithin<A>(
  page: Page,
  shown: (arg: A) => number | false,
  arg: A,
  since: number,
  what: string,
  ms = PUSHED_MS,
): Promise<number> {
  const seen = async (timeout: number) => {
    const handle = await page.waitForFunction(shown as (a: unknown) => number | false, arg, {
      timeout,
      polling: "raf",
    });
    return ((await handle.jsonValue()) as number) - since;
  };
  let latency: number;
  try {
    latency = await seen(Math.max(1, ms - (Date.now() - since)));
  } catch {
    latency = await seen(20_000).catch(() => Infinity);
  }
  console.log(`dashboard: ${what}: ${latency} ms`);
  expect(latency, `${what}: within ${ms} ms`).toBeLessThanOrEqual(ms);
  return latency;
}
