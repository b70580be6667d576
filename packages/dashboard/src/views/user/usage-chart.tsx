import { useMemo, useState } from "preact/hooks";
import type { UsageSummary } from "@gpupool/contract";
import { StackedBars } from "../../components/bars-chart.js";
import { Bar, Card, Loading, Scroll } from "../../components/ui.js";
import { gpuTime, num, seconds } from "../../format.js";
import { useSummary } from "../../queries.js";

/** 30 days of GPU time, quota vs credits, for all apps or one; and the split by app. */
export function UsageChartCard() {
  const [app, setApp] = useState("");
  const byApp = useSummary("30d", "app");
  const byDay = useSummary("30d", "day", app === "" ? undefined : app);
  const days = useMemo(() => (byDay.data ? dailySeries(byDay.data) : null), [byDay.data]);
  const apps = byApp.data?.groups ?? [];
  // The server names the apps a user called (only their names), whoever owns them.
  const names = new Map(apps.map((g) => [g.key, g.name]));
  const appName = (key: string) => (key === "" || key === "null" ? "Own scripts" : (names.get(key) ?? key));
  return (
    <Card id="usage" title="GPU time, last 30 days" wide>
      <div class="toolbar">
        <label for="usage-app">App</label>
        <select id="usage-app" value={app} onChange={(e) => setApp(e.currentTarget.value)}>
          <option value="">All apps and scripts</option>
          {apps.map((g) => (
            <option key={g.key} value={g.key}>
              {appName(g.key)}
            </option>
          ))}
        </select>
      </div>
      {days === null ? (
        <Loading error={byDay.error} what="the chart" />
      ) : (
        <StackedBars
          x={days.x}
          series={days.series}
          format={gpuTime}
          label={`GPU time charged per day over 30 days: ${seconds(days.quota)} paid by the quota, ${seconds(days.credits)} by credits`}
        />
      )}
      {apps.length === 0 ? null : (
        <Scroll label="Usage by app">
          <table id="usage-by-app">
            <caption>By app, 30 days</caption>
            <thead>
              <tr>
                <th scope="col">App</th>
                <th scope="col" class="num">
                  Calls
                </th>
                <th scope="col" class="num">
                  Quota
                </th>
                <th scope="col" class="num">
                  Credits
                </th>
                <th scope="col">Split</th>
              </tr>
            </thead>
            <tbody>
              {apps.map((g) => (
                <tr key={g.key}>
                  <th scope="row">{appName(g.key)}</th>
                  <td class="num">{num(g.calls)}</td>
                  <td class="num">{seconds(g.quota_s)}</td>
                  <td class="num">{seconds(g.overage_s)}</td>
                  <td class="split">
                    <Bar
                      label={`${seconds(g.quota_s)} quota, ${seconds(g.overage_s)} credits`}
                      total={g.charged_s}
                      parts={[
                        { name: "quota", cls: "used", value: g.quota_s },
                        { name: "credits", cls: "credits", value: g.overage_s },
                      ]}
                    />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </Scroll>
      )}
    </Card>
  );
}

function dailySeries(summary: UsageSummary) {
  const byKey = new Map(summary.groups.map((g) => [g.key, g]));
  const x: number[] = [];
  const quota: number[] = [];
  const credits: number[] = [];
  const end = Date.UTC(...(utcDay(new Date(summary.to)) as [number, number, number]));
  for (let i = 29; i >= 0; i--) {
    const t = end - i * 86_400_000;
    const g = byKey.get(new Date(t).toISOString().slice(0, 10));
    x.push(t / 1000);
    quota.push(g?.quota_s ?? 0);
    credits.push(g?.overage_s ?? 0);
  }
  return {
    x,
    quota: summary.total.quota_s,
    credits: summary.total.overage_s,
    series: [
      { label: "Quota", values: quota, color: "--used" },
      { label: "Credits", values: credits, color: "--credits" },
    ],
  };
}

function utcDay(d: Date): number[] {
  return [d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()];
}
