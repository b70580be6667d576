import { ROOT_CONTEXT, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Attributes, Context, Link, Span } from "@opentelemetry/api";
import { ATTR_ERROR_TYPE } from "@opentelemetry/semantic-conventions";
import type { LeaseRecord } from "../storage/store.js";
import type { AdmissionTrace, LeaseTracing, RequestTrace } from "../use-cases/leases/lease-tracing.js";
import type { AdmitInput, AdmitResult } from "../use-cases/leases/leases.js";
import type { Tracing } from "./tracing.js";

/** Leases whose trace is kept in memory at most (the oldest is forgotten first: its later spans are not recorded). */
const MAX_KEPT = 100_000;

/** What is kept of a live lease's trace: its admission's context, its open queue wait, the release request's context. */
interface Kept {
  readonly ctx: Context;
  wait: Span | null;
  release: Context | null;
}

const seconds = (ms: number): number => ms / 1000;

/** Which bucket paid a charge: the quota first, the rest credits (as the usage record says it). */
function paidBy(lease: LeaseRecord): string {
  if (lease.chargedMs === 0) return "nothing";
  const quotaMs = Math.min(lease.chargedMs, lease.quotaMs);
  if (quotaMs === lease.chargedMs) return "quota";
  return quotaMs === 0 ? "credits" : "quota_and_credits";
}

/** Who asks and for what; never a token, an address or an IP identity's id (a user's id is fine). */
function requestAttributes(input: AdmitInput): Attributes {
  return {
    "gpupool.charged_as": input.charged.kind,
    ...(input.charged.kind === "user" ? { "user.id": input.charged.id } : {}),
    ...(input.appId === null ? {} : { "gpupool.app.id": input.appId }),
    "gpupool.via": input.via,
    "gpupool.lease.size": input.size.name,
    "gpupool.lease.slots": input.size.slots,
    "gpupool.lease.duration_s": seconds(input.durationMs),
    "gpupool.lease.queue": input.queue,
    ...(input.maxWaitMs === undefined || input.maxWaitMs === null
      ? {}
      : { "gpupool.lease.max_wait_s": seconds(input.maxWaitMs) }),
  };
}

function leaseAttributes(lease: LeaseRecord): Attributes {
  return {
    "gpupool.lease.id": lease.id,
    "gpupool.reserved.quota_s": seconds(lease.quotaMs),
    "gpupool.reserved.overage_s": seconds(lease.overageMs),
    "gpupool.hold_micros": lease.holdMicros,
  };
}

/**
 * The spans of a lease's life (see docs/operations.md, "Tracing"): `gpupool.admission` under the
 * request's span, then under it `gpupool.queue_wait` (enqueue to grant, cancel or timeout) and
 * `gpupool.grant`, and at the end `gpupool.release` (a request ended it) or `gpupool.expiry` (the
 * pool did) with `gpupool.settlement` under it. A lease's trace context is kept in memory from its
 * admission to its end, on the replica that admitted it; a lease admitted elsewhere, or before a
 * restart, has no spans here.
 */
export class LeaseSpans implements LeaseTracing {
  private readonly kept = new Map<string, Kept>();

  constructor(private readonly tracing: Tracing) {}

  admission(input: AdmitInput): AdmissionTrace {
    const parent = contextOf(input.trace);
    const span = this.tracing.tracer.startSpan("gpupool.admission", { attributes: requestAttributes(input) }, parent);
    let done = false;
    return {
      answered: (result) => {
        if (!done) this.answered(span, trace.setSpan(parent, span), result);
        done = true;
        return result;
      },
      failed: (err) => {
        if (done) return;
        done = true;
        span.setAttribute(ATTR_ERROR_TYPE, err instanceof Error ? err.name : "unknown");
        span.setStatus({ code: SpanStatusCode.ERROR, message: "the admission failed" });
        span.end();
      },
    };
  }

  granted(lease: LeaseRecord): void {
    const kept = this.kept.get(lease.id);
    if (kept === undefined) return;
    if (kept.wait !== null) {
      kept.wait.setAttribute("gpupool.outcome", "granted");
      kept.wait.end();
      kept.wait = null;
    }
    this.grantSpan(lease, kept.ctx);
  }

  releasing(leaseId: string, asked: RequestTrace): void {
    const kept = this.kept.get(leaseId);
    if (kept !== undefined) kept.release = asked === undefined ? null : contextOf(asked);
  }

  ended(lease: LeaseRecord): void {
    const kept = this.kept.get(lease.id);
    if (kept === undefined) return;
    this.kept.delete(lease.id);
    const outcome = { "gpupool.outcome": lease.status, ...problemOf(lease) };
    if (kept.wait !== null) {
      kept.wait.setAttributes(outcome);
      kept.wait.end();
    }
    // A request ended it (release, cancel): its span is the parent when it is in the lease's trace (the SDK's
    // calls are), else the lease's trace is, linked to the request's.
    const asked = kept.release === null ? undefined : trace.getSpanContext(kept.release);
    const sameTrace = asked !== undefined && asked.traceId === trace.getSpanContext(kept.ctx)?.traceId;
    const parent = sameTrace && kept.release !== null ? kept.release : kept.ctx;
    const links: Link[] = asked !== undefined && !sameTrace ? [{ context: asked }] : [];
    const byRequest = lease.status === "released" || lease.status === "cancelled";
    const span = this.tracing.tracer.startSpan(
      byRequest ? "gpupool.release" : "gpupool.expiry",
      { attributes: { "gpupool.lease.id": lease.id, ...outcome, "gpupool.lease.failed": lease.failed }, links },
      parent,
    );
    const quotaMs = Math.min(lease.chargedMs, lease.quotaMs);
    this.tracing.tracer
      .startSpan(
        "gpupool.settlement",
        {
          attributes: {
            "gpupool.lease.id": lease.id,
            "gpupool.held_s": seconds(lease.heldMs ?? 0),
            "gpupool.charged_s": seconds(lease.chargedMs),
            "gpupool.refunded_s": seconds(lease.refundedMs),
            "gpupool.quota_s": seconds(quotaMs),
            "gpupool.overage_s": seconds(lease.chargedMs - quotaMs),
            "gpupool.charged_micros": lease.chargedMicros,
            "gpupool.paid_by": paidBy(lease),
          },
        },
        trace.setSpan(parent, span),
      )
      .end();
    span.end();
  }

  private answered(span: Span, ctx: Context, result: AdmitResult): void {
    span.setAttribute("gpupool.outcome", result.kind === "denied" ? "refused" : result.kind);
    if (result.kind === "denied") {
      span.setAttribute("gpupool.problem.code", result.problem.code);
      span.end();
      return;
    }
    span.setAttributes(leaseAttributes(result.lease));
    if (result.kind === "queued") {
      span.setAttributes({
        "gpupool.queue.position": result.place.position,
        "gpupool.queue.reason": result.place.reason,
        ...(result.place.etaMs === null ? {} : { "gpupool.queue.eta_s": seconds(result.place.etaMs) }),
      });
    }
    span.end();
    // A retry (same Idempotency-Key) answers an existing lease: its trace is the first request's.
    if (this.kept.has(result.lease.id) || result.kind === "ended") return;
    if (result.lease.status !== "queued" && result.lease.status !== "active") return;
    const kept: Kept = { ctx, wait: null, release: null };
    this.keep(result.lease.id, kept);
    if (result.lease.status === "active") this.grantSpan(result.lease, ctx);
    else
      kept.wait = this.tracing.tracer.startSpan(
        "gpupool.queue_wait",
        { attributes: { "gpupool.lease.id": result.lease.id } },
        ctx,
      );
  }

  private grantSpan(lease: LeaseRecord, parent: Context): void {
    this.tracing.tracer
      .startSpan(
        "gpupool.grant",
        {
          attributes: {
            "gpupool.lease.id": lease.id,
            ...(lease.node === null ? {} : { "gpupool.node": lease.node }),
            ...(lease.deviceIndex === null ? {} : { "gpupool.device.index": lease.deviceIndex }),
            "gpupool.queue.waited_s": seconds(Math.max(0, (lease.grantedAt ?? lease.queuedAt) - lease.queuedAt)),
          },
        },
        parent,
      )
      .end();
  }

  private keep(id: string, kept: Kept): void {
    if (this.kept.size >= MAX_KEPT) {
      const oldest = this.kept.keys().next();
      if (oldest.done !== true) this.kept.delete(oldest.value);
    }
    this.kept.set(id, kept);
  }
}

/** The context a request's trace stands for (main/http-tracing.ts makes them); none: a new trace. */
function contextOf(asked: RequestTrace): Context {
  return (asked as Context | undefined) ?? ROOT_CONTEXT;
}

function problemOf(lease: LeaseRecord): Attributes {
  return lease.problemCode === null ? {} : { "gpupool.problem.code": lease.problemCode };
}
