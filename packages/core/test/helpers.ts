import type { Identity, LedgerState, Policy, ReserveInput } from "../src/index.js";
import { DEFAULT_POLICY, EMPTY_LEDGER, tierOf } from "../src/index.js";

export const T0 = Date.UTC(2025, 0, 15, 12, 0, 0);
export const S = 1000;

export const ANON_IP: Identity = { kind: "ip", id: "203.0.113.7", tier: "anonymous" };
export const FREE_USER: Identity = { kind: "user", id: "alice", tier: "free" };
export const PRO_USER: Identity = { kind: "user", id: "bob", tier: "pro" };
export const APP: Identity = { kind: "app", id: "appA", tier: "anonymous" };

export function ledger(fields: Partial<LedgerState> = {}): LedgerState {
  return { ...EMPTY_LEDGER, ...fields };
}

export interface InputOptions {
  readonly policy?: Policy;
  readonly identity?: Identity;
  readonly ledger?: LedgerState;
  readonly durationMs?: number;
  readonly size?: string;
  readonly now?: number;
  readonly overrideMs?: number | null;
  readonly earliestInFlightEnd?: number | null;
  readonly via?: ReserveInput["via"];
}

export function input(o: InputOptions = {}): ReserveInput {
  const policy = o.policy ?? DEFAULT_POLICY;
  const identity = o.identity ?? FREE_USER;
  const size = policy.sizes[o.size ?? "large"];
  if (!size) throw new Error(`no size ${o.size}`);
  return {
    policy,
    identity,
    tier: tierOf(policy, identity.tier),
    overrideMs: o.overrideMs ?? null,
    ledger: o.ledger ?? EMPTY_LEDGER,
    durationMs: o.durationMs ?? 60 * S,
    size,
    now: o.now ?? T0,
    earliestInFlightEnd: o.earliestInFlightEnd ?? null,
    via: o.via ?? (identity.kind === "app" ? "app-key" : identity.kind === "user" ? "user-token" : "ip-token"),
  };
}
