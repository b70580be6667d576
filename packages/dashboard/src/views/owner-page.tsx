import { useMemo, useState } from "preact/hooks";
import { Card, Loading, Scroll } from "../components/ui.js";
import { num, seconds } from "../format.js";
import { RANGES, useRecords } from "../queries.js";
import type { Range } from "../queries.js";
import { appStats } from "./app-stats.js";
import type { AppStat } from "./app-stats.js";

const DEFAULT_COSTS: Record<string, number> = { large: 1, xlarge: 2 };
const costOf = (size: string) => DEFAULT_COSTS[size] ?? 1;

/** Per app: calls, GPU time, refusals, waits, and the duration advisor (requested vs actually held). */
export function OwnerPage(props: { admin: boolean }) {
  const [range, setRange] = useState<Range>("7d");
  const records = useRecords(range);
  const stats = useMemo(() => (records.data ? appStats(records.data.records, costOf) : null), [records.data]);
  return (
    <div class="grid">
      <Card id="app-stats" title={props.admin ? "Apps: calls and the duration advisor" : "Your apps"} wide>
        <p class="muted">
          Over-reserving is what gets visitors refused: a call reserves its whole duration from the visitor's quota at
          admission. Ask for the <strong>suggested duration</strong>, the 95th percentile of what calls actually held.
        </p>
        <div class="toolbar">
          <label for="stats-range">Range</label>
          <select id="stats-range" value={range} onChange={(e) => setRange(e.currentTarget.value as Range)}>
            {Object.keys(RANGES).map((r) => (
              <option key={r} value={r}>
                last {r}
              </option>
            ))}
          </select>
        </div>
        {stats === null ? (
          <Loading error={records.error} what="the apps' figures" />
        ) : stats.length === 0 ? (
          <p class="muted">No calls in this range.</p>
        ) : (
          <Scroll label="Table">
            <StatsTable stats={stats} />
          </Scroll>
        )}
      </Card>
    </div>
  );
}

export function StatsTable(props: { stats: readonly AppStat[] }) {
  const s = (v: number | null) => (v === null ? "—" : seconds(v));
  return (
    <table id="app-stats-table">
      <caption class="visually-hidden">Per app figures</caption>
      <thead>
        <tr>
          <th scope="col">App</th>
          <th scope="col" class="num">
            Calls
          </th>
          <th scope="col" class="num">
            GPU time
          </th>
          <th scope="col">Refusals</th>
          <th scope="col" class="num">
            Wait p50 / p95
          </th>
          <th scope="col" class="num">
            Requested p50 / p95
          </th>
          <th scope="col" class="num">
            Held p50 / p95
          </th>
          <th scope="col" class="num">
            Suggested duration
          </th>
        </tr>
      </thead>
      <tbody>
        {props.stats.map((a) => (
          <tr key={a.app}>
            <th scope="row">{a.app === "" ? "own scripts" : a.app}</th>
            <td class="num">{num(a.calls)}</td>
            <td class="num">{seconds(a.heldS)}</td>
            <td>
              {Object.entries(a.refusals).length === 0
                ? "none"
                : Object.entries(a.refusals).map(([code, n]) => (
                    <span key={code} class="badge warn">
                      {code} {num(n)}
                    </span>
                  ))}
            </td>
            <td class="num">
              {s(a.waitP50)} / {s(a.waitP95)}
            </td>
            <td class="num">
              {s(a.requestedP50)} / {s(a.requestedP95)}
            </td>
            <td class="num">
              {s(a.heldP50)} / {s(a.heldP95)}
            </td>
            <td class="num">
              <strong
                class={a.suggested !== null && a.requestedP50 !== null && a.suggested < a.requestedP50 ? "advice" : ""}
              >
                {s(a.suggested)}
              </strong>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
