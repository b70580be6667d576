// Every read of the pages: one query key and one decoder (the contract's) each.
import { useQuery } from "@tanstack/react-query";
import { Diagnosis, LeaseList, Me, UsagePage, UsageSummary, Wallet } from "@gpupool/contract";
import type { UsageRecord } from "@gpupool/contract";
import { api } from "./client.js";

export const keys = {
  me: ["me"] as const,
  wallet: ["wallet"] as const,
  diagnose: ["diagnose"] as const,
  queued: ["leases", "queued"] as const,
  usage: (range: string, app?: string) => ["usage", range, app ?? ""] as const,
  calls: (range: string, cursor?: string) => ["usage", "calls", range, cursor ?? ""] as const,
  summary: (range: string, by: string, app?: string) => ["summary", range, by, app ?? ""] as const,
};

export function useMe(poll: number | false) {
  return useQuery({ queryKey: keys.me, queryFn: () => api.get("/v1/me", Me), refetchInterval: poll });
}

export function useWallet() {
  return useQuery({ queryKey: keys.wallet, queryFn: () => api.get("/v1/me/wallet", Wallet, { limit: 20 }) });
}

export function useDiagnosis() {
  return useQuery({ queryKey: keys.diagnose, queryFn: () => api.get("/v1/diagnose", Diagnosis) });
}

export function useQueuedLeases(poll: number | false) {
  return useQuery({
    queryKey: keys.queued,
    queryFn: () => api.get("/v1/leases", LeaseList, { status: "queued", limit: 10 }),
    refetchInterval: poll,
  });
}

export const RANGES = { "24h": 1, "7d": 7, "30d": 30 } as const;
export type Range = keyof typeof RANGES;

/** The start of a range, to the minute (so the query key and the export name the same instant). */
export function rangeFrom(range: Range): string {
  const ms = Date.now() - RANGES[range] * 86_400_000;
  return new Date(Math.floor(ms / 60_000) * 60_000).toISOString();
}

/** At most this many records are read for a table or a statistic (5 pages of 1,000). */
export const RECORD_LIMIT = 5_000;

/** The usage records of a range, newest first (`order=desc`), at most RECORD_LIMIT: the newest of them. */
export async function readRecords(from: string, app?: string): Promise<{ records: UsageRecord[]; truncated: boolean }> {
  const records: UsageRecord[] = [];
  let cursor: string | undefined;
  do {
    const page = await api.get("/v1/usage", UsagePage, { from, limit: 1000, cursor, app, order: "desc" });
    records.push(...page.records);
    cursor = page.next_cursor ?? undefined;
  } while (cursor !== undefined && records.length < RECORD_LIMIT);
  return { records, truncated: cursor !== undefined };
}

export function useRecords(range: Range, app?: string) {
  return useQuery({
    queryKey: keys.usage(range, app),
    queryFn: () => readRecords(rangeFrom(range), app),
  });
}

export function useSummary(range: Range, groupBy: "day" | "app" | "identity" | "tier", app?: string) {
  return useQuery({
    queryKey: keys.summary(range, groupBy, app),
    queryFn: () => api.get("/v1/usage/summary", UsageSummary, { from: rangeFrom(range), group_by: groupBy, app }),
  });
}
