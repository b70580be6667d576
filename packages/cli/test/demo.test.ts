import { spawn } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@gpupool/sdk";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { start, tempDir } from "./helpers.js";

let tmp: { dir: string; remove(): void };
beforeAll(() => {
  tmp = tempDir();
});
afterAll(() => {
  tmp.remove();
});

const REPO = fileURLToPath(new URL("../../../", import.meta.url));

/**
 * Runs the printed tour's steps 1–3 (or step 1 and step 10) as a person pasting them into bash
 * would (from the repository, so `npx gpupool` is this build), and returns what they print.
 */
function pasteTourSteps(stdout: string, credits = false): Promise<string> {
  const first = /^# 1\. [\s\S]*?(?=^# 2\. )/m.exec(stdout)?.[0];
  const rest = (credits ? /^# 10\. [\s\S]*?(?=^Press Ctrl-C)/m : /^# 2\. [\s\S]*?(?=^# 4\. )/m).exec(stdout)?.[0];
  if (first === undefined || rest === undefined) throw new Error(`no steps to paste in:\n${stdout}`);
  const script = first + rest;
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith("GPUPOOL_")) env[key] = value;
  return new Promise((resolve, reject) => {
    const bash = spawn("bash", ["-c", script], { cwd: REPO, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    bash.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    bash.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
    bash.on("error", reject);
    bash.on("close", () => resolve(out));
  });
}

/** What steps 2 and 3 of the tour show when they work: a grant and its release, then three grants and a 429. */
function expectTourWorked(printed: string, bob: string): void {
  expect(printed).toMatch(
    new RegExp(`^HTTP 201\\n\\{"id":"ls_[^"]+","status":"active".*"identity":\\{"kind":"user","id":"${bob}"`, "m"),
  );
  expect(printed).toMatch(/\{"id":"ls_[^"]+","status":"released","held_ms":\d+,"charged":1,"refunded":59/);
  expect(printed).not.toContain("undefined");
  expect(printed).toMatch(
    /call 1: HTTP 201\ncall 2: HTTP 201\ncall 3: HTTP 201\ncall 4: HTTP 429\n\{.*"code":"quota_exceeded"/,
  );
}

function values(stdout: string) {
  const get = (re: RegExp) => {
    const m = re.exec(stdout);
    if (m === null || m[1] === undefined) throw new Error(`no ${re} in:\n${stdout}`);
    return m[1];
  };
  return {
    poolUrl: get(/^export GPUPOOL_URL=(\S+)/m),
    adminToken: get(/GPUPOOL_ADMIN_TOKEN=(\S+)/),
    appKey: get(/APP_KEY=(gpu_a_\S+)/),
    appUrl: get(/^ {2}demo app {7}(http:\/\/\S+)/m),
    edgeUrl: get(/^ {2}edge {11}(http:\/\/\S+)/m),
    agentUrl: get(/^ {2}agent {10}(http:\/\/\S+)/m),
  };
}

describe("gpupool demo", () => {
  it("starts a pool, users, an app, the edge and a demo app, prints a tour, and reuses them after a restart", async () => {
    const dir = join(tmp.dir, "demo");
    const first = start(["demo", "--port", "0", "--dir", dir]);
    let v: ReturnType<typeof values>;
    try {
      await first.waitFor(/^Press Ctrl-C to stop/m, 60_000);
      const out = first.stdout();
      v = values(out);
      expect(out).toMatch(/user ada {7}u_\S+, tier pro, name "ada": created now/);
      expect(out).toMatch(/user bob {7}u_\S+, tier free, name "bob": created now/);
      // The tour works as printed: bob is granted a GPU, then uses up his quota. Its scratch files
      // are kept in the demo's directory, not in /tmp.
      const bob = /user bob {7}(u_\S+),/.exec(out)?.[1] ?? "";
      expectTourWorked(await pasteTourSteps(out), bob);
      // Step 10, cleo's credits: a call split between quota and overage, a call past her cap, the
      // release — pasted twice, as a person trying it again would (each time it works as printed).
      for (let paste = 0; paste < 2; paste++) {
        const credits = await pasteTourSteps(out, true);
        expect(credits).toMatch(/^HTTP 201\n\{"quota_s":\d+,"overage_s":\d+,"hold_micros":\d+/m);
        expect(credits).toContain('"code":"spend_cap_reached"');
        expect(credits).toMatch(/\{"id":"ls_[^"]+","status":"released"/);
        expect(credits).not.toContain("undefined");
      }
      expect(out).not.toMatch(/\/tmp\/gpupool-(lease|grant)/);
      expect(out).toContain(`-o ${join(dir, "lease.json")}`);
      expect(existsSync(join(dir, "lease.json"))).toBe(true);
      expect(out).toMatch(/name "sdxl-demo", owned by ada: created now/);
      // The dashboard's one-time sign-in links, for each demo user and the operator: ada's signs her in.
      for (const who of ["ada", "bob", "cleo", "operator"])
        expect(out).toMatch(new RegExp(`^  ${who} .*/#signin=gpc_`, "m"));
      const adaLink = /^ {2}ada .*#signin=(gpc_\S+)$/m.exec(out)?.[1] ?? "";
      const dashboard = await fetch(`${v.poolUrl}/v1/dashboard/session`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ code: adaLink }),
      });
      expect(dashboard.status).toBe(201);
      expect(((await dashboard.json()) as { user: { name: string } }).user.name).toBe("ada");
      for (const step of [
        "npx gpupool quota",
        "npx gpupool diagnose",
        "npx gpupool leases",
        "/v1/leases",
        "/release",
        "429",
      ])
        expect(out).toContain(step);
      expect(statSync(join(dir, "demo-credentials.json")).mode & 0o777).toBe(0o600);
      // The demo's agent keeps its state beside the demo's database, not in the home directory.
      expect(statSync(join(dir, "agent-state.json")).mode & 0o777).toBe(0o600);

      // The demo app charges whoever the X-IP-Token names (here ada), through the SDK's gpu().
      const issuer = createClient({ url: v.poolUrl, adminToken: v.adminToken });
      const { token } = await issuer.ipToken({ app: "sdxl-demo", user: "ada" });
      const res = await fetch(`${v.appUrl}/generate`, { method: "POST", headers: { "x-ip-token": token } });
      expect(res.status).toBe(200);
      const body = (await res.json()) as Record<string, unknown>;
      expect(body).toMatchObject({
        charged_to: expect.stringMatching(/^user:u_/),
        tier: "pro",
        device: { node: "sim-0" },
      });
      expect(String(body["image"])).toContain("fake");

      const refused = await fetch(`${v.appUrl}/generate`, { method: "POST", headers: { "x-ip-token": "forged" } });
      expect(refused.status).toBe(401);
      expect(((await refused.json()) as { code: string }).code).toBe("invalid_ip_token");

      // Through the demo's edge the same app sees the viewer: the IP without credentials, ada with her token.
      const creds = JSON.parse(readFileSync(join(dir, "demo-credentials.json"), "utf8")) as {
        users: { ada: { token: string; id: string } };
      };
      const anon = await fetch(`${v.edgeUrl}/apps/sdxl-demo/`);
      expect(anon.headers.get("x-gpupool-charged-as")).toBe("ip:127.0.0.1");
      expect(await anon.text()).toContain("You are charged as ip:127.0.0.1");
      const signedIn = await fetch(`${v.edgeUrl}/apps/sdxl-demo/`, {
        headers: { authorization: `Bearer ${creds.users.ada.token}` },
      });
      expect(await signedIn.text()).toContain(`You are charged as user:${creds.users.ada.id}`);

      // The agent's device API, as the tour's step 8 uses it: a grant on its node's GPU, then a release.
      expect(out).toContain(`SPACES_ZERO_DEVICE_API_URL=${v.agentUrl}/apps/$APP_KEY`);
      const grant = await fetch(
        `${v.agentUrl}/apps/${v.appKey}/schedule?cgroupPath=/demo&taskId=1&enableQueue=true&tokenVersion=1&durationSeconds=10`,
        { method: "POST" },
      );
      expect(grant.status).toBe(200);
      const g = (await grant.json()) as { idle: boolean; nvidiaIndex: number; nvidiaUUID: string; allowToken: string };
      expect(g).toMatchObject({ idle: false, nvidiaIndex: 0, nvidiaUUID: expect.stringMatching(/^GPU-/) });
      const released = await fetch(`${v.agentUrl}/apps/${v.appKey}/release?allowToken=${g.allowToken}`, {
        method: "POST",
      });
      expect(released.status).toBe(204);
    } finally {
      expect(await first.stop("SIGINT")).toBe(0);
    }

    const second = start(["demo", "--port", "0", "--dir", dir]);
    try {
      await second.waitFor(/^Press Ctrl-C to stop/m, 60_000);
      const out = second.stdout();
      expect(out).toMatch(/name "ada": already existed \(reused\)/);
      // The first run used bob's quota, so a fresh free user plays bob, and the tour works again as printed.
      const bob = /user bob {7}(u_\S+), tier free, name "bob-2": created now \(an earlier run of the tour used/.exec(
        out,
      )?.[1];
      expect(bob, out).toBeDefined();
      expect(out).toContain("BOB=bob-2");
      expectTourWorked(await pasteTourSteps(out), bob ?? "");
      expect(out).toMatch(/name "sdxl-demo", owned by ada: already existed \(reused\)/);
      const again = values(out);
      expect(again.appKey).toBe(v.appKey);
      expect(again.adminToken).toBe(v.adminToken);
      const quota = await createClient({ url: again.poolUrl, appKey: again.appKey }).quota();
      expect(quota.identity.kind).toBe("app");
    } finally {
      expect(await second.stop("SIGTERM")).toBe(0);
    }
    // Two starts of the whole demo and a dozen `npx gpupool` runs: CI on a loaded 2-core machine
    // took longer than the default 30 s.
  }, 180_000);
});
