import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { iso } from "../src/http/views.js";

describe("wire format", () => {
  it("times are exactly Date#toISOString, whatever the millisecond, second or year", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.integer({ min: 0, max: 253_402_300_799_999 }),
          fc.integer({ min: 1_700_000_000_000, max: 1_900_000_000_000 }),
        ),
        (ms) => {
          expect(iso(ms)).toBe(new Date(ms).toISOString());
          // Asked again (now from the cache of seconds) and for its neighbours in the same second.
          expect(iso(ms)).toBe(new Date(ms).toISOString());
          expect(iso(ms - (ms % 1000))).toBe(new Date(ms - (ms % 1000)).toISOString());
        },
      ),
      { numRuns: 2000 },
    );
    for (const ms of [0, 1, 9, 10, 99, 100, 999, 1000, 253_402_300_799_999, 253_402_300_800_000, -1, 1.5]) {
      expect(iso(ms), String(ms)).toBe(new Date(ms).toISOString());
    }
    expect(iso(null)).toBeNull();
  });
});
