// Human output. Everything here is pure (a `now` is passed in) so it can be unit-tested.
import { formatSeconds } from "@gpupool/core";
import type { Diagnosis, Identity, Lease, PoolState, Quota } from "@gpupool/sdk";
import { blockerWords, money } from "./render-money.js";

/** Seconds as a short human amount: 45s, 3m 30s, 1h 5m ("?" when the server sent none). */
export function secs(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "?";
  return formatSeconds(seconds);
}

/** A span as "3h 12m", "12m 5s", "45s", "2d 4h" (two units at most). */
export function span(totalSeconds: number): string {
  const s = Math.floor(Math.abs(totalSeconds));
  if (s < 60) return `${s}s`;
  const [d, h, m] = [Math.floor(s / 86_400), Math.floor((s % 86_400) / 3600), Math.floor((s % 3600) / 60)];
  if (d > 0) return h === 0 ? `${d}d` : `${d}d ${h}h`;
  if (h > 0) return m === 0 ? `${h}h` : `${h}h ${m}m`;
  const rest = s % 60;
  return rest === 0 ? `${m}m` : `${m}m ${rest}s`;
}

/** "in 3h 12m", "5m ago", "now". */
export function relative(date: Date, now: Date): string {
  const diff = (date.getTime() - now.getTime()) / 1000;
  if (Math.abs(diff) < 1) return "now";
  return diff > 0 ? `in ${span(diff)}` : `${span(diff)} ago`;
}

/** A time in the local time zone, named, e.g. "Mon, Nov 24, 14:02 CET". */
export function localTime(date: Date): string {
  return date.toLocaleString(undefined, {
    weekday: "short",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    timeZoneName: "short",
  });
}

export function identityLabel(identity: Identity): string {
  if (identity.kind === ("" as Identity["kind"])) return "(nobody)";
  return `${identity.kind}:${identity.id} (tier ${identity.tier})`;
}

export function width(): number {
  const columns = process.stdout.columns;
  return typeof columns === "number" && columns > 0 ? Math.max(60, Math.min(columns, 120)) : 100;
}

/** Word-wraps `text` to `cols`, indenting continuation lines by `indent` spaces. */
export function wrap(text: string, cols: number, indent: number): string {
  const words = text.split(/\s+/).filter((w) => w !== "");
  const lines: string[] = [];
  let line = "";
  for (const word of words) {
    if (line !== "" && line.length + 1 + word.length > cols - indent) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  if (line !== "") lines.push(line);
  return lines.join(`\n${" ".repeat(indent)}`);
}

/** Left-aligned columns separated by two spaces. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

function bar(left: number, total: number): string {
  if (!(total > 0) || !Number.isFinite(left)) return "";
  const share = Math.max(0, Math.min(1, left / total));
  const filled = Math.round(share * 20);
  return `[${"█".repeat(filled)}${"░".repeat(20 - filled)}] ${Math.round(share * 100)}% left`;
}

export function renderQuota(q: Quota, now: Date): string {
  const lines = [`GPU quota of ${identityLabel(q.identity)}`];
  const row = (label: string, value: string) => lines.push(`  ${label.padEnd(10)}${value}`);
  row("left", `${secs(q.left)} of ${secs(q.quota)}  ${bar(q.left, q.quota)}  (${q.left} of ${q.quota} s)`);
  row("used", `${secs(q.used)}  (time actually held, rounded up to whole seconds × size cost)`);
  row(
    "reserved",
    `${secs(q.reserved)}${q.reserved > 0 ? "  (held by calls in progress; the unused part is refunded)" : ""}`,
  );
  if (q.bonus > 0) row("bonus", `${secs(q.bonus)} added to this window by the operator`);
  if (q.resetsAt === null || q.windowStartedAt === null) {
    row(
      "window",
      `${secs(q.window)}, not started: it opens at the first GPU grant and resets ${secs(q.window)} later (not at midnight)`,
    );
  } else {
    row("window", `${secs(q.window)}, started ${localTime(q.windowStartedAt)} (${relative(q.windowStartedAt, now)})`);
    row("resets", `${localTime(q.resetsAt)} (${relative(q.resetsAt, now)})`);
  }
  const runs = q.runs === null ? "" : `   runs this window ${q.runs}${q.maxRuns === null ? "" : ` of ${q.maxRuns}`}`;
  row("limits", `longest call ${secs(q.maxDuration)}   queue priority ${q.priority}${runs}`);
  // Credits pay past the quota only with overage on: say so beside the quota (a server before billing sends neither).
  const { credits, overage } = q as Partial<Pick<Quota, "credits" | "overage">>;
  if (credits !== undefined && credits !== null) {
    const c = (micros: number) => money(micros, credits.currency);
    row(
      "credits",
      `${c(credits.availableMicros)} available (${c(credits.balanceMicros)} balance, ${c(credits.heldMicros)} held)`,
    );
  }
  if (overage !== undefined && overage !== null) {
    const head = "  overage   ";
    const cap =
      overage.monthlyCapMicros === null ? "" : `, cap ${money(overage.monthlyCapMicros, overage.currency)} a month`;
    const text =
      overage.blockedBy === null
        ? `on: credits pay for calls past the quota${cap}`
        : `off: ${blockerWords(overage.blockedBy, q.identity.tier)}`;
    lines.push(head + wrap(text, width(), head.length));
  }
  return lines.join("\n");
}

const STEP_MARK: Readonly<Record<string, string>> = { ok: "✓", fallback: "↳", rejected: "✗", info: "·" };
const BUCKET_NAMES: Readonly<Record<string, string>> = {
  gpu_quota: "GPU quota",
  gpuQuota: "GPU quota",
  credits: "credits",
  overage: "overage",
  paid_hardware: "paid hardware",
  paidHardware: "paid hardware",
};

function text(value: unknown, fallback = "-"): string {
  if (typeof value === "string") return value === "" ? fallback : value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return value === null || value === undefined ? fallback : JSON.stringify(value);
}

export function renderDiagnosis(d: Diagnosis, now: Date): string {
  const cols = width();
  const out: string[] = [];
  out.push("Who is charged, step by step");
  d.steps.forEach((s, i) => {
    const head = `  ${i + 1}. ${STEP_MARK[s.outcome] ?? "·"} ${s.step} (${s.outcome}): `;
    out.push(head + wrap(s.detail, cols, head.length));
  });
  out.push(
    d.identity === null
      ? "  → charged to nobody: the request is refused before any identity is charged"
      : `  → charged to ${identityLabel(d.identity)}`,
  );
  if (d.request !== null) {
    out.push("", "Request");
    out.push(
      `  ${secs(d.request.duration)} on ${d.request.size} (cost ×${d.request.cost}) reserves ${secs(d.request.reserves)} of GPU quota`,
    );
  }
  if (d.quota !== null) out.push("", renderQuota(d.quota, now));
  if (d.buckets.length > 0) {
    out.push("", "Billing buckets");
    const nameOf = (bucket: string) => BUCKET_NAMES[bucket] ?? bucket;
    const nameWidth = Math.max(...d.buckets.map((b) => nameOf(b.bucket).length));
    for (const b of d.buckets) {
      const head = `  ${b.applies ? "✓ applies       " : "✗ does not apply"}  ${nameOf(b.bucket).padEnd(nameWidth)}  `;
      out.push(head + wrap(b.detail, cols, head.length));
    }
  }
  out.push("", "Verdict");
  const v = d.verdict;
  if (v.outcome === "granted") out.push("  GRANTED: a lease asked for now would get a GPU at once.");
  else if (v.outcome === "admitted")
    out.push(
      "  ADMITTED: the quota allows it; this replica does not run the scheduler, so whether a GPU is free right now is decided by the leading replica.",
    );
  else if (v.outcome === "queued") {
    const why = v.reason === "concurrency" ? "the app is at its concurrency limit" : "every GPU slot that fits is busy";
    const bound = v.etaMaxS === null || v.etaMaxS === v.etaS ? "" : `, ${secs(v.etaMaxS)} at most`;
    const eta = v.etaS === null ? "" : `, about ${secs(v.etaS)}${bound}`;
    out.push(`  QUEUED: it would wait at position ${v.position ?? "?"} (${why}${eta}). Queue time is never charged.`);
  } else {
    const p = v.problem;
    const head = `  REJECTED [${p?.code ?? "unknown"}]: `;
    out.push(head + wrap(p?.detail ?? "no detail", cols, head.length));
  }
  if (d.causes.length > 0) {
    out.push("", "Likely causes and fixes (most likely first)");
    for (const c of d.causes) {
      const head = `  ${c.rank}. `;
      out.push(head + wrap(c.cause, cols, head.length));
      out.push(`     fix: ${wrap(c.fix, cols, 10)}`);
    }
  }
  return out.join("\n");
}

function leaseWhen(l: Lease, now: Date): string {
  if (l.status === "active" && l.deadline !== null) return `deadline ${relative(l.deadline, now)}`;
  if (l.status === "queued" && l.queuedAt !== null) return `queued ${relative(l.queuedAt, now)}`;
  if (l.endedAt !== null) return `ended ${relative(l.endedAt, now)}`;
  const at = l.grantedAt ?? l.queuedAt;
  return at === null ? "" : relative(at, now);
}

export function renderLeases(leases: readonly Lease[], now: Date): string {
  if (leases.length === 0) return "No leases.";
  const rows = leases.map((l) => [
    l.id,
    l.status === "queued" && l.position !== null ? `queued #${l.position}` : l.status,
    `${l.identity.kind}:${l.identity.id}`,
    l.identity.tier,
    l.size,
    secs(l.duration),
    l.heldMs === null ? "-" : secs(l.heldMs / 1000),
    secs(l.charged),
    secs(l.refunded),
    l.device === null ? "-" : `${l.device.node}/${l.device.index}`,
    leaseWhen(l, now),
  ]);
  return table(
    ["ID", "STATUS", "CHARGED TO", "TIER", "SIZE", "DURATION", "HELD", "CHARGED", "REFUNDED", "DEVICE", "WHEN"],
    rows,
  );
}

export function renderPool(state: PoolState, now: Date): string {
  const { nodes, devices, active, queue } = state;
  const { total, busy } = state.slots;
  const queued = state.queued.total;
  const out = [
    `Pool: ${nodes.length} node(s), ${devices.length} GPU(s), ${total} slots (${busy} busy, ${total - busy} free), ${queued} queued`,
    "",
  ];
  if (!state.leader) {
    out.push(
      "This replica does not lead the pool: what follows is what the database records (the queue in arrival order; the leader orders it by priority). Its /readyz says leader: true.",
      "",
    );
  }
  if (nodes.length > 0) {
    out.push(
      table(
        ["NODE", "KIND", "STATE", "LAST HEARTBEAT", "AGENT"],
        nodes.map((n) => [
          text(n.name),
          text(n.kind),
          text(n.state),
          n.heartbeatAt === null ? "-" : relative(n.heartbeatAt, now),
          text(n.agentUrl),
        ]),
      ),
      "",
    );
  }
  if (devices.length === 0)
    out.push("No GPUs registered: start an agent (gpupool agent), or configure pool.simulated.");
  else {
    out.push(
      table(
        ["NODE", "GPU", "NAME", "MEMORY", "SLOTS"],
        devices.map((d) => [
          text(d.node),
          text(d.index),
          text(d.name),
          `${Math.round(d.memoryMb / 1024)} GB`,
          d.slots.map((h) => (h === null ? "free" : h)).join(" | "),
        ]),
      ),
    );
  }
  out.push("", `Active leases (${active.length})`);
  if (active.length > 0) {
    out.push(
      table(
        ["ID", "APP", "CHARGED TO", "SIZE", "DEVICE", "DEADLINE"],
        // node/index, as `gpupool leases` names a device.
        active.map((a) => [
          text(a.id),
          text(a.app),
          text(a.identity),
          text(a.size),
          `${text(a.node)}/${text(a.device)}`,
          a.deadline === null ? "-" : relative(a.deadline, now),
        ]),
      ),
    );
  }
  out.push("", `Queue (${queued})`);
  if (queue.length > 0) {
    out.push(
      table(
        ["POS", "LEASE", "APP", "CHARGED TO", "SLOTS", "WAITING FOR"],
        queue.map((q) => [
          text(q.position),
          text(q.lease),
          text(q.app),
          text(q.identity),
          text(q.slots),
          text(q.reason),
        ]),
      ),
    );
    // The server lists the first in line; the rest are counted (GET /v1/admin/queue/entries pages them).
    if (queued > queue.length) out.push(`… and ${queued - queue.length} more in line`);
  }
  return out.join("\n");
}
