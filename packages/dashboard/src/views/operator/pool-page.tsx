import { useMemo } from "preact/hooks";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { PoolView, QueueView } from "@gpupool/contract";
import type { PoolActiveLease, PoolDevice, PoolNode } from "@gpupool/contract";
import { GpupoolError, on } from "@gpupool/sdk/browser";
import { api } from "../../client.js";
import { Card, Loading, Stat } from "../../components/ui.js";
import { ago, clock, num } from "../../format.js";
import { pollUnless, useLive, useNow } from "../../live.js";
import { QueueCard } from "./queue-card.js";
import { RefusalsCard } from "./refusals-card.js";

export const POOL_KEY = ["admin", "pool"] as const;
export const QUEUE_KEY = ["admin", "queue"] as const;

/** The pool live: nodes → GPUs → slots and who holds each until when; the queue; refusals. */
export function PoolPage() {
  const queries = useQueryClient();
  const handlers = useMemo(() => ({ pool: on(PoolView, (view) => queries.setQueryData(POOL_KEY, view)) }), [queries]);
  const live = useLive("/v1/admin/pool/events", handlers);
  const pool = useQuery({
    queryKey: POOL_KEY,
    queryFn: () => api.get("/v1/admin/pool", PoolView),
    refetchInterval: pollUnless(live),
  });
  const queue = useQuery({
    queryKey: QUEUE_KEY,
    // A server before the dashboard's queue view: the pool's queue list alone.
    queryFn: () =>
      api.get("/v1/admin/queue", QueueView).catch((e: unknown) => {
        if (e instanceof GpupoolError && e.status === 404) return null;
        throw e;
      }),
    refetchInterval: pollUnless(live),
  });
  const p = pool.data;
  return (
    <div class="grid">
      <Card
        id="pool"
        title="Pool"
        wide
        actions={<span class={live ? "live on" : "live"}>{live ? "Live" : "Polling"}</span>}
      >
        {!p ? (
          <Loading error={pool.error} what="the pool" />
        ) : (
          <>
            <dl class="stats">
              <Stat label="Slots busy" id="slots-busy" value={`${num(p.slots.busy)} / ${num(p.slots.total)}`} />
              <Stat label="Active calls" id="active-count" value={num(p.active.length)} />
              <Stat label="Queued" id="queued-count" value={num(p.queued.total)} />
              <Stat
                label="Nodes up"
                value={`${num(p.nodes.filter((n) => n.state === "up").length)} / ${num(p.nodes.length)}`}
              />
              <Stat label="This replica" value={p.leader ? "leads" : "follows (view from the database)"} />
            </dl>
            <Nodes nodes={p.nodes} devices={p.devices} active={p.active} />
          </>
        )}
      </Card>
      <QueueCard pool={p} queue={queue.data ?? null} />
      <RefusalsCard />
    </div>
  );
}

function Nodes(props: {
  nodes: readonly PoolNode[];
  devices: readonly PoolDevice[];
  active: readonly PoolActiveLease[];
}) {
  const now = useNow(5_000);
  const holders = useMemo(() => new Map(props.active.map((a) => [a.id, a])), [props.active]);
  return (
    <div class="nodes" id="nodes">
      {props.nodes.map((n) => (
        <section key={n.name} class="node" aria-label={`Node ${n.name}`}>
          <h3>
            {n.name} <span class={`badge ${n.state}`}>{n.state}</span>
          </h3>
          <p class="muted">
            {n.kind === "configured" ? "simulated by the server" : `agent, last heartbeat ${ago(n.heartbeat_at, now)}`}
          </p>
          <ul class="gpus">
            {props.devices
              .filter((d) => d.node === n.name)
              .map((d) => (
                <li key={d.uuid} class="gpu">
                  <span class="gpu-name">
                    GPU {d.index} · {d.name} · {num(d.memory_mb / 1024)} GB
                  </span>
                  <ul class="slots">
                    {d.slots.map((holder, i) => (
                      <Slot key={i} index={i} holder={holder === null ? null : (holders.get(holder) ?? holder)} />
                    ))}
                  </ul>
                </li>
              ))}
          </ul>
        </section>
      ))}
    </div>
  );
}

function Slot(props: { index: number; holder: PoolActiveLease | string | null }) {
  const h = props.holder;
  if (h === null)
    return (
      <li class="slot free">
        <span class="visually-hidden">Slot {props.index}: </span>free
      </li>
    );
  if (typeof h === "string")
    return (
      <li class="slot busy" data-lease={h}>
        <code>{h}</code>
      </li>
    );
  return (
    <li class="slot busy" data-lease={h.id}>
      <span class="visually-hidden">Slot {props.index}: </span>
      <strong>{h.identity}</strong>
      <span>{h.app ?? "own script"}</span>
      <span class="muted">{h.deadline === null ? "" : `until ${clock(h.deadline)}`}</span>
    </li>
  );
}
