import { describe, expect, it } from "vitest";
import { formatSeconds, msToSeconds, parseDurationMs } from "../src/index.js";

describe("parseDurationMs", () => {
  it.each([
    ["60s", 60_000],
    ["500ms", 500],
    ["3.5m", 210_000],
    ["24h", 86_400_000],
    ["1d", 86_400_000],
    ["90", 90_000],
    [" 60 s ", 60_000],
    ["0s", 0],
    ["1.0005s", 1001],
  ])("parses %j", (text, ms) => {
    expect(parseDurationMs(text)).toEqual({ ok: true, ms });
  });

  it("treats a number as seconds and rounds to whole milliseconds", () => {
    expect(parseDurationMs(60)).toEqual({ ok: true, ms: 60_000 });
    expect(parseDurationMs(0.0015)).toEqual({ ok: true, ms: 2 });
    expect(parseDurationMs(0)).toEqual({ ok: true, ms: 0 });
  });

  it.each([-1, Number.NaN, Number.POSITIVE_INFINITY])("refuses the number %s", (n) => {
    const r = parseDurationMs(n);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.message).toMatch(/non-negative/);
  });

  it.each(["", "abc", "-5s", "5 minutes", "1e3", "5x", "s", "1.s", ".5s", "60S"])(
    "refuses the string %j and quotes it",
    (text) => {
      const r = parseDurationMs(text);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.message).toContain(`"${text}"`);
    },
  );

  it.each([null, undefined, {}, [], true])("refuses the non-duration %j", (value) => {
    const r = parseDurationMs(value);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.message).toMatch(/duration/);
  });
});

describe("formatSeconds", () => {
  it.each([
    [0, "0s"],
    [45, "45s"],
    [59.94, "59.9s"],
    [1.25, "1.3s"],
    [60, "1m"],
    [90, "1m 30s"],
    [210, "3m 30s"],
    [1500, "25m"],
    [3599, "59m 59s"],
    [3600, "1h"],
    [3900, "1h 5m"],
    [86_400, "24h"],
    [-5, "0s"],
  ])("formats %s", (seconds, text) => {
    expect(formatSeconds(seconds)).toBe(text);
  });

  it("never writes 60 in the seconds or minutes part (rounding carries into the next unit)", () => {
    // 119.5 s is 1m 59.5s; rounding the seconds part must carry to "2m", not print "1m 60s".
    // Same for hours: 7170 s is 1h 59.5m. Reachable from messages, e.g. "resets ... (in 23h 60m)".
    for (const seconds of [119.5, 179.6, 3599.5, 7170, 7199, 86_370]) {
      const text = formatSeconds(seconds);
      expect(text, `formatSeconds(${seconds})`).not.toMatch(/\b60[sm]\b/);
    }
  });
});

describe("msToSeconds", () => {
  it("converts and rounds to whole milliseconds first", () => {
    expect(msToSeconds(1500)).toBe(1.5);
    expect(msToSeconds(0)).toBe(0);
    expect(msToSeconds(1234.6)).toBe(1.235);
  });
});
