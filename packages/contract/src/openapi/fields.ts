import { patternWords } from "../common.js";
import type { JsonSchema, OpenApiDocument } from "./document.js";

/** A piece of a type as people read it: text, or a reference to a named schema. */
export type TypePart = string | { readonly ref: string };

export interface FieldRow {
  readonly name: string;
  readonly type: readonly TypePart[];
  readonly required: boolean;
  /** Limits (`1–64 characters`, `≥ 0.001`), or "". */
  readonly limits: string;
  readonly description: string;
}

const REF = "#/components/schemas/";

/** A keyword's value as text: strings as they are, numbers written out, anything else "". */
export function text(value: unknown): string {
  return typeof value === "string"
    ? value
    : typeof value === "number" || typeof value === "boolean"
      ? String(value)
      : "";
}

/** The name of the schema a `$ref` points to, or null. */
export function refName(schema: JsonSchema): string | null {
  const ref = schema["$ref"];
  return typeof ref === "string" && ref.startsWith(REF) ? ref.slice(REF.length) : null;
}

function join(parts: readonly (readonly TypePart[])[], sep: string): TypePart[] {
  return parts.flatMap((p, i) => (i === 0 ? [...p] : [sep, ...p]));
}

/** The type of `schema` in words: `string (date-time) or null`, `array of Device`, `"queued" | "active"`. */
export function typeOf(schema: JsonSchema): TypePart[] {
  const name = refName(schema);
  if (name !== null) return [{ ref: name }];
  if ("const" in schema) return [JSON.stringify(schema["const"])];
  if (Array.isArray(schema["enum"])) return [(schema["enum"] as unknown[]).map((v) => JSON.stringify(v)).join(" | ")];
  for (const key of ["anyOf", "oneOf"] as const) {
    const options = schema[key];
    if (Array.isArray(options)) return join((options as JsonSchema[]).map(typeOf), " or ");
  }
  const type = schema["type"];
  const types = Array.isArray(type) ? (type as string[]) : typeof type === "string" ? [type] : [];
  if (types.length === 0) return ["any"];
  return join(
    types.map((t): TypePart[] => {
      if (t === "array") return ["array of ", ...typeOf((schema["items"] as JsonSchema | undefined) ?? {})];
      if (t === "string" && typeof schema["format"] === "string") return [`string (${schema["format"]})`];
      return [t];
    }),
    " or ",
  );
}

/** What a schema limits, in words (the date-time pattern is what `date-time` already says). */
export function limitsOf(schema: JsonSchema): string {
  const out: string[] = [];
  const inner = Array.isArray(schema["anyOf"])
    ? ((schema["anyOf"] as JsonSchema[]).find((s) => s["type"] !== "null") ?? schema)
    : schema;
  const s = { ...inner, ...schema };
  if (typeof s["minimum"] === "number" && typeof s["maximum"] === "number")
    out.push(`${String(s["minimum"])} to ${String(s["maximum"])}`);
  else if (typeof s["minimum"] === "number") out.push(`≥ ${String(s["minimum"])}`);
  else if (typeof s["maximum"] === "number") out.push(`≤ ${String(s["maximum"])}`);
  if (typeof s["minLength"] === "number" && typeof s["maxLength"] === "number")
    out.push(`${String(s["minLength"])}–${String(s["maxLength"])} characters`);
  else if (typeof s["maxLength"] === "number")
    out.push(`at most ${String(s["maxLength"])} ${s["type"] === "array" ? "items" : "characters"}`);
  if (typeof s["pattern"] === "string" && s["format"] !== "date-time")
    out.push(patternWords(s["pattern"]) ?? `matches \`${s["pattern"]}\``);
  if (typeof s["minProperties"] === "number") out.push(`at least ${String(s["minProperties"])} field`);
  return out.join(", ");
}

/** The fields of an object schema (following one `$ref`), in the order they are sent. */
export function fieldsOf(doc: OpenApiDocument, schema: JsonSchema): FieldRow[] {
  const name = refName(schema);
  const target = name === null ? schema : (doc.components.schemas[name] ?? {});
  const properties = (target["properties"] ?? {}) as Record<string, JsonSchema>;
  const required = new Set((target["required"] ?? []) as string[]);
  return Object.entries(properties).map(([field, property]) => ({
    name: field,
    type: typeOf(property),
    required: required.has(field),
    limits: limitsOf(property),
    description: typeof property["description"] === "string" ? property["description"] : "",
  }));
}

/** The variants of a `oneOf` schema (following one `$ref`), or null when it is not one. */
export function variantsOf(doc: OpenApiDocument, schema: JsonSchema): JsonSchema[] | null {
  const name = refName(schema);
  const target = name === null ? schema : (doc.components.schemas[name] ?? {});
  return Array.isArray(target["oneOf"]) ? (target["oneOf"] as JsonSchema[]) : null;
}

/** The `code` a problem schema is for, or null when it is not one. */
export function problemCodeOf(schema: JsonSchema): string | null {
  const code = ((schema["properties"] ?? {}) as Record<string, JsonSchema>)["code"];
  return typeof code?.["const"] === "string" ? code["const"] : null;
}
