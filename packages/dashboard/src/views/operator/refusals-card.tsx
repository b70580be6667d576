import { useMemo } from "preact/hooks";
import type { UsageSummary } from "@gpupool/contract";
import { StackedBars } from "../../components/bars-chart.js";
import { Card, Loading } from "../../components/ui.js";
import { num } from "../../format.js";
import { useSummary } from "../../queries.js";

const COLORS = ["--c1", "--c2", "--c3", "--c4", "--c5", "--c6"];

/** Refusals by reason, per day over the last week. */
export function RefusalsCard() {
  const summary = useSummary("7d", "day");
  const chart = useMemo(() => (summary.data ? refusalSeries(summary.data) : null), [summary.data]);
  return (
    <Card id="refusals" title="Refusals by reason, last 7 days" wide>
      {chart === null ? (
        <Loading error={summary.error} what="refusals" />
      ) : chart.series.length === 0 ? (
        <p class="muted">No refusals.</p>
      ) : (
        <>
          <StackedBars x={chart.x} series={chart.series} format={(v) => num(v, 0)} label={chart.label} />
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

function refusalSeries(s: UsageSummary) {
  const byKey = new Map(s.groups.map((g) => [g.key, g]));
  const totals = Object.entries(s.total.refusals).flatMap(([code, n]): [string, number][] =>
    n === undefined || n === 0 ? [] : [[code, n]],
  );
  const end = new Date(s.to);
  const today = Date.UTC(end.getUTCFullYear(), end.getUTCMonth(), end.getUTCDate());
  const days = Array.from({ length: 7 }, (_, i) => today - (6 - i) * 86_400_000);
  return {
    x: days.map((t) => t / 1000),
    totals,
    label: `Refusals over 7 days: ${totals.map(([c, n]) => `${c} ${n}`).join(", ")}`,
    series: totals.map(([code], i) => ({
      label: code,
      color: COLORS[i % COLORS.length]!,
      values: days.map((t) => {
        const g = byKey.get(new Date(t).toISOString().slice(0, 10));
        return (g?.refusals as Record<string, number> | undefined)?.[code] ?? 0;
      }),
    })),
  };
}
