import type { AcquireOptions } from "./acquire.js";
import { GpupoolError, LeaseDeadlineError, sdkProblem } from "./errors.js";
import { traceparentFor } from "./trace-context.js";
import type { Device, Lease, ReleaseResult } from "./types.js";

/** The granted GPU, plus what a child process needs to see only that GPU. */
export interface GpuDevice extends Device {
  /** Environment for a child process, e.g. `spawn(cmd, { env: { ...process.env, ...device.env() } })`. */
  env(): { CUDA_VISIBLE_DEVICES: string };
}

export interface GpuContext {
  readonly lease: Lease;
  readonly device: GpuDevice;
  /**
   * Aborts at the lease deadline (reason: `LeaseDeadlineError`) or when the caller's own
   * `signal` aborts (its reason). Past the deadline the agent stops the process anyway.
   */
  readonly signal: AbortSignal;
}

export interface GpuOptions extends AcquireOptions {
  /**
   * Called when releasing the lease fails after the function ran. The function's result
   * (or error) still wins; an unreleased lease expires at its deadline and is charged its
   * full reservation. Without this callback the failure is emitted as a process warning.
   */
  readonly onReleaseError?: ((error: unknown, lease: Lease) => void) | undefined;
}

export type GpuFunction<T> = (context: GpuContext) => T | Promise<T>;

/** The two lease calls `gpu()` needs; kept narrow so this file does not depend on the client. */
export interface LeaseOperations {
  acquire(options: AcquireOptions): Promise<Lease>;
  release(id: string, options: { readonly failed: boolean; readonly traceparent?: string }): Promise<ReleaseResult>;
}

// setTimeout fires immediately for delays above 2^31 − 1 ms.
const MAX_TIMER_MS = 2_147_483_647;

export async function runOnGpu<T>(leases: LeaseOperations, options: GpuOptions, fn: GpuFunction<T>): Promise<T> {
  const { onReleaseError, ...acquireOptions } = options;
  // One trace per call: the lease and the release request carry the same traceparent.
  const traceparent = traceparentFor(options.traceparent);
  const lease = await leases.acquire({ ...acquireOptions, traceparent });

  const controller = new AbortController();
  const caller = options.signal;
  const onCallerAbort = () => controller.abort(caller?.reason);
  caller?.addEventListener("abort", onCallerAbort, { once: true });
  const deadlineMs = msUntilDeadline(lease);
  const timer =
    deadlineMs === undefined
      ? undefined
      : setTimeout(
          () => controller.abort(new LeaseDeadlineError(lease.id, lease.deadline)),
          Math.min(deadlineMs, MAX_TIMER_MS),
        );
  const stop = () => {
    clearTimeout(timer);
    caller?.removeEventListener("abort", onCallerAbort);
  };

  let result: T;
  try {
    result = await fn({ lease, device: gpuDevice(lease), signal: controller.signal });
  } catch (error) {
    stop();
    await release(leases, lease, true, onReleaseError, traceparent);
    throw error;
  }
  stop();
  await release(leases, lease, false, onReleaseError, traceparent);
  return result;
}

/**
 * Uses the server's own grant→deadline span, counted from now (just after the grant
 * arrived), so a skewed local clock cannot fire the signal minutes early or late; the
 * error is the network latency, and the server enforces the real deadline regardless.
 */
function msUntilDeadline(lease: Lease): number | undefined {
  if (lease.deadline === null) return undefined;
  const from = lease.grantedAt?.getTime() ?? Date.now();
  return Math.max(0, lease.deadline.getTime() - from);
}

function gpuDevice(lease: Lease): GpuDevice {
  const device = lease.device;
  if (device === null) {
    throw new GpupoolError(
      sdkProblem(
        "invalid_response",
        "Invalid response",
        0,
        `Lease ${lease.id} is ${lease.status} but the server sent no device for it.`,
      ),
    );
  }
  return { ...device, env: () => ({ CUDA_VISIBLE_DEVICES: device.uuid }) };
}

async function release(
  leases: LeaseOperations,
  lease: Lease,
  failed: boolean,
  onReleaseError: GpuOptions["onReleaseError"],
  traceparent: string,
): Promise<void> {
  try {
    await leases.release(lease.id, { failed, traceparent });
  } catch (error) {
    reportReleaseError(error, lease, onReleaseError);
  }
}

function reportReleaseError(error: unknown, lease: Lease, onReleaseError: GpuOptions["onReleaseError"]): void {
  if (onReleaseError !== undefined) {
    try {
      onReleaseError(error, lease);
    } catch {
      // A throwing reporter must not replace the function's own result or error.
    }
    return;
  }
  const reason = error instanceof Error ? error.message : String(error);
  globalThis.process?.emitWarning(
    `Releasing lease ${lease.id} failed (${reason}); it will expire at its deadline and be charged in full.`,
    { type: "GpupoolReleaseWarning", code: "GPUPOOL_RELEASE_FAILED" },
  );
}
