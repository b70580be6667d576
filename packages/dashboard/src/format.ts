// Numbers, amounts and times for people, in the browser's locale and time zone.

const locale = typeof navigator === "undefined" ? undefined : navigator.language;
const cache = new Map<string, Intl.NumberFormat>();
function numberFormat(options: Intl.NumberFormatOptions): Intl.NumberFormat {
  const key = JSON.stringify(options);
  let f = cache.get(key);
  if (f === undefined) cache.set(key, (f = new Intl.NumberFormat(locale, options)));
  return f;
}

/** A count or an exact amount: `1,234.5`. */
export function num(n: number, maxFraction = 1): string {
  return numberFormat({ maximumFractionDigits: maxFraction }).format(n);
}

/** GPU seconds, exactly: `1,234.5 s`. */
export function seconds(s: number): string {
  return numberFormat({ style: "unit", unit: "second", unitDisplay: "narrow", maximumFractionDigits: 1 }).format(s);
}

/** GPU seconds, readably: `12.4 min`, `2.5 h`, `45 s`. */
export function gpuTime(s: number): string {
  const unit = (u: string, v: number) =>
    numberFormat({ style: "unit", unit: u, unitDisplay: "short", maximumFractionDigits: 1 }).format(v);
  if (Math.abs(s) < 120) return unit("second", s);
  if (Math.abs(s) < 7200) return unit("minute", s / 60);
  return unit("hour", s / 3600);
}

export function percent(fraction: number): string {
  return numberFormat({ style: "percent", maximumFractionDigits: 0 }).format(fraction);
}

/** An amount in micro-units of `currency` (used only where the server sent no display string). */
export function money(micros: number, currency: string): string {
  try {
    return numberFormat({ style: "currency", currency, maximumFractionDigits: 2 }).format(micros / 1e6);
  } catch {
    return `${num(micros / 1e6, 2)} ${currency}`;
  }
}

/** The display string the server sent for a money field, else one made here. */
export function shown(
  display: Readonly<Record<string, string>>,
  field: string,
  micros: number,
  currency: string,
): string {
  return display[field] ?? money(micros, currency);
}

const dateTime = new Intl.DateTimeFormat(locale, { dateStyle: "medium", timeStyle: "short" });
const timeOnly = new Intl.DateTimeFormat(locale, { timeStyle: "medium" });
const dateOnly = new Intl.DateTimeFormat(locale, { dateStyle: "medium" });
const zone = new Intl.DateTimeFormat(locale, { timeZoneName: "short" });

/** An instant in the browser's time zone: `5 Dec 2026, 14:03`. */
export function when(iso: string | null | undefined): string {
  return iso ? dateTime.format(new Date(iso)) : "—";
}
export function clock(iso: string): string {
  return timeOnly.format(new Date(iso));
}
export function day(date: Date): string {
  return dateOnly.format(date);
}
/** The browser's time zone's short name (`CET`, `GMT+1`). */
export function zoneName(): string {
  return zone.formatToParts(new Date()).find((p) => p.type === "timeZoneName")?.value ?? "";
}

/** A countdown: `3:04:05` (hours unbounded), `0:00:00` when past. */
export function countdown(ms: number): string {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return `${h}:${String(m).padStart(2, "0")}:${String(s).padStart(2, "0")}`;
}

/** How long ago, in words: `12 s ago`, `3 min ago`. */
const relative = new Intl.RelativeTimeFormat(locale, { numeric: "auto", style: "short" });
export function ago(iso: string | null | undefined, now: number): string {
  if (!iso) return "never";
  const s = Math.round((new Date(iso).getTime() - now) / 1000);
  if (Math.abs(s) < 90) return relative.format(s, "second");
  if (Math.abs(s) < 5400) return relative.format(Math.round(s / 60), "minute");
  return relative.format(Math.round(s / 3600), "hour");
}
