import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHROMIUM, haveBrowser, inCi, launchBrowser } from "./browser.js";
import type { EdgeWorld } from "./edge-fixture.js";
import { startEdgeWorld } from "./edge-fixture.js";

/**
 * A real browser (Debian's chromium) signs in through the edge's /login page and sees itself
 * charged as the user; a private window sees its IP. CI installs chromium (.ci/run); elsewhere,
 * without it, this test is skipped and says so — under CI=true a missing browser is a failure.
 */

// The page's globals, for the functions page.evaluate runs there (the tests have no DOM types).
declare const document: any;
declare const location: any;

if (!haveBrowser && !inCi) {
  console.warn(
    `warning: the edge browser test did not run: no chromium at ${CHROMIUM}. Install it with \`apt-get install -y chromium\` (or set GPUPOOL_CHROMIUM) to run it.`,
  );
}

describe("the edge in a browser", () => {
  let w: EdgeWorld;
  let browser: Browser;
  beforeAll(async () => {
    if (!haveBrowser) return;
    w = await startEdgeWorld();
    // *.test names resolve to this machine: the sign-in host edge.test, apps at <name>.apps.test;
    // each newContext() is a separate "private window".
    browser = await launchBrowser(["--disable-quic", "--disable-features=HttpsUpgrades"]);
  }, 90_000);
  afterAll(async () => {
    await browser?.close();
    await w?.stop();
  });

  const whoami = async (context: BrowserContext): Promise<{ sub: string; pool: { kind: string; id: string } }> => {
    const page = await context.newPage();
    const response = await page.goto(`${w.edge.url}/apps/front/whoami`);
    expect(response?.headers()["x-gpupool-charged-as"]).toBeTruthy();
    const text = await page.locator("body").innerText();
    await page.close();
    return JSON.parse(text) as { sub: string; pool: { kind: string; id: string } };
  };

  // Skipped only outside CI; under CI=true a missing browser fails here instead.
  it.skipIf(!haveBrowser && !inCi)(
    "signs in at /login, opens the app through the edge as the user; a private window is its IP",
    async () => {
      if (!haveBrowser)
        expect.fail(
          `CI=true but there is no chromium at ${CHROMIUM}: the edge browser test cannot run. .ci/run installs it with \`apt-get install -y chromium\`.`,
        );
      const signedIn = await browser.newContext();
      const page = await signedIn.newPage();
      await page.goto(`${w.edge.url}/login?next=/apps/front/whoami`);
      await page.fill("#name", "alice");
      await page.fill("#token", w.alice.token);
      await Promise.all([page.waitForURL(/\/apps\/front\/whoami$/), page.click("button[type=submit]")]);
      expect(JSON.parse(await page.locator("body").innerText())).toMatchObject({
        sub: `user:${w.alice.id}`,
        pool: { kind: "user", id: w.alice.id },
      });
      const cookies = await signedIn.cookies();
      expect(cookies.find((c) => c.name === "gpupool_session")).toMatchObject({
        httpOnly: true,
        sameSite: "Lax",
        secure: false,
      });
      // Page scripts cannot read the session cookie.
      expect(await page.evaluate("document.cookie")).not.toContain("gpupool_session");
      expect(await whoami(signedIn)).toMatchObject({ sub: `user:${w.alice.id}` });

      const privateWindow = await browser.newContext();
      expect(await whoami(privateWindow)).toMatchObject({ sub: "ip:127.0.0.1", pool: { kind: "ip", id: "127.0.0.1" } });
      await privateWindow.close();

      // Signing out from the login page: the same window is then its IP again.
      await page.goto(`${w.edge.url}/login`);
      expect(await page.locator("#who").innerText()).toContain("alice");
      await Promise.all([page.waitForURL(/\/login$/), page.click("form[action='/logout'] button")]);
      expect(await whoami(signedIn)).toMatchObject({ sub: "ip:127.0.0.1" });
      await signedIn.close();
    },
  );

  /** What a page can learn and do from an app's page, as the app's own script would. */
  const attackFromAppPage = (page: Page, signInHost: string) =>
    page.evaluate(async (edge) => {
      const readable = document.cookie;
      // Plant session cookies: host-only, for the parent domain, and over the edge's own name.
      for (const c of [
        "gpupool_session=gps_planted_by_script; path=/",
        "gpupool_session=gps_planted_by_script; path=/; domain=apps.test",
        "gpupool_app=planted_by_script; path=/",
        "__Host-gpupool_session=gps_x; path=/; secure",
      ])
        document.cookie = c;
      // Read the sign-in page (its sign-out token) with the viewer's cookies.
      const loginPage = await fetch(`${edge}/login`, { credentials: "include" })
        .then((r) => r.text())
        .catch(() => "blocked");
      // Sign the viewer out: a fetch with cookies, and a form posted into a frame.
      await fetch(`${edge}/logout`, {
        method: "POST",
        mode: "no-cors",
        credentials: "include",
        body: new URLSearchParams({ csrf: "guess" }),
      }).catch(() => undefined);
      const frame = document.createElement("iframe");
      frame.name = "sink";
      document.body.append(frame);
      const form = document.createElement("form");
      form.method = "post";
      form.action = `${edge}/logout`;
      form.target = "sink";
      document.body.append(form);
      const sent = new Promise((resolve) => frame.addEventListener("load", resolve, { once: true }));
      form.submit();
      await Promise.race([sent, new Promise((resolve) => setTimeout(resolve, 3000))]);
      return { readable, loginPage };
    }, signInHost);

  it.skipIf(!haveBrowser && !inCi)(
    "apps on their own hosts (--app-domain): an app page cannot read or set the session, nor sign the viewer out",
    async () => {
      if (!haveBrowser) expect.fail(`CI=true but there is no chromium at ${CHROMIUM}.`);
      const edge = await w.startEdge((port) => [
        "--app",
        `front=${w.upstreams.front}`,
        "--app",
        `back=${w.upstreams.back}`,
        "--app-domain",
        "apps.test",
        "--public-url",
        `http://edge.test:${port}`,
      ]);
      const signInHost = `http://edge.test:${edge.port}`;
      const front = `http://front.apps.test:${edge.port}`;
      const context = await browser.newContext();
      const page = await context.newPage();
      // In a tab of its own: the main page may still be following a redirect (the /logout an app tried).
      const whoami = async (origin: string) => {
        const tab = await context.newPage();
        try {
          await tab.goto(`${origin}/whoami`);
          return JSON.parse(await tab.locator("body").innerText()) as { sub: string; cookie: string | null };
        } finally {
          await tab.close();
        }
      };

      // Not signed in: the app host asks the sign-in host, which says so; charged as the IP.
      expect((await whoami(front)).sub).toBe("ip:127.0.0.1");
      // Signing in from the app: the form is on the sign-in host, and the browser comes back signed in.
      await page.goto(`${front}/.gpupool/login?next=/whoami`);
      expect(page.url()).toMatch(new RegExp(`^${signInHost}/login\\?`));
      await page.fill("#token", w.alice.token);
      await Promise.all([page.waitForURL(`${front}/whoami`), page.click("form[action='/login'] button")]);
      expect(JSON.parse(await page.locator("body").innerText())).toMatchObject({ sub: `user:${w.alice.id}` });
      // Another app's host signs in by itself, from the same sign-in.
      expect((await whoami(`http://back.apps.test:${edge.port}`)).sub).toBe(`user:${w.alice.id}`);

      const cookies = async () => (await context.cookies()).filter((c) => c.name.includes("gpupool"));
      const before = await cookies();
      const session = before.find((c) => c.name === "gpupool_session" && c.domain === "edge.test");
      expect(session).toMatchObject({ httpOnly: true, sameSite: "Lax", path: "/" });
      expect(before.find((c) => c.name === "gpupool_app" && c.domain === "front.apps.test")).toMatchObject({
        httpOnly: true,
      });

      // The hostile app's page: its server sends Set-Cookie for the edge's names and
      // Clear-Site-Data; its script reads, plants and posts.
      await page.goto(`${front}/attack`);
      const seen = await attackFromAppPage(page, signInHost);
      expect(seen.readable).not.toContain("gpupool");
      expect(seen.loginPage).toBe("blocked");
      // A top-level GET to the sign-out address carries the Lax cookie: it must change nothing.
      await Promise.all([
        page.waitForEvent("framenavigated"),
        page.evaluate((to) => void (location.href = to), `${signInHost}/logout`),
      ]);

      // The session on the sign-in host is the same cookie, still signed in there and on the app.
      const after = await cookies();
      expect(after.filter((c) => c.domain === "edge.test")).toEqual([session]);
      expect(after.find((c) => c.name === "gpupool_app" && c.domain === "front.apps.test")?.value).toBe(
        before.find((c) => c.name === "gpupool_app" && c.domain === "front.apps.test")?.value,
      );
      const echo = await whoami(front);
      expect(echo.sub).toBe(`user:${w.alice.id}`);
      expect(echo.cookie ?? "").not.toContain("gpupool");
      await page.goto(`${signInHost}/login`);
      expect(await page.locator("#who").innerText()).toContain("alice");

      // Signing out on the sign-in host reaches the app's host too.
      await Promise.all([page.waitForURL(`${signInHost}/login`), page.click("form[action='/logout'] button")]);
      expect((await whoami(front)).sub).toBe("ip:127.0.0.1");
      await context.close();
    },
  );

  // One origin cannot keep an app's script from the sign-out form (it can read it); that is why
  // path routing is for trusted apps. What the edge still prevents is shown here.
  it.skipIf(!haveBrowser && !inCi)(
    "apps under /apps/ (one origin): an app's response cannot plant or wipe the session cookie, nor a link sign the viewer out",
    async () => {
      if (!haveBrowser) expect.fail(`CI=true but there is no chromium at ${CHROMIUM}.`);
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(`${w.edge.url}/login?next=/apps/front/whoami`);
      await page.fill("#token", w.alice.token);
      await Promise.all([page.waitForURL(/\/apps\/front\/whoami$/), page.click("form[action='/login'] button")]);
      const session = (await context.cookies()).find((c) => c.name === "gpupool_session");
      expect(session?.value).toMatch(/^gps_/);
      // Set-Cookie: gpupool_session=…, Clear-Site-Data: "cookies" — from the app's server.
      const r = await page.goto(`${w.edge.url}/apps/front/attack`);
      expect(r?.status()).toBe(200);
      expect((await context.cookies()).filter((c) => c.name.includes("gpupool"))).toEqual([session]);
      expect((await context.cookies()).find((c) => c.name === "app_own")?.value).toBe("kept");
      // The page's script asks for the sign-out address the ways a link or an image would.
      await page.evaluate(() => fetch("/logout", { credentials: "include" }).then((x) => x.text()));
      await Promise.all([page.waitForEvent("framenavigated"), page.evaluate(() => void (location.href = "/logout"))]);
      await page.goto(`${w.edge.url}/apps/front/whoami`);
      expect(JSON.parse(await page.locator("body").innerText())).toMatchObject({ sub: `user:${w.alice.id}` });
      await context.close();
    },
  );
});
