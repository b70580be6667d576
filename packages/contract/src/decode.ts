import type * as z from "zod/mini";

/** Any of the contract's schemas (for code that decodes with them without importing zod itself). */
export type WireSchema = z.ZodMiniType;
/** What a schema decodes to. */
export type WireType<S extends WireSchema> = z.infer<S>;

export type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly message: string };

/**
 * Reads `value` as `schema` says. On a mismatch, `message` names each wrong field and what was
 * expected (`quota.left: expected number, received undefined`), for an error a person can act on.
 * Unknown fields are accepted and dropped (a newer server may send more).
 */
export function decodeWire<S extends z.ZodMiniType>(schema: S, value: unknown): Decoded<z.infer<S>> {
  const result = schema.safeParse(value);
  if (result.success) return { ok: true, value: result.data };
  const issues = result.error.issues
    .slice(0, 5)
    .map((issue) => `${issue.path.length === 0 ? "(the body)" : issue.path.join(".")}: ${issue.message}`);
  const more = result.error.issues.length > 5 ? `; and ${result.error.issues.length - 5} more` : "";
  return { ok: false, message: issues.join("; ") + more };
}
