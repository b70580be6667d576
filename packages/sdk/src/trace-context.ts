/**
 * W3C Trace Context (`traceparent`), by hand: the SDK stays dependency-free and runs wherever
 * `fetch` does. A `gpu()` call is one trace: its lease and release requests carry the same
 * `traceparent`, the caller's when it passes one, else a random one made for the call.
 */

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** Whether `value` is a `traceparent` a server will accept (version 00–fe, ids not all zeros). */
export function isTraceparent(value: string): boolean {
  const m = TRACEPARENT.exec(value);
  if (m === null) return false;
  const [, version, traceId, spanId] = m;
  if (version === "ff" || (version === "00" && m[5] !== undefined)) return false;
  return !/^0+$/.test(traceId ?? "") && !/^0+$/.test(spanId ?? "");
}

function randomHex(bytes: number): string {
  const out = new Uint8Array(bytes);
  const webCrypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (typeof webCrypto?.getRandomValues === "function") webCrypto.getRandomValues(out);
  else for (let i = 0; i < bytes; i++) out[i] = Math.floor(Math.random() * 256);
  // Never all zeros (invalid): the last byte is at least 1.
  if (out.every((b) => b === 0)) out[bytes - 1] = 1;
  return Array.from(out, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A new, sampled `traceparent`: a fresh trace id and a span id for the call. */
export function newTraceparent(): string {
  return `00-${randomHex(16)}-${randomHex(8)}-01`;
}

/** The caller's `traceparent` (checked), or a new one. */
export function traceparentFor(given: string | undefined): string {
  if (given === undefined) return newTraceparent();
  if (!isTraceparent(given))
    throw new TypeError(
      `traceparent: "${given.slice(0, 80)}" is not a W3C traceparent (00-<32 hex trace id>-<16 hex span id>-<2 hex flags>).`,
    );
  return given;
}
