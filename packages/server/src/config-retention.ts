import { parseDurationMs } from "@gpupool/core";
import { z } from "zod";

/**
 * `retention:` — how long what has ended is kept before the background job deletes it (see
 * use-cases/maintenance/retention.ts). A duration ("30d", "12h", seconds as a number), or
 * `forever` (null) to keep it. Every problem is reported with its path, with the rest of the
 * configuration's.
 */
export interface RetentionConfig {
  /** Ended leases, counted from their end; null: kept forever. A lease is deleted only once its usage record exists. */
  readonly leasesMs: number | null;
  /** Usage records (the bill), counted from the lease's end; null (the default): kept forever. */
  readonly usageMs: number | null;
  /** Edge sessions and dashboard sessions and sign-in codes, counted from their expiry or revocation. */
  readonly sessionsMs: number | null;
  /** Ledgers that hold nothing, counted from the end of their identity's last window. */
  readonly ledgersMs: number | null;
  /** How often the job runs. */
  readonly intervalMs: number;
  /** Rows deleted per transaction, at most. */
  readonly batchRows: number;
  /** The pause between two batches (others' transactions run meanwhile). */
  readonly pauseMs: number;
}

const DAY_MS = 86_400_000;
/** Idempotency-Keys name their lease for a day (IDEMPOTENCY_KEY_TTL_MS): a retry must still find it. */
const MIN_LEASES_MS = DAY_MS;

const FOREVER = ["forever", "never", "null"];

/** `value` as milliseconds, or an issue on `ctx` saying why not (`hint` appended to the message). */
function toMs(value: string | number, ctx: { addIssue(issue: { code: "custom"; message: string }): void }, hint = "") {
  const parsed = parseDurationMs(value);
  if (parsed.ok) return parsed.ms;
  ctx.addIssue({ code: "custom", message: `${parsed.message}${hint}` });
  return z.NEVER;
}

/** A duration, or `forever`/null (kept). No upper bound: years are fine. */
const kept = (fallback: string | null) =>
  z
    .union([z.string(), z.number(), z.null()])
    .default(fallback)
    .transform((value, ctx): number | null =>
      value === null || (typeof value === "string" && FOREVER.includes(value.trim().toLowerCase()))
        ? null
        : toMs(value, ctx, ' (or "forever")'),
    );

const every = (fallback: string) =>
  z
    .union([z.string(), z.number()])
    .default(fallback)
    .transform((value, ctx) => toMs(value, ctx));

export const retentionSchema = z
  .strictObject({
    leases: kept("30d"),
    usage: kept(null),
    sessions: kept("7d"),
    ledgers: kept("7d"),
    interval: every("1h"),
    batch: z.number().int().min(1).max(10_000).default(1_000),
    pause: every("100ms"),
  })
  .prefault({});

export type RetentionInput = z.output<typeof retentionSchema>;

/** The normalized retention settings; pushes what is wrong onto `problems`. */
export function normalizeRetention(c: RetentionInput, problems: string[]): RetentionConfig {
  if (c.leases !== null && c.leases < MIN_LEASES_MS)
    problems.push(
      'retention.leases: must be at least 1 day (an Idempotency-Key names its lease for a day), or "forever"',
    );
  if (c.usage !== null && (c.leases === null || c.usage < c.leases))
    problems.push(
      "retention.usage: must be at least retention.leases (usage records are the bill; a lease is deleted only after its record)",
    );
  if (c.interval < 60_000) problems.push("retention.interval: must be at least 1 minute");
  if (c.pause > 60_000) problems.push("retention.pause: must be at most 1 minute");
  return {
    leasesMs: c.leases,
    usageMs: c.usage,
    sessionsMs: c.sessions,
    ledgersMs: c.ledgers,
    intervalMs: c.interval,
    batchRows: c.batch,
    pauseMs: c.pause,
  };
}
