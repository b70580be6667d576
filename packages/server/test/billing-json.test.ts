import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { USAGE_WALLET, encodeCallWallet, encodeShares, sharesJson } from "../src/storage/billing-tables.js";

/** The wallet's two JSON columns are encoded by hand; they must read back as JSON.stringify's text does. */

const id = fc.oneof(
  fc.stringMatching(/^[a-z]{2,3}_[0-9A-Za-z_-]{1,30}$/),
  fc.string(), // anything at all, quotes, backslashes and control characters included
  fc.string({ unit: "grapheme" }),
);
const micros = fc.oneof(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fc.double());
const share = fc.record({ grantId: id, micros, holdTxId: id }, { requiredKeys: ["grantId", "micros"] });
const entry = fc.record({
  id,
  at: fc.oneof(fc.integer({ min: 0, max: 4_102_444_800_000 }), fc.double()),
  kind: fc.constantFrom("hold" as const, "spend" as const, "release" as const, "expire" as const),
  amountMicros: micros,
  grantId: id,
});

describe("the wallet's JSON columns", () => {
  it("write a hold's shares as the same text as JSON.stringify", () => {
    fc.assert(
      fc.property(fc.array(share, { maxLength: 5 }), (shares) => {
        expect(encodeShares(shares)).toBe(JSON.stringify(shares));
      }),
      { numRuns: 2_000 },
    );
  });

  it("write a call's wallet transactions as the same text as JSON.stringify of their tuples", () => {
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 6 }), (entries) => {
        const text = encodeCallWallet(entries);
        expect(text).toBe(JSON.stringify(entries.map((e) => [e.id, e.at, e.kind, e.amountMicros, e.grantId])));
        // And the column reads back what was written (as JSON can carry it: no -0, NaN or infinities).
        expect(JSON.stringify(USAGE_WALLET.decode(text))).toBe(JSON.stringify(entries));
      }),
      { numRuns: 2_000 },
    );
  });

  it("store no text when nothing was held", () => {
    expect(sharesJson("hold_shares").encode([], "sqlite")).toBeNull();
    expect(USAGE_WALLET.encode([], "sqlite")).toBeNull();
  });
});
