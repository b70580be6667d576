import { describe, expect, it } from "vitest";
import { newOrderedId } from "../src/secrets.js";

describe("time-ordered ids", () => {
  it("are unique, of the documented form, and sort in the order they were made", () => {
    // More ids than one pool of random bytes serves (683), some sharing a millisecond.
    const made: string[] = [];
    for (let i = 0; i < 3_000; i++) made.push(newOrderedId("wt", 1_765_000_000_000 + Math.floor(i / 7)));
    for (const id of made) expect(id).toMatch(/^wt_[0-9a-z]{9}[0-9a-z]{3}[A-Za-z0-9_-]{8}$/);
    expect(new Set(made).size).toBe(made.length);
    expect([...made].sort()).toEqual(made);
    // The random parts are not repeated either (48 bits each: a repeat among 3,000 is ~1.6e-8 likely).
    expect(new Set(made.map((id) => id.slice(-8))).size).toBe(made.length);
  });

  it("carry the time of their millisecond, so a later id sorts after an earlier one", () => {
    const a = newOrderedId("ls", 1_000);
    const b = newOrderedId("ls", 2_000);
    expect(a.slice(3, 12)).toBe((1_000).toString(36).padStart(9, "0"));
    expect(a < b).toBe(true);
  });
});
