import { useState } from "preact/hooks";
import { useQuery } from "@tanstack/react-query";
import { AppStatsList } from "@gpupool/contract";
import type { UsageRecord } from "@gpupool/contract";
import { GpupoolError } from "@gpupool/sdk/browser";
import { api } from "../client.js";
import { Card, Loading, Scroll } from "../components/ui.js";
import { num, seconds } from "../format.js";
import { RANGES, rangeFrom, readRecords } from "../queries.js";
import type { Range } from "../queries.js";
import { appStats } from "./app-stats.js";
import type { AppStat } from "./app-stats.js";

const DEFAULT_COSTS: Record<string, number> = { large: 1, xlarge: 2 };
const costOf = (size: string) => DEFAULT_COSTS[size] ?? 1;

/** The apps' figures: the server's (`GET /v1/apps/stats`), or, from a server without it, made here from the usage records. */
function useAppStats(range: Range) {
  return useQuery({
    queryKey: ["app-stats", range],
    queryFn: async (): Promise<AppStat[]> => {
      try {
        const list = await api.get("/v1/apps/stats", AppStatsList, { days: RANGES[range] });
        return list.apps.map((a) => ({
          app: a.name,
          calls: a.calls,
          heldS: a.gpu_s,
          refusals: a.refusals,
          waitP50: a.wait.p50_s,
          waitP95: a.wait.p95_s,
          requestedP50: a.requested.p50_s,
          requestedP95: a.requested.p95_s,
          heldP50: a.held.p50_s,
          heldP95: a.held.p95_s,
          suggested: a.suggested_duration_s,
        }));
      } catch (error) {
        if (!(error instanceof GpupoolError && error.status === 404)) throw error;
        const { records } = await readRecords(rangeFrom(range));
        return appStats(
          records.filter((r: UsageRecord) => r.app !== null),
          costOf,
        );
      }
    },
  });
}

/** Per app: calls, GPU time, refusals, waits, and the duration advisor (requested vs actually held). */
export function OwnerPage(props: { admin: boolean }) {
  const [range, setRange] = useState<Range>("7d");
  const query = useAppStats(range);
  const stats = query.data ?? null;
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
          <Loading error={query.error} what="the apps' figures" />
        ) : stats.length === 0 ? (
          <p class="muted">{props.admin ? "No apps yet." : "You own no apps yet."}</p>
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
