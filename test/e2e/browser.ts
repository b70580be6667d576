import { existsSync } from "node:fs";
import { chromium } from "playwright-core";
import type { Browser } from "playwright-core";

/** Debian's chromium (.ci/run installs it; GPUPOOL_CHROMIUM names another). */
export const CHROMIUM = process.env["GPUPOOL_CHROMIUM"] ?? "/usr/bin/chromium";
export const haveBrowser = existsSync(CHROMIUM);
export const inCi = process.env["CI"] === "true";

/**
 * Chromium, headless, with a fresh throw-away profile (each newContext() is then a separate
 * "private window"); every `*.test` host name resolves to this machine, for cross-site pages.
 * `extraArgs`: a suite's own flags.
 */
export function launchBrowser(extraArgs: readonly string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--host-resolver-rules=MAP *.test 127.0.0.1",
      ...extraArgs,
    ],
  });
}
