/**
 * Money is kept and computed as whole micro-units of the configured currency (1 USD =
 * 1,000,000): never a float. Amounts arrive as decimal strings ("10.00", "0.5") and leave with a
 * `display` string ("$10.00").
 */

/** Micro-units per unit of currency. */
export const MICROS = 1_000_000;

/**
 * The largest amount a request may name, and a wallet may hold in all: 1e9 units (far beyond any
 * real balance). In micro-units that is 1e15, below 2^53, so every amount and every sum of a
 * wallet's grants is an exact integer as a JavaScript number.
 */
export const MAX_MICROS = 1_000_000_000 * MICROS;

export type MoneyParse =
  { readonly ok: true; readonly micros: number } | { readonly ok: false; readonly message: string };

const DECIMAL = /^(0|[1-9][0-9]{0,9})(?:\.([0-9]{1,6}))?$/;

/**
 * A decimal amount ("10", "10.5", "0.000001") as micro-units. Refused: anything but plain digits
 * with an optional fraction of at most six digits (no sign, exponent, separators or spaces), and
 * more than 1e9 units. `positive`: zero is refused too.
 */
export function parseMoney(text: string, options: { positive?: boolean } = {}): MoneyParse {
  const m = DECIMAL.exec(text);
  if (m === null) {
    return {
      ok: false,
      message: /^-/.test(text)
        ? "must not be negative"
        : /\.[0-9]{7,}$/.test(text)
          ? "has more than 6 decimal places (the smallest amount is 0.000001)"
          : 'must be a decimal amount such as "10.00"',
    };
  }
  const micros = Number(m[1]) * MICROS + Number((m[2] ?? "").padEnd(6, "0"));
  if (micros > MAX_MICROS) return { ok: false, message: "is too large" };
  if (options.positive === true && micros === 0) return { ok: false, message: "must be more than 0" };
  return { ok: true, micros };
}

const SYMBOLS: Readonly<Record<string, string>> = { USD: "$", EUR: "€", GBP: "£" };

/**
 * For people: `$1.25`, `$0.000167`, `-$2.00`; two decimals unless the amount needs more (up to six);
 * currencies without a symbol here as `1.25 CHF`.
 */
export function displayMoney(micros: number, currency: string): string {
  if (!Number.isSafeInteger(micros)) throw new Error(`not a whole number of micro-units: ${micros}`);
  const sign = micros < 0 ? "-" : "";
  const abs = Math.abs(micros);
  const units = Math.floor(abs / MICROS);
  const fraction = String(abs % MICROS)
    .padStart(6, "0")
    .replace(/0+$/, "")
    .padEnd(2, "0");
  const amount = `${units.toLocaleString("en-US")}.${fraction}`;
  const symbol = SYMBOLS[currency];
  return symbol === undefined ? `${sign}${amount} ${currency}` : `${sign}${symbol}${amount}`;
}

/**
 * What `gpuMs` milliseconds of GPU time (already multiplied by the size's cost) cost at
 * `pricePerMinuteMicros` per GPU-minute, rounded up to a whole micro-unit (a fraction of a
 * micro-unit is charged as one, never dropped). Exact: computed in integers.
 */
export function priceOf(gpuMs: number, pricePerMinuteMicros: number): number {
  if (gpuMs <= 0 || pricePerMinuteMicros <= 0) return 0;
  const numerator = BigInt(gpuMs) * BigInt(pricePerMinuteMicros);
  const denominator = 60_000n;
  return Number((numerator + denominator - 1n) / denominator);
}

/**
 * The most GPU time (milliseconds, cost included) `micros` pay for at `pricePerMinuteMicros`:
 * the inverse of `priceOf`, rounded down (what is bought is never more than what is paid).
 */
export function gpuMsFor(micros: number, pricePerMinuteMicros: number): number {
  if (micros <= 0 || pricePerMinuteMicros <= 0) return 0;
  return Number((BigInt(micros) * 60_000n) / BigInt(pricePerMinuteMicros));
}
