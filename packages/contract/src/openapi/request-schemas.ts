import * as z from "zod/mini";
import type { JsonSchema } from "./document.js";
import { OPERATIONS } from "./operations.js";

/** What a server validates a request of one operation with: JSON Schema (draft-07, what Fastify's Ajv speaks by default). */
export interface RequestSchemas {
  readonly body?: JsonSchema;
  readonly querystring?: JsonSchema;
}

function draft7(schema: z.ZodMiniType): Record<string, unknown> {
  return strip(z.toJSONSchema(schema, { target: "draft-7", io: "input" })) as Record<string, unknown>;
}

/** Without `$schema` and descriptions: a validator needs neither, and the document has them. */
function strip(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(strip);
  if (typeof value !== "object" || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value))
    if (key !== "$schema" && key !== "description") out[key] = strip(inner);
  return out;
}

/**
 * The request schemas of the operation `operationId`, from the same zod schemas the OpenAPI
 * document is made of, so a server validates exactly what the document promises. An optional
 * body also accepts `null` (no body, or an empty one, is the same as `{}`).
 */
export function requestSchemas(operationId: string): RequestSchemas {
  let schemas = made.get(operationId);
  if (schemas === undefined) {
    schemas = make(operationId);
    made.set(operationId, schemas);
  }
  return schemas;
}

/** Each operation's schemas, made once per process (every server a test starts asks for them). */
const made = new Map<string, RequestSchemas>();

function make(operationId: string): RequestSchemas {
  const op = OPERATIONS.find((o) => o.id === operationId);
  if (op === undefined) throw new Error(`no operation ${operationId} in the contract`);
  const out: { body?: JsonSchema; querystring?: JsonSchema } = {};
  if (op.body !== undefined) {
    const body = draft7(op.body.schema);
    out.body = op.body.optional === true && body["type"] === "object" ? { ...body, type: ["object", "null"] } : body;
  }
  if (op.query !== undefined) out.querystring = draft7(op.query);
  return out;
}
