import { afterEach, describe, expect, it } from "vitest";
import type { TestServer } from "./harness.js";
import { ADMIN, lease } from "./harness.js";
import { ManualClock, T0, billingConfig, billingServer, payingUser, priceMs } from "./billing-fixture.js";

/** What the dashboard's call history reads from the usage ledger: newest first, what each call cost, app names. */

let t: TestServer;
afterEach(async () => {
  await t?.close();
});

const RANGE = `from=${new Date(T0 - 86_400_000).toISOString()}&to=${new Date(T0 + 30 * 86_400_000).toISOString()}`;

/** Every page of `query`, following next_cursor; the ids in the order they came. */
async function pages(token: string, query: string, limit: number): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let cursor: string | null = null;
  let count = 0;
  do {
    const r: any = await t.call(
      "GET",
      `/v1/usage?${RANGE}&limit=${limit}${query}${cursor ? `&cursor=${cursor}` : ""}`,
      {
        token,
      },
    );
    expect(r.status).toBe(200);
    ids.push(...r.body.records.map((x: any) => x.id));
    cursor = r.body.next_cursor;
    count++;
  } while (cursor !== null && count < 100);
  return { ids, pages: count };
}

describe("GET /v1/usage?order=desc", () => {
  it("pages newest first with no duplicate and no gap (also among records that ended at the same instant), the reverse of oldest first", async () => {
    const clock = new ManualClock();
    t = await billingServer(billingConfig(), clock);
    const u = await payingUser(t, "alice", { quotaS: 1000 });
    for (let i = 0; i < 17; i++) {
      const l = await lease(t, u.token, { duration: 2 });
      await t.call("POST", `/v1/leases/${l.body.id}/release`, { token: u.token, body: {} });
      if (i % 3 === 0) clock.advance(1000); // several end at the same ms
    }
    const asc = await pages(u.token, "", 4);
    const desc = await pages(u.token, "&order=desc", 4);
    expect(asc.ids).toHaveLength(17);
    expect(new Set(desc.ids).size).toBe(17);
    expect(desc.ids).toEqual([...asc.ids].reverse());
    expect(desc.pages).toBe(5);
    const first = await t.call("GET", `/v1/usage?${RANGE}&order=desc&limit=1`, { token: u.token });
    const ends = (await t.call("GET", `/v1/usage?${RANGE}&limit=1000`, { token: u.token })).body.records.map(
      (r: any) => r.ended_at,
    );
    expect(first.body.records[0].ended_at).toBe(ends[ends.length - 1]);
    // A cursor belongs to its order: one of the other order is refused, not misread.
    const ascCursor = (await t.call("GET", `/v1/usage?${RANGE}&limit=2`, { token: u.token })).body.next_cursor;
    const wrong = await t.call("GET", `/v1/usage?${RANGE}&order=desc&cursor=${ascCursor}`, { token: u.token });
    expect(wrong.status).toBe(400);
    expect(wrong.body.code).toBe("invalid_request");
    const descCursor = first.body.next_cursor;
    expect((await t.call("GET", `/v1/usage?${RANGE}&cursor=${descCursor}`, { token: u.token })).status).toBe(400);
    expect((await t.call("GET", `/v1/usage?${RANGE}&order=newest`, { token: u.token })).status).toBe(400);
    // The export streams in the order asked, too.
    const csv = await t.server.app.inject({
      method: "GET",
      url: `/v1/usage?${RANGE}&format=csv&order=desc`,
      headers: { authorization: `Bearer ${u.token}` },
    });
    const rows = csv.body.trimEnd().split("\r\n").slice(1);
    expect(rows.map((r) => r.split(",")[0])).toEqual(desc.ids);
  });
});

describe("cost in usage records", () => {
  it("says which bucket paid and what it cost in money: quota, quota and credits, credits, nothing", async () => {
    const clock = new ManualClock();
    t = await billingServer(billingConfig(), clock);
    const u = await payingUser(t, "alice", { quotaS: 5, credits: "1.00" });
    const call = async (duration: number, heldMs: number) => {
      const l = await lease(t, u.token, { duration });
      expect(l.status).toBe(201);
      clock.advance(heldMs);
      await t.call("POST", `/v1/leases/${l.body.id}/release`, { token: u.token, body: {} });
      return l.body.id as string;
    };
    const quotaOnly = await call(4, 4000); // 4 s of the 5 s quota
    const both = await call(4, 4000); // 1 s quota + 3 s credits
    const creditsOnly = await call(2, 2000); // the quota is spent
    const nothing = await call(2, 0); // released at once: nothing charged
    const records = (await t.call("GET", `/v1/usage?${RANGE}&limit=100`, { token: u.token })).body.records;
    const byId = new Map<string, any>(records.map((r: any) => [r.id, r]));
    expect(byId.get(quotaOnly).cost).toEqual({
      paid_by: "quota",
      amount_micros: 0,
      currency: "USD",
      display: { amount: "$0.00", gpu: "4 s quota" },
    });
    expect(byId.get(both).cost).toEqual({
      paid_by: "quota_and_credits",
      amount_micros: priceMs(3000),
      currency: "USD",
      display: { amount: "$0.005", gpu: "1 s quota + 3 s credits" },
    });
    expect(byId.get(creditsOnly).cost).toMatchObject({
      paid_by: "credits",
      amount_micros: priceMs(2000),
      display: { gpu: "2 s credits" },
    });
    expect(byId.get(nothing).cost).toMatchObject({
      paid_by: "nothing",
      amount_micros: 0,
      display: { gpu: "nothing charged" },
    });
    // The money is the record's charged_micros, which the wallet's spends add up to.
    for (const r of records) expect(r.cost.amount_micros).toBe(r.charged_micros);
    // The CSV export carries who paid and the cost as shown.
    const csv = await t.server.app.inject({
      method: "GET",
      url: `/v1/usage?${RANGE}&format=csv`,
      headers: { authorization: `Bearer ${u.token}` },
    });
    const [header, ...rows] = csv.body
      .trimEnd()
      .split("\r\n")
      .map((l) => l.split(","));
    const row = rows.find((r) => r[0] === both)!;
    expect(row[header!.indexOf("paid_by")]).toBe("quota_and_credits");
    expect(row[header!.indexOf("cost")]).toBe("$0.005");
  });
});

describe("app names", () => {
  it("a user sees the name of an app they only called (records and the by-app summary), nothing else of it", async () => {
    t = await billingServer();
    const alice = await payingUser(t, "alice", {});
    const bob = await payingUser(t, "bob", {});
    const app = await t.appFor("alices-app", alice.id);
    const l = await lease(t, app.key, { duration: 5 }, await t.ipToken(app.id, { user: bob.id }));
    expect(l.status).toBe(201);
    const own = await lease(t, bob.token, { duration: 5 });
    for (const id of [l.body.id, own.body.id])
      await t.call("POST", `/v1/leases/${id}/release`, { token: ADMIN, body: {} });
    const records = (await t.call("GET", `/v1/usage?${RANGE}`, { token: bob.token })).body.records;
    const viaApp = records.find((r: any) => r.id === l.body.id);
    expect(viaApp).toMatchObject({ app: app.id, app_name: "alices-app" });
    expect(records.find((r: any) => r.id === own.body.id)).toMatchObject({ app: null, app_name: null });
    const summary = await t.call("GET", `/v1/usage/summary?${RANGE}&group_by=app`, { token: bob.token });
    expect(summary.body.groups.find((g: any) => g.key === app.id)).toMatchObject({ name: "alices-app", calls: 1 });
    expect(summary.body.groups.find((g: any) => g.key === "")).toMatchObject({ name: null, calls: 1 });
    const byDay = await t.call("GET", `/v1/usage/summary?${RANGE}&group_by=day`, { token: bob.token });
    expect(byDay.body.groups.every((g: any) => g.name === null)).toBe(true);
    // Only the name: the app's owner-only figures stay the owner's.
    const stats = await t.call("GET", "/v1/apps/stats", { token: bob.token });
    expect(stats.body.apps).toEqual([]);
    expect(JSON.stringify(records)).not.toContain(alice.id);
  });
});
