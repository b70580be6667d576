/**
 * `new Date(ms).toISOString()`, with the part up to the second kept for the few seconds a response
 * names (now, a deadline, a window's reset): formatting dates was ~2% of a lease request.
 */
const secondsPrefix = new Map<number, string>();
export function iso(ms: number): string;
export function iso(ms: number | null): string | null;
export function iso(ms: number | null): string | null {
  if (ms === null) return null;
  if (!Number.isInteger(ms) || ms < 0 || ms >= 253_402_300_800_000) return new Date(ms).toISOString(); // outside years 1970–9999
  const second = Math.floor(ms / 1000);
  let prefix = secondsPrefix.get(second);
  if (prefix === undefined) {
    if (secondsPrefix.size >= 256) secondsPrefix.clear();
    prefix = new Date(second * 1000).toISOString().slice(0, 20); // "2026-11-30T23:59:59."
    secondsPrefix.set(second, prefix);
  }
  const millis = ms - second * 1000;
  return `${prefix}${millis < 10 ? "00" : millis < 100 ? "0" : ""}${millis}Z`;
}
