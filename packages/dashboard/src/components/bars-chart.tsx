import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import { day, when } from "../format.js";
import { isDark } from "../theme.js";

export interface StackSeries {
  readonly label: string;
  readonly values: readonly number[];
  /** A CSS variable's name, e.g. `--quota`. */
  readonly color: string;
}

/**
 * Stacked bars per x (seconds since the epoch), drawn with uPlot, the first series at the bottom:
 * uPlot draws series in order, so the top of the stack (the sum of all) goes first and each lower
 * one over it. The legend shows each series' own value.
 */
export function StackedBars(props: {
  x: readonly number[];
  series: readonly StackSeries[];
  format: (v: number) => string;
  label: string;
  height?: number;
  /** Bars per hour rather than per day. */
  hourly?: boolean;
}) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (el === null) return;
    const style = getComputedStyle(document.documentElement);
    const color = (v: string) => style.getPropertyValue(v).trim() || "#888";
    const top = [...props.series].reverse();
    const stacked = top.map((_, i) =>
      props.x.map((_x, j) => top.slice(i).reduce((sum, s) => sum + (s.values[j] ?? 0), 0)),
    );
    const bars = uPlot.paths.bars!({ size: [0.7, 40] });
    const axis = { stroke: color("--muted"), grid: { stroke: color("--line"), width: 1 }, ticks: { show: false } };
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height: props.height ?? 220,
      legend: { live: true },
      cursor: { points: { show: false } },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1, max) * 1.1] } },
      axes: [axis, { ...axis, size: 60, values: (_u, ticks) => ticks.map(props.format) }],
      series: [
        {
          label: props.hourly ? "Hour" : "Day",
          value: (_u, v) =>
            v === null ? "" : props.hourly ? when(new Date(v * 1000).toISOString()) : day(new Date(v * 1000)),
        },
        ...top.map((s) => ({
          label: s.label,
          fill: color(s.color),
          stroke: color(s.color),
          width: 0,
          paths: bars,
          points: { show: false },
          value: (_u: uPlot, _v: number | null, _si: number, idx: number | null) =>
            idx === null ? "" : props.format(s.values[idx] ?? 0),
        })),
      ],
    };
    const plot = new uPlot(opts, [props.x as number[], ...stacked], el);
    const resize = new ResizeObserver(() =>
      plot.setSize({ width: Math.max(200, el.clientWidth), height: opts.height }),
    );
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [props.x, props.series, props.format, props.height, props.hourly, isDark()]);
  return <div class="chart" ref={box} role="img" aria-label={props.label} />;
}
