import { useMemo } from "preact/hooks";
import { useQuery } from "@tanstack/react-query";
import { RefusalsView } from "@gpupool/contract";
import { api } from "../../client.js";
import { StackedBars } from "../../components/bars-chart.js";
import { Card, Loading } from "../../components/ui.js";
import { num } from "../../format.js";

const COLORS = ["--c1", "--c2", "--c3", "--c4", "--c5", "--c6"];

/** Refusals by reason, per hour over the last day. */
export function RefusalsCard() {
  const refusals = useQuery({
    queryKey: ["admin", "refusals"],
    queryFn: () => api.get("/v1/admin/refusals", RefusalsView, { hours: 24 }),
    refetchInterval: 60_000,
  });
  const chart = useMemo(() => (refusals.data ? refusalSeries(refusals.data) : null), [refusals.data]);
  return (
    <Card id="refusals" title="Refusals by reason, last 24 hours" wide>
      {chart === null ? (
        <Loading error={refusals.error} what="refusals" />
      ) : chart.series.length === 0 ? (
        <p class="muted">No refusals.</p>
      ) : (
        <>
          <StackedBars x={chart.x} series={chart.series} format={(v) => num(v, 0)} label={chart.label} hourly />
          <ul class="plain" id="refusal-totals">
            {chart.totals.map(([code, n]) => (
              <li key={code}>
                <code>{code}</code>: {num(n)}
              </li>
            ))}
          </ul>
        </>
      )}
    </Card>
  );
}

function refusalSeries(v: RefusalsView) {
  const totals = Object.entries(v.total).flatMap(([code, n]): [string, number][] =>
    n === undefined || n === 0 ? [] : [[code, n]],
  );
  return {
    x: v.hours.map((h) => Date.parse(h.hour) / 1000),
    totals,
    label: `Refusals over 24 hours: ${totals.map(([c, n]) => `${c} ${n}`).join(", ")}`,
    series: totals.map(([code], i) => ({
      label: code,
      color: COLORS[i % COLORS.length]!,
      values: v.hours.map((h) => (h.refusals as Record<string, number | undefined>)[code] ?? 0),
    })),
  };
}
