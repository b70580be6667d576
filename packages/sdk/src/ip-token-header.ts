/**
 * An `X-IP-Token` as an app receives it: a string, or what Node's `IncomingHttpHeaders`
 * holds for a header (`string | string[] | undefined`), so `req.headers["x-ip-token"]`
 * can be passed straight through.
 */
export type IpTokenInput = string | readonly string[] | null | undefined;

/** A Node `IncomingHttpHeaders`-like record or a WHATWG `Headers`. */
export type HeadersLike =
  { get(name: string): string | null } | Readonly<Record<string, string | readonly string[] | undefined>>;

/**
 * Reads the `X-IP-Token` of an incoming request so an app calling another app (or the
 * pool) on a viewer's behalf charges that viewer rather than itself.
 * Returns undefined when the request carries none.
 */
export function forwardIpToken(headers: HeadersLike | null | undefined): string | undefined {
  if (headers === null || headers === undefined) return undefined;
  if (typeof headers.get === "function") {
    return normalizeIpToken((headers as { get(name: string): string | null }).get("x-ip-token"));
  }
  const record = headers as Readonly<Record<string, string | readonly string[] | undefined>>;
  // Node lower-cases incoming header names, but hand-built objects may not.
  const key = Object.keys(record).find((name) => name.toLowerCase() === "x-ip-token");
  return key === undefined ? undefined : normalizeIpToken(record[key]);
}

/** @internal Turns an {@link IpTokenInput} into the header value to send, or undefined for none. */
export function normalizeIpToken(input: IpTokenInput): string | undefined {
  if (input === null || input === undefined) return undefined;
  if (typeof input === "string") return input === "" ? undefined : input;
  const values = input.filter((value) => value !== "");
  if (values.length === 0) return undefined;
  // Several tokens means something upstream misbehaved; joining them as Node does for a
  // repeated header lets the server reject it as malformed instead of the SDK silently
  // picking whom to charge.
  return values.join(", ");
}
