// Dashboard streams at scale: a pool with QUEUED calls waiting and WATCHERS open Server-Sent Events
// streams — first the operator's pool (/v1/admin/pool/events), then users' meters (/v1/me/events),
// one user each. The bench moves the line CHANGES times (releases the call on the pool's only slot,
// so the next in line is granted) and measures what the server sends and what it costs: event
// bytes, events/s, server CPU per change and per event delivered, memory, and how long after a
// change each watcher hears it. `--baseline DIR` (a built checkout of another version) runs the same
// scenario against that build's server in the same run.
//   npm run bench -- dashboard [--watchers 1000] [--queued 10000] [--changes 20] [--baseline DIR]
import { Buffer } from "node:buffer";
import { fork } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ADMIN = "bench-dashboard-admin-token-0123456789";
const here = fileURLToPath(new URL(".", import.meta.url));
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

const median = (xs) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const pct = (xs, p) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};
const round = (x, d = 1) => (x === null ? null : Math.round(x * 10 ** d) / 10 ** d);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function flag(args, name, fallback) {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
}

function call(base, method, path, token, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      base + path,
      {
        method,
        agent,
        headers: {
          authorization: `Bearer ${token}`,
          ...(data === undefined
            ? {}
            : { "content-type": "application/json", "content-length": Buffer.byteLength(data) }),
        },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          resolve({ status: res.statusCode, body: text.startsWith("{") ? JSON.parse(text) : text });
        });
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

/** Runs `n` tasks `width` at a time. */
async function pooled(n, width, task) {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < n) await task(next++);
    }),
  );
}

/** One SSE watcher: counts events and bytes by name, and when each arrived. */
function watch(base, path, token) {
  const w = { events: [], bytes: 0, first: null, req: null, closed: false };
  return new Promise((resolve, reject) => {
    let buffer = "";
    w.req = http.get(
      base + path,
      { headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" }, agent: false },
      (res) => {
        if (res.statusCode !== 200) return reject(new Error(`${path}: ${res.statusCode}`));
        res.setEncoding("utf8");
        resolve(w);
        res.on("data", (chunk) => {
          w.bytes += Buffer.byteLength(chunk);
          buffer += chunk;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const name = /^event: (.*)$/m.exec(block)?.[1];
            if (name === undefined) continue;
            const at = performance.now();
            w.events.push({ name, at, bytes: Buffer.byteLength(block) + 2 });
            if (w.first === null) w.first = at;
          }
        });
        res.on("close", () => (w.closed = true));
      },
    );
    w.req.on("error", (e) => (w.closed ? undefined : reject(e)));
  });
}

async function untilAll(watchers, ok, ms, what) {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    if (watchers.every(ok)) return true;
    await sleep(100);
  }
  console.log(`  (${what}: ${watchers.filter(ok).length} of ${watchers.length} within ${ms / 1000} s)`);
  return false;
}

async function scenario(label, root, o) {
  const dir = mkdtempSync(join(tmpdir(), "gpupool-bench-dash-"));
  const child = fork(join(here, "dashboard-server.js"), [root, dir, ADMIN], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const replies = [];
  child.on("message", (m) => replies.push(m));
  const next = async () => {
    while (replies.length === 0) await sleep(10);
    return replies.shift();
  };
  const stats = async () => {
    child.send("stats");
    return next();
  };
  const { url } = await next();
  console.log(`${label}: ${root}`);

  // Users (one per watcher), one call holding the only slot, QUEUED waiting behind it.
  const users = [];
  await pooled(o.watchers, 16, async (i) => {
    const r = await call(url, "POST", "/v1/admin/users", ADMIN, { name: `u${i}`, tier: "pro" });
    users[i] = r.body;
  });
  const holder = await call(url, "POST", "/v1/leases", users[0].token, { duration: 60 });
  if (holder.status !== 201) throw new Error(`holder: ${holder.status}`);
  const t0 = performance.now();
  await pooled(o.queued, 16, async (i) => {
    const r = await call(url, "POST", "/v1/leases", users[i % users.length].token, { duration: 60 });
    if (r.status !== 202) throw new Error(`queued ${i}: ${r.status} ${JSON.stringify(r.body)}`);
  });
  console.log(`  ${o.queued} queued in ${round((performance.now() - t0) / 1000)} s`);
  const poll = await call(url, "GET", "/v1/admin/pool", ADMIN);
  const pollBytes = Buffer.byteLength(JSON.stringify(poll.body));

  const result = { label, pool_poll_bytes: pollBytes };
  for (const kind of ["pool", "me"]) {
    const path = kind === "pool" ? "/v1/admin/pool/events" : "/v1/me/events";
    const watchers = [];
    const c0 = performance.now();
    await pooled(o.watchers, 50, async (i) => {
      watchers[i] = await watch(url, path, kind === "pool" ? ADMIN : users[i].token);
    });
    const connected = await untilAll(watchers, (w) => w.first !== null, 180_000, "first event");
    const connectS = (performance.now() - c0) / 1000;
    await sleep(1500);
    // Idle: nothing changes, the streams only look again (every second) and keep quiet.
    const i0 = await stats();
    const idleFrom = performance.now();
    const idleEvents0 = watchers.reduce((n, w) => n + w.events.length, 0);
    await sleep(o.idleS * 1000);
    const i1 = await stats();
    const idleS = (performance.now() - idleFrom) / 1000;
    const idleEvents = watchers.reduce((n, w) => n + w.events.length, 0) - idleEvents0;

    // Changes: release the call on the slot; the next in line is granted.
    const s0 = await stats();
    const from = performance.now();
    const events0 = watchers.map((w) => w.events.length);
    const bytes0 = watchers.reduce((n, w) => n + w.bytes, 0);
    const heard = [];
    for (let k = 0; k < o.changes; k++) {
      const active = await call(url, "GET", "/v1/leases?status=active&limit=1", ADMIN);
      const lease = active.body.leases[0];
      const at = performance.now();
      await call(url, "POST", `/v1/leases/${lease.id}/release`, ADMIN, {});
      // pool: every watcher hears a `pool` event after the change; me: the user whose call was granted.
      const next = await call(url, "GET", "/v1/leases?status=active&limit=1", ADMIN);
      const grantee = next.body.leases[0]?.identity?.id;
      const listeners = kind === "pool" ? watchers : watchers.filter((_, i) => users[i].id === grantee);
      const name = kind === "pool" ? "pool" : "me";
      const after = (w) => w.events.find((e) => e.name === name && e.at > at);
      await untilAll(listeners, (w) => after(w) !== undefined, 20_000, `change ${k + 1} heard`);
      for (const w of listeners) {
        const e = after(w);
        if (e !== undefined) heard.push(e.at - at);
      }
    }
    const s1 = await stats();
    const seconds = (performance.now() - from) / 1000;
    const sent = watchers.map((w, i) => w.events.slice(events0[i]));
    const all = sent.flat();
    const main = all.filter((e) => e.name === kind);
    const bytes = watchers.reduce((n, w) => n + w.bytes, 0) - bytes0;
    result[kind] = {
      watchers: o.watchers,
      connected,
      connect_s: round(connectS),
      event_bytes_median: median(main.map((e) => e.bytes)),
      events_per_s: round(all.length / seconds),
      bytes_per_s: Math.round(bytes / seconds),
      server_cpu_ms_per_change: round((s1.cpuUs - s0.cpuUs) / 1000 / o.changes),
      server_cpu_us_per_event: all.length === 0 ? null : round((s1.cpuUs - s0.cpuUs) / all.length, 0),
      server_cpu_share_idle: round((i1.cpuUs - i0.cpuUs) / 1e6 / idleS, 2),
      events_per_s_idle: round(idleEvents / idleS),
      heard_ms_median: round(median(heard), 0),
      heard_ms_p95: round(pct(heard, 95), 0),
      rss_mb: Math.round(s1.rss / 1e6),
      heap_mb: Math.round(s1.heapUsed / 1e6),
    };
    console.log(`  ${kind}: ${JSON.stringify(result[kind])}`);
    for (const w of watchers) {
      w.closed = true;
      w.req.destroy();
    }
    await sleep(1000);
  }
  child.send("stop");
  await new Promise((r) => child.once("exit", r));
  rmSync(dir, { recursive: true, force: true });
  return result;
}

export async function main(args) {
  const o = {
    watchers: Number(flag(args, "watchers", 1000)),
    queued: Number(flag(args, "queued", 10_000)),
    changes: Number(flag(args, "changes", 20)),
    idleS: Number(flag(args, "idle", 5)),
  };
  const baseline = flag(args, "baseline", null);
  console.log(`dashboard streams: ${o.watchers} watchers, ${o.queued} queued, ${o.changes} changes`);
  const runs = [await scenario("this build", join(here, ".."), o)];
  if (baseline !== null) runs.push(await scenario("baseline", baseline, o));
  agent.destroy();
  console.log(JSON.stringify({ bench: "dashboard", ...o, runs }));
}
