import * as z from "zod/mini";
import { Count, IdentityKey, QueueReason, Size, TimeOrNull, describe } from "./common.js";

export const SlotCounts = z.object({
  total: describe(Count, "Slots of every GPU in the pool."),
  busy: describe(Count, "Slots held by active leases."),
});
export type SlotCounts = z.infer<typeof SlotCounts>;

export const PoolNode = z.object({
  name: z.string(),
  kind: describe(
    z.enum(["configured", "agent"]),
    "`configured`: the server's own `pool.simulated`; `agent`: a node whose agent registers its GPUs.",
  ),
  state: describe(
    z.enum(["up", "registered", "lost", "new"]),
    "`up`: registered and heartbeating (configured nodes always are); `registered`: it has GPUs but no recent heartbeat; `lost`: it stopped heartbeating and must register again; `new`: its agent never registered.",
  ),
  heartbeat_at: describe(
    TimeOrNull,
    "The agent's last heartbeat; null for configured nodes and agents never heard from.",
  ),
  agent_url: describe(z.nullable(z.string()), "The agent's device API, as it reported it."),
});
export type PoolNode = z.infer<typeof PoolNode>;

export const PoolDevice = z.object({
  node: z.string(),
  index: Count,
  uuid: z.string(),
  name: z.string(),
  memory_mb: Count,
  slots: describe(
    z.array(z.nullable(z.string())),
    "Each slot's holder: the id of the active lease on it, or null when free.",
  ),
});
export type PoolDevice = z.infer<typeof PoolDevice>;

export const PoolActiveLease = z.object({
  id: z.string(),
  app: z.nullable(z.string()),
  identity: IdentityKey,
  size: Size,
  node: z.nullable(z.string()),
  device: describe(z.nullable(Count), "The GPU's index on `node`."),
  deadline: TimeOrNull,
});
export type PoolActiveLease = z.infer<typeof PoolActiveLease>;

export const PoolQueueEntry = z.object({
  lease: describe(z.string(), "The queued lease's id."),
  position: describe(z.int(), "In the leader's priority order; on a replica that does not lead, in arrival order."),
  reason: describe(z.nullable(QueueReason), "Null on a replica that does not lead (the order is the leader's)."),
  identity: IdentityKey,
  app: z.nullable(z.string()),
  slots: describe(Count, "Slots the lease needs."),
});
export type PoolQueueEntry = z.infer<typeof PoolQueueEntry>;

/** At most this many queue entries are listed in the pool view (and its `pool` event); `queued` counts them all. */
export const QUEUE_LISTED = 200;

/** Every queued call counted, however many `queue` lists. */
export const QueueCounts = z.object({
  total: describe(Count, "Calls waiting now, all of them."),
  listed: describe(Count, "Of them, how many `queue` lists (the first in line)."),
  by_reason: describe(
    z.partialRecord(QueueReason, Count),
    "Waiting calls by why they wait (`node`, `concurrency`); empty on a replica that does not lead (the reasons are the leader's).",
  ),
  by_kind: describe(z.record(z.string(), Count), "Waiting calls by the kind of identity (`user`, `ip`, `app`)."),
});
export type QueueCounts = z.infer<typeof QueueCounts>;

/** The pool as an operator sees it (`GET /v1/admin/pool`). */
export const PoolView = z.object({
  leader: describe(z.boolean(), "Whether this replica leads the pool (always true on SQLite)."),
  source: describe(
    z.enum(["leader", "database"]),
    "`leader`: the scheduler's own memory. `database`: a replica that does not lead (PostgreSQL) rebuilt the view from the database: devices and their holders as it records them, the queue in arrival order with `reason: null`.",
  ),
  nodes: z.array(PoolNode),
  devices: z.array(PoolDevice),
  slots: SlotCounts,
  active: describe(
    z.array(PoolActiveLease),
    "Active leases, newest first (at most 10,000): the holder of each slot, its app, identity and deadline.",
  ),
  queue: describe(
    z.array(PoolQueueEntry),
    "The first in line, at most `QUEUE_LISTED` (200); `queued` counts them all, `GET /v1/admin/queue/entries` pages through the rest.",
  ),
  queued: QueueCounts,
});
export type PoolView = z.infer<typeof PoolView>;
