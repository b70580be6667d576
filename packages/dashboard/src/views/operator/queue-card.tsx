import { useState } from "preact/hooks";
import { useQuery } from "@tanstack/react-query";
import { QueueEntriesPage } from "@gpupool/contract";
import type { PoolView, QueueView } from "@gpupool/contract";
import { api } from "../../client.js";
import { Card, Stat, Scroll } from "../../components/ui.js";
import { num, seconds } from "../../format.js";

const SHOWN = 50;

/** The queue live: how deep, why calls wait, and the line a page at a time (the first page live). */
export function QueueCard(props: { pool: PoolView | undefined; queue: QueueView | null }) {
  const counts = props.pool?.queued;
  const total = counts?.total ?? 0;
  // Page 0 is the pool event's first in line (live); later pages are read from the whole line.
  const [cursors, setCursors] = useState<readonly string[]>([]);
  const page = cursors.length;
  const later = useQuery({
    queryKey: ["admin", "queue-entries", cursors[page - 1] ?? ""],
    queryFn: () => api.get("/v1/admin/queue/entries", QueueEntriesPage, { limit: SHOWN, cursor: cursors[page - 1] }),
    enabled: page > 0,
  });
  const rows = page === 0 ? (props.pool?.queue ?? []).slice(0, SHOWN) : (later.data?.entries ?? []);
  const next = async () => {
    const cursor =
      page === 0
        ? (await api.get("/v1/admin/queue/entries", QueueEntriesPage, { limit: SHOWN })).next_cursor
        : (later.data?.next_cursor ?? null);
    if (cursor !== null) setCursors([...cursors, cursor]);
  };
  const first = rows[0]?.position ?? 0;
  const last = rows[rows.length - 1]?.position ?? 0;
  return (
    <Card id="queue" title="Queue">
      {props.queue === null ? null : <QueueFigures v={props.queue} />}
      <dl class="stats">
        <Stat label="Depth" id="queue-depth" value={num(props.queue?.depth ?? total)} />
        <Stat label="Waiting for a slot" value={num(counts?.by_reason.node ?? 0)} />
        <Stat label="At the app's limit" value={num(counts?.by_reason.concurrency ?? 0)} />
        {Object.entries(counts?.by_kind ?? {}).map(([kind, n]) => (
          <Stat key={kind} label={`${kind} callers`} value={num(n)} />
        ))}
      </dl>
      {total === 0 && page === 0 ? (
        <p class="muted">Nobody waits.</p>
      ) : (
        <>
          <Scroll label="Queue">
            <table id="queue-table">
              <caption class="visually-hidden">
                In line, {num(first)} to {num(last)}
              </caption>
              <thead>
                <tr>
                  <th scope="col" class="num">
                    #
                  </th>
                  <th scope="col">Who</th>
                  <th scope="col">App</th>
                  <th scope="col" class="num">
                    Slots
                  </th>
                  <th scope="col">Why</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((e) => (
                  <tr key={e.lease}>
                    <td class="num">{e.position}</td>
                    <td>{e.identity}</td>
                    <td>{e.app ?? "own script"}</td>
                    <td class="num">{e.slots}</td>
                    <td>{e.reason ?? "—"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Scroll>
          <p class="muted" id="queue-more" aria-live="polite">
            {rows.length === 0
              ? "Nobody is at these places any more."
              : `${num(first)}–${num(last)} of ${num(total)} in line${last < total ? `, ${num(total - last)} more after these` : ""}${page === 0 ? " (live)" : " (as read; the first page is live)"}.`}
          </p>
          <nav class="pager" aria-label="Queue pages">
            <button type="button" disabled={page === 0} onClick={() => setCursors(cursors.slice(0, -1))}>
              Previous
            </button>
            <button
              type="button"
              id="queue-next"
              disabled={last >= total || (page > 0 && later.data?.next_cursor == null)}
              onClick={() => void next()}
            >
              Next {SHOWN}
            </button>
          </nav>
        </>
      )}
    </Card>
  );
}

const maybe = (s: number | null) => (s === null ? "—" : seconds(s));

function QueueFigures(props: { v: QueueView }) {
  const v = props.v;
  return (
    <>
      <dl class="stats">
        <Stat label="Oldest wait" id="queue-oldest" value={maybe(v.oldest_wait_s)} />
        <Stat label="Wait p50, last hour" value={maybe(v.last_hour.wait_p50_s)} />
        <Stat label="Wait p95, last hour" value={maybe(v.last_hour.wait_p95_s)} />
        <Stat label="Granted, last hour" value={num(v.last_hour.granted)} />
      </dl>
      <Scroll label="Queue by tier">
        <table id="queue-tiers">
          <caption>By tier</caption>
          <thead>
            <tr>
              <th scope="col">Tier</th>
              <th scope="col" class="num">
                Waiting
              </th>
              <th scope="col" class="num">
                Oldest wait
              </th>
            </tr>
          </thead>
          <tbody>
            {v.tiers.map((t) => (
              <tr key={t.tier}>
                <th scope="row">{t.tier}</th>
                <td class="num">{num(t.depth)}</td>
                <td class="num">{maybe(t.oldest_wait_s)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </Scroll>
    </>
  );
}
