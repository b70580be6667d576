// Reading JSON whose shape is not the control plane's contract: error bodies a proxy may have
// written, and the node agent's device API (the `spaces` protocol, which other device APIs speak
// too). The control plane's own answers are decoded with @gpupool/contract instead.

type Json = Readonly<Record<string, unknown>>;

export function isRecord(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function str(value: unknown): string {
  return typeof value === "string" ? value : "";
}

export function strOrNull(value: unknown): string | null {
  return typeof value === "string" ? value : null;
}

/** NaN (not 0) for a missing amount, so a missing value never reads as "0 seconds left". */
export function num(value: unknown): number {
  return typeof value === "number" ? value : Number.NaN;
}

export function numOrNull(value: unknown): number | null {
  return typeof value === "number" ? value : null;
}
