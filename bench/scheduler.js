// Scheduler benchmark: gpupool's PriorityScheduler against a naive sorted-array queue with the
// same order, at 1k, 10k and 100k queued requests in front of a pool of thousands of slots.
// One "event" is one operation the engine performs: a release (and the dispatch it triggers),
// an admission (enqueue + dispatch), a queue timeout (remove the oldest), or an SSE position lookup.
// BENCH_BOUND (0–1, default 0) binds that share of requests to a random node (leases asked for
// through a node's agent); at 0 the workload is exactly the unbound one.
// BENCH_DEDICATED (0–1, default 0) makes that share of nodes a GPU host's agent's: their devices
// are dedicated (only requests bound to the node go there, so use it with BENCH_BOUND > 0). The
// sorted array then scans its whole queue at each dispatch while a dedicated slot is free: keep
// BENCH_QUEUED small (e.g. 1000,10000).
import { Pool, PriorityScheduler } from "@gpupool/core";

const SIZES = (process.env.BENCH_QUEUED ?? "1000,10000,100000").split(",").map(Number);
const GPUS = Number(process.env.BENCH_GPUS ?? 2000);
const CYCLES = Number(process.env.BENCH_CYCLES ?? 10_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BOUND = Number(process.env.BENCH_BOUND ?? 0);
const DEDICATED = Number(process.env.BENCH_DEDICATED ?? 0);
const APPS = 200;
const AGING_STEP_MS = 15_000;
const T0 = 1_700_000_000_000;

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x, d = 0) => Math.round(x * 10 ** d) / 10 ** d;

/** mulberry32: the same pseudo-random workload for both queues. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The peer: one array kept sorted by the same static key, binary search + splice, a front-to-back scan to dispatch. */
class SortedArrayQueue {
  items = [];
  byId = new Map();
  before(a, b) {
    if (a.rankClass !== b.rankClass) return a.rankClass > b.rankClass;
    if (a.shareStep !== b.shareStep) return a.shareStep > b.shareStep;
    if (a.request.durationMs !== b.request.durationMs) return a.request.durationMs < b.request.durationMs;
    if (a.request.queuedAt !== b.request.queuedAt) return a.request.queuedAt < b.request.queuedAt;
    return a.request.seq < b.request.seq;
  }
  /** Index of the first item not before `e`. */
  lowerBound(e) {
    let lo = 0;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.before(this.items[mid], e)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
  get size() {
    return this.items.length;
  }
  enqueue(request) {
    const e = {
      request,
      rankClass: request.priority - Math.floor(request.queuedAt / AGING_STEP_MS),
      shareStep: Math.floor((request.quotaLeftShare ?? 1) * 20),
    };
    this.items.splice(this.lowerBound(e), 0, e);
    this.byId.set(request.leaseId, e);
  }
  remove(leaseId) {
    const e = this.byId.get(leaseId);
    if (!e) return false;
    this.byId.delete(leaseId);
    this.items.splice(this.lowerBound(e), 1);
    return true;
  }
  position(leaseId) {
    const e = this.byId.get(leaseId);
    return e ? this.lowerBound(e) + 1 : null;
  }
  dispatch(pool, concurrency, onGrant) {
    const grants = [];
    for (let i = 0; i < this.items.length && pool.freeSlots > 0; i++) {
      const { request } = this.items[i];
      const limit = concurrency.limit(request.appId);
      if (limit !== null && concurrency.active(request.appId) >= limit) continue;
      const assignment = pool.assign(request.leaseId, request.slots, request.node);
      if (!assignment) continue;
      this.items.splice(i--, 1);
      this.byId.delete(request.leaseId);
      const grant = { leaseId: request.leaseId, assignment };
      grants.push(grant);
      onGrant(grant, request);
    }
    return grants;
  }
  onReleased() {}
}

/** Runs the same workload on `queue`: returns events per second of the measured part. */
export function run(kind, queued, cycles = CYCLES) {
  const random = rng(42);
  // Node k is dedicated when it brings the count of dedicated nodes up to the share: spread evenly.
  const dedicated = (k) => Math.floor((k + 1) * DEDICATED) > Math.floor(k * DEDICATED);
  const devices = Array.from({ length: GPUS }, (_, i) => ({
    node: `n${i >> 3}`,
    index: i & 7,
    uuid: `GPU-${i}`,
    name: "H100",
    memoryMb: 81_920,
    slots: 2,
    ...(dedicated(i >> 3) ? { dedicated: true } : {}),
  }));
  const pool = new Pool(devices);
  const scheduler =
    kind === "gpupool"
      ? new PriorityScheduler({ agingStepMs: AGING_STEP_MS, holdAfterMs: 15_000 })
      : new SortedArrayQueue();
  const appActive = new Map();
  const limited = (app) => app % 20 === 0; // one app in twenty has max_concurrency 8
  const concurrency = { active: (app) => appActive.get(app) ?? 0, limit: (app) => (limited(app) ? 8 : null) };
  const queuedIds = [];
  const queuedAt = new Map();
  /** Queued ids in arrival order (a Map keeps insertion order): the next to time out first. */
  const oldest = new Map();
  const active = [];
  let now = T0;
  let n = 0;
  const drop = (list, index, where) => {
    const last = list.pop();
    if (index < list.length) {
      list[index] = last;
      where?.set(last, index);
    }
  };
  const newRequest = () => {
    const leaseId = `l${n++}`;
    const app = Math.floor(random() * APPS);
    const request = {
      leaseId,
      appId: app,
      identity: `user:${Math.floor(random() * 50_000)}`,
      slots: random() < 0.1 ? 2 : 1,
      priority: 1 + Math.floor(random() * 3),
      durationMs: 15_000 * (1 + Math.floor(random() * 8)),
      seq: n,
      queuedAt: now,
      quotaLeftShare: random(),
      // Drawn only when asked for, so that the unbound workload stays the same draw for draw.
      node: BOUND > 0 && random() < BOUND ? `n${Math.floor(random() * (GPUS >> 3))}` : null,
    };
    queuedAt.set(leaseId, queuedIds.length);
    queuedIds.push(leaseId);
    oldest.set(leaseId, true);
    scheduler.enqueue(request);
  };
  const onGrant = (grant, request) => {
    const i = queuedAt.get(grant.leaseId);
    queuedAt.delete(grant.leaseId);
    oldest.delete(grant.leaseId);
    drop(queuedIds, i, queuedAt);
    appActive.set(request.appId, (appActive.get(request.appId) ?? 0) + 1);
    active.push({ leaseId: grant.leaseId, app: request.appId });
  };
  const dispatch = () => scheduler.dispatch(pool, concurrency, onGrant, now);
  const release = () => {
    if (active.length === 0) return;
    const i = Math.floor(random() * active.length);
    const lease = active[i];
    drop(active, i);
    pool.release(lease.leaseId);
    scheduler.onReleased(lease.leaseId);
    appActive.set(lease.app, appActive.get(lease.app) - 1);
  };
  // Fill the pool (its shared devices: dedicated ones fill as bound requests come), then the queue.
  while (pool.sharedFreeSlots > 0) {
    newRequest();
    dispatch();
  }
  while (queuedIds.length < queued) newRequest();
  dispatch();
  let events = 0;
  const cycle = () => {
    now += 10;
    release();
    dispatch();
    newRequest();
    dispatch();
    events += 2;
    // The oldest queued request times out.
    const victim = oldest.keys().next().value;
    oldest.delete(victim);
    scheduler.remove(victim);
    drop(queuedIds, queuedAt.get(victim), queuedAt);
    queuedAt.delete(victim);
    newRequest();
    dispatch();
    scheduler.position(queuedIds[Math.floor(random() * queuedIds.length)]);
    events += 3;
    // Grants of small requests after a large release can shrink the queue: top it up.
    while (queuedIds.length < queued) {
      newRequest();
      dispatch();
      events++;
    }
  };
  for (let i = 0; i < Math.min(500, cycles); i++) cycle(); // warm-up
  events = 0;
  const t0 = performance.now();
  for (let i = 0; i < cycles; i++) cycle();
  const seconds = (performance.now() - t0) / 1000;
  if (scheduler.size < queued) throw new Error(`${kind}: the queue drifted to ${scheduler.size} from ${queued}`);
  return events / seconds;
}

export async function main() {
  // Let the JIT see both queues before anything is measured.
  run("gpupool", 1000, 2000);
  run("naive", 1000, 2000);
  const ours = {};
  const peer = {};
  const ratio = {};
  for (const queued of SIZES) {
    const a = [];
    const b = [];
    for (let r = 0; r < ROUNDS; r++) {
      // Alternate which goes first so neither always gets the warmer machine.
      if (r % 2 === 0) {
        a.push(run("gpupool", queued));
        b.push(run("naive", queued));
      } else {
        b.push(run("naive", queued));
        a.push(run("gpupool", queued));
      }
    }
    const key = queued >= 1000 ? `${queued / 1000}k` : String(queued);
    ours[key] = round(median(a));
    peer[key] = round(median(b));
    ratio[key] = round(median(a) / median(b), 2);
    console.log(
      `${String(queued).padStart(7)} queued, ${GPUS * 2} slots: gpupool ${ours[key].toLocaleString("en")} events/s, sorted array ${peer[key].toLocaleString("en")} events/s (×${ratio[key]})`,
    );
  }
  console.log(
    JSON.stringify({
      bench: "scheduler",
      slots: GPUS * 2,
      cycles: CYCLES,
      rounds: ROUNDS,
      ...(BOUND > 0 ? { bound_share: BOUND } : {}),
      ...(DEDICATED > 0 ? { dedicated_node_share: DEDICATED } : {}),
      event_mix:
        "per cycle: release+dispatch, enqueue+dispatch, remove oldest (timeout), enqueue+dispatch, position; enqueue+dispatch to top the queue up",
      events_per_s: ours,
      peer: "sorted array (binary search + splice, front-to-back dispatch scan), same order",
      peer_events_per_s: peer,
      ratio,
    }),
  );
}
