// Human output of billing and usage (`gpupool me`, `billing`, `usage`, `admin wallet`). Pure: a
// `now` is passed in. Money arrives in micro-units; it is shown with the currency's symbol.
import type { Credits, Me, Overage, UsageRecord, UsageSummary, UsageTotals, Wallet } from "@gpupool/sdk";
import { localTime, relative, secs, table, width, wrap } from "./render.js";
import { blockerWords, money } from "./render-money.js";

export { blockerWords, money };

export function creditsLine(c: Credits): string {
  return `balance ${money(c.balanceMicros, c.currency)}, held ${money(c.heldMicros, c.currency)} by calls in flight, available ${money(c.availableMicros, c.currency)}`;
}

/** The overage state in a few lines: on (cap, spent, held, price) or off and why. */
export function overageLines(o: Overage, tier: string, now: Date): string[] {
  const m = (micros: number | null) => money(micros, o.currency);
  const month = `this month (${o.month}, ends ${localTime(o.monthEndsAt)}, ${relative(o.monthEndsAt, now)})`;
  const lines: string[] = [];
  if (o.blockedBy === null && o.enabled) {
    const cap = o.monthlyCapMicros === null ? "no cap" : `cap ${m(o.monthlyCapMicros)} a month`;
    lines.push(`on: calls past the quota are paid from credits, ${cap}`);
    lines.push(`spent ${m(o.spentMicros)} + held ${m(o.heldMicros)} ${month}`);
    if (o.monthlyCapMicros !== null) {
      const left = Math.max(0, o.monthlyCapMicros - o.spentMicros - o.heldMicros);
      lines.push(`${m(left)} of the cap left; at the cap a call past the quota is refused (402 spend_cap_reached)`);
    }
  } else {
    lines.push(`off: ${blockerWords(o.blockedBy ?? "not_opted_in", tier)}`);
    if (o.spentMicros > 0 || o.heldMicros > 0)
      lines.push(`spent ${m(o.spentMicros)} + held ${m(o.heldMicros)} ${month}`);
  }
  if (o.available) {
    lines.push(
      `price ${m(o.pricePerGpuMinuteMicros)} per GPU-minute at cost ×1 (a size of cost ×2, e.g. xlarge, pays twice that)`,
    );
  }
  return lines;
}

export function renderMe(me: Me, now: Date): string {
  const { user, quota: q, credits } = me;
  const out = [`${user.name} (${user.id}), tier ${user.tier}`, ""];
  const cols = width();
  const row = (label: string, lines: readonly string[]) =>
    lines.forEach((line, i) => out.push(`  ${(i === 0 ? label : "").padEnd(10)}${wrap(line, cols, 12)}`));
  const reset =
    q.resetsAt === null
      ? `the window opens at the first GPU grant and resets ${secs(q.window)} later`
      : `resets ${localTime(q.resetsAt)} (${relative(q.resetsAt, now)})`;
  const reserved = q.reserved > 0 ? `, ${secs(q.reserved)} reserved by calls in flight` : "";
  row("quota", [`${secs(q.left)} left of ${secs(q.quota)} (${q.left} of ${q.quota} s)${reserved}`, reset]);
  row("credits", [creditsLine(credits)]);
  row("overage", overageLines(me.overage, user.tier, now));
  return out.join("\n");
}

export function renderWallet(w: Wallet, now: Date): string {
  const m = (micros: number) => money(micros, w.currency);
  const out = [
    `Wallet of ${w.user}: balance ${m(w.balanceMicros)}, held ${m(w.heldMicros)}, available ${m(w.availableMicros)}`,
    "",
  ];
  if (w.grants.length === 0) out.push("No grants yet.");
  else {
    out.push("Grants, in the order they are spent");
    out.push(
      table(
        ["ID", "CATEGORY", "AMOUNT", "REMAINING", "HELD", "PRIORITY", "EXPIRES", "SOURCE"],
        w.grants.map((g) => [
          g.id,
          g.category,
          m(g.amountMicros),
          m(g.remainingMicros),
          m(g.heldMicros),
          String(g.priority),
          g.expiresAt === null ? "never" : `${g.expiresAt.toISOString().slice(0, 10)} (${relative(g.expiresAt, now)})`,
          g.source,
        ]),
      ),
    );
  }
  out.push("", `Transactions (latest first, ${w.transactions.length})`);
  if (w.transactions.length > 0) {
    out.push(
      table(
        ["ID", "WHEN", "KIND", "AMOUNT", "GRANT", "LEASE"],
        w.transactions.map((t) => [t.id, relative(t.at, now), t.kind, m(t.amountMicros), t.grantId, t.leaseId ?? "-"]),
      ),
    );
  }
  return out.join("\n");
}

export function renderUsageRecords(records: readonly UsageRecord[], now: Date): string {
  if (records.length === 0) return "No usage records in this range.";
  const rows = records.map((r) => [
    r.id,
    relative(r.endedAt, now),
    `${r.identity.kind}:${r.identity.id}`,
    r.app ?? "-",
    r.size,
    r.problem === null ? r.status : `${r.status} (${r.problem})`,
    secs(r.heldMs / 1000),
    secs(r.chargedS),
    secs(r.quotaS),
    secs(r.overageS),
    money(r.chargedMicros, r.currency),
  ]);
  const total = (f: (r: UsageRecord) => number) => records.reduce((sum, r) => sum + f(r), 0);
  const currency = records[0]?.currency ?? "USD";
  return [
    table(
      ["LEASE", "ENDED", "CHARGED TO", "APP", "SIZE", "STATUS", "HELD", "CHARGED", "QUOTA", "OVERAGE", "PAID"],
      rows,
    ),
    "",
    `${records.length} record(s): charged ${secs(total((r) => r.chargedS))} (quota ${secs(total((r) => r.quotaS))}, overage ${secs(total((r) => r.overageS))}), paid ${money(
      total((r) => r.chargedMicros),
      currency,
    )} from credits`,
  ].join("\n");
}

function refusals(t: UsageTotals): string {
  const parts = Object.entries(t.refusals)
    .filter(([, n]) => n > 0)
    .map(([code, n]) => `${code} ${n}`);
  return parts.length === 0 ? "-" : parts.join(", ");
}

export function renderUsageSummary(s: UsageSummary): string {
  const row = (key: string, t: UsageTotals) => [
    key,
    String(t.calls),
    String(t.granted),
    secs(t.heldS),
    secs(t.chargedS),
    secs(t.quotaS),
    secs(t.overageS),
    money(t.chargedMicros, s.currency),
    refusals(t),
  ];
  const header = [
    s.groupBy.toUpperCase(),
    "CALLS",
    "GRANTED",
    "HELD",
    "CHARGED",
    "QUOTA",
    "OVERAGE",
    "PAID",
    "REFUSALS",
  ];
  return [
    `Usage from ${s.from.toISOString()} to ${s.to.toISOString()}, by ${s.groupBy}`,
    "",
    table(header, [...s.groups.map((g) => row(g.key === "" ? "-" : g.key, g)), row("total", s.total)]),
  ].join("\n");
}
