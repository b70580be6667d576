const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses a duration written as a number of seconds or a string such as "60s", "3.5m", "24h",
 * "500ms". Returns milliseconds, or an error message naming what is wrong.
 */
export function parseDurationMs(value: unknown): { ok: true; ms: number } | { ok: false; message: string } {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) return { ok: false, message: "must be a non-negative number of seconds" };
    return { ok: true, ms: Math.round(value * 1000) };
  }
  if (typeof value !== "string")
    return { ok: false, message: 'must be a duration such as "60s", "3.5m" or "24h", or a number of seconds' };
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value);
  if (!match) return { ok: false, message: `"${value}" is not a duration; write e.g. "60s", "3.5m", "24h"` };
  const amount = Number(match[1]);
  const unit = match[2] ?? "s";
  const ms = Math.round(amount * (UNIT_MS[unit] ?? 1000));
  return { ok: true, ms };
}

/** Seconds as a short human string: 45s, 3.5m, 1h 5m. */
export function formatSeconds(seconds: number): string {
  const s = Math.max(0, Math.round(seconds * 10) / 10);
  if (s < 60) return `${s}s`;
  // Round to the unit shown first, then split, so 119.5 s is "2m", never "1m 60s".
  if (s < 3600 - 0.5) {
    const total = Math.round(s);
    const m = Math.floor(total / 60);
    const rest = total - m * 60;
    return rest === 0 ? `${m}m` : `${m}m ${rest}s`;
  }
  const totalMin = Math.round(s / 60);
  const h = Math.floor(totalMin / 60);
  const m = totalMin - h * 60;
  return m === 0 ? `${h}h` : `${h}h ${m}m`;
}

export function msToSeconds(ms: number): number {
  return Math.round(ms) / 1000;
}
