import type { PoolView, QueueView } from "@gpupool/contract";
import { Card, Stat, Scroll } from "../../components/ui.js";
import { num, seconds } from "../../format.js";

const SHOWN = 50;

/** The queue live: how deep, why calls wait, and the first in line. */
export function QueueCard(props: { pool: PoolView | undefined; queue: QueueView | null }) {
  const q = props.pool?.queue ?? [];
  const byKind = new Map<string, number>();
  for (const e of q) {
    const kind = e.identity.split(":")[0] ?? "";
    byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
  }
  return (
    <Card id="queue" title="Queue">
      {props.queue === null ? null : <QueueFigures v={props.queue} />}
      <dl class="stats">
        <Stat label="Depth" id="queue-depth" value={num(props.queue?.depth ?? q.length)} />
        <Stat label="Waiting for a slot" value={num(q.filter((e) => e.reason === "node").length)} />
        <Stat label="At the app's limit" value={num(q.filter((e) => e.reason === "concurrency").length)} />
        {[...byKind.entries()].map(([kind, n]) => (
          <Stat key={kind} label={`${kind} callers`} value={num(n)} />
        ))}
      </dl>
      {q.length === 0 ? (
        <p class="muted">Nobody waits.</p>
      ) : (
        <Scroll label="Queue">
          <table id="queue-table">
            <caption class="visually-hidden">First {SHOWN} in line</caption>
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
              {q.slice(0, SHOWN).map((e) => (
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
          {q.length > SHOWN ? <p class="muted">and {num(q.length - SHOWN)} more.</p> : null}
        </Scroll>
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
