import * as z from "zod/mini";
import { PROBLEM_CODES, PROBLEM_STATUS, PROBLEM_TITLES } from "../problems.js";
import type { ProblemCode } from "../problems.js";
import type { HeaderParam, Operation, ResponseSpec } from "./operations.js";
import { OPERATIONS, PRINCIPALS, PROBLEM_HEADERS } from "./operations.js";
import { NAMED_SCHEMAS, problemSchemaName } from "./schemas.js";

export type JsonSchema = { readonly [keyword: string]: unknown };

export interface OpenApiDocument {
  readonly openapi: "3.1.0";
  readonly jsonSchemaDialect: string;
  readonly info: { readonly title: string; readonly version: string; readonly description: string };
  readonly tags: readonly { name: string; description: string }[];
  readonly paths: Readonly<Record<string, Readonly<Record<string, OpenApiOperation>>>>;
  readonly components: {
    readonly schemas: Readonly<Record<string, JsonSchema>>;
    readonly securitySchemes: Readonly<Record<string, JsonSchema>>;
  };
}

export interface OpenApiOperation {
  readonly operationId: string;
  readonly tags: readonly string[];
  readonly summary: string;
  readonly description?: string;
  readonly security: readonly Readonly<Record<string, readonly string[]>>[];
  readonly parameters?: readonly JsonSchema[];
  readonly requestBody?: JsonSchema;
  readonly responses: Readonly<Record<string, OpenApiResponse>>;
}

export interface OpenApiResponse {
  readonly description: string;
  readonly headers?: Readonly<Record<string, JsonSchema>>;
  readonly content?: Readonly<Record<string, JsonSchema>>;
}

const DIALECT = "https://json-schema.org/draft/2020-12/schema";
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

const DESCRIPTION = [
  "The control plane of a shared GPU pool: leases of GPU time charged to the person who caused the call, against a daily GPU-time quota by tier.",
  "",
  "JSON in and out. Amounts are **seconds** (numbers, fractional for sub-second values) unless a name says otherwise (`held_ms`; money in `*_micros`: whole micro-units of the pool's currency, never fractions); times are ISO 8601 strings in UTC.",
  "Response objects may gain fields: clients must ignore the ones they do not know.",
  "",
  "Errors are `application/problem+json` (RFC 9457): `{ type, title, status, detail, code, ...fields }`. `code` is stable and machine-readable; `detail` is one or two sentences a person can act on.",
  "Unknown routes answer 404 `not_found`; bad bodies and queries 400 `invalid_request` naming every invalid field; no 500 ever carries a stack or a secret.",
  "Before any route, a request that cannot be read is answered as a problem too: 400 `invalid_request` (not well-formed HTTP/1.1), 408 `request_timeout`, 431 `headers_too_large` (over 16 KiB of request line and headers); a path segment over 100 characters is 414 `uri_too_long`. A detail quotes at most a short excerpt of what was sent.",
].join("\n");

const TAGS = [
  { name: "Leases", description: "Borrowing a GPU slice for a bounded time." },
  { name: "Quota", description: "What is left, and why a call is charged where it is." },
  {
    name: "Billing",
    description:
      "Credits and overage (docs/billing.md): money in whole micro-units of the currency (`*_micros`), each with a `display` string.",
  },
  {
    name: "Usage",
    description: "The usage ledger (docs/billing.md): one immutable record per ended lease, and totals.",
  },
  { name: "Identity", description: "X-IP-Tokens: who the end user of an app's call is." },
  { name: "Sessions", description: "Browser sessions of the edge (identity proxy)." },
  {
    name: "Dashboard",
    description:
      "The web dashboard (docs/dashboard.md): its pages, its session cookie (which stands for a user or the operator on the rest of `/v1`, CSRF-checked), sign-in links, and the live streams and summaries its views read.",
  },
  { name: "Admin", description: "Users, apps, nodes, edges and the pool, with the admin token." },
  { name: "Nodes", description: "What node agents call." },
  { name: "Health", description: "Liveness, readiness and metrics." },
  {
    name: "Documents",
    description: "This API's own documents: the OpenAPI document and the reference page made from it.",
  },
];

/** Drops what zod writes for documents of its own (`$schema`, `$id`) and the safe-integer bounds of every integer. */
function tidy(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(tidy);
  if (typeof value !== "object" || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) {
    if (key === "$schema" || key === "$id") continue;
    if ((key === "maximum" && inner === MAX_SAFE) || (key === "minimum" && inner === -MAX_SAFE)) continue;
    out[key] = tidy(inner);
  }
  return out;
}

function componentSchemas(): Record<string, JsonSchema> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(NAMED_SCHEMAS)) registry.add(schema, { id });
  const { schemas } = z.toJSONSchema(registry, {
    target: "draft-2020-12",
    io: "input",
    uri: (id) => `#/components/schemas/${id}`,
  });
  return tidy(schemas) as Record<string, JsonSchema>;
}

function refTo(schema: z.ZodMiniType): JsonSchema {
  const entry = Object.entries(NAMED_SCHEMAS).find(([, named]) => named === schema);
  if (entry === undefined)
    throw new Error("A schema of the operations table is not in NAMED_SCHEMAS: give it a name there.");
  return { $ref: `#/components/schemas/${entry[0]}` };
}

function header(h: HeaderParam): JsonSchema {
  return { description: h.description, schema: { type: "string" } };
}

/** The problem codes an operation can answer with, its own and those of every route of its kind. */
export function problemCodesOf(op: Operation): ProblemCode[] {
  const codes = new Set<ProblemCode>(op.problems ?? []);
  if (op.body !== undefined || op.query !== undefined) codes.add("invalid_request");
  if (op.body !== undefined) {
    codes.add("payload_too_large");
    codes.add("unsupported_media_type");
  }
  if (op.pathParams !== undefined && op.pathParams.length > 0) codes.add("uri_too_long");
  if (op.auth.length > 0) {
    // An Authorization header sent more than once is refused, not read as its first copy.
    codes.add("invalid_request");
    codes.add("unauthorized");
    codes.add("forbidden");
    if (op.auth.length === 1 && op.auth[0] === "admin") codes.add("admin_disabled");
    // The dashboard's session cookie stands for a user or the operator; changes need its CSRF token.
    if (op.method !== "get" && (op.auth.includes("user") || op.auth.includes("admin"))) codes.add("csrf_failed");
  }
  if (op.noStorage !== true) codes.add("storage_unavailable");
  codes.add("internal");
  return PROBLEM_CODES.filter((code) => codes.has(code));
}

function successResponse(spec: ResponseSpec): OpenApiResponse {
  if ("json" in spec) {
    return {
      description: spec.description,
      ...(spec.headers !== undefined
        ? { headers: Object.fromEntries(spec.headers.map((h) => [h.name, header(h)])) }
        : {}),
      content: {
        "application/json": { schema: refTo(spec.json) },
        ...Object.fromEntries((spec.alsoText ?? []).map((type) => [type, { schema: { type: "string" } }])),
      },
    };
  }
  if ("events" in spec) {
    const events = Object.fromEntries(Object.entries(spec.events).map(([name, schema]) => [name, refTo(schema)]));
    return {
      description: spec.description,
      content: {
        "text/event-stream": {
          schema: {
            type: "string",
            description: `Server-Sent Events; each event's \`data\` is JSON, by event name: ${Object.keys(events).join(", ")} (see \`x-events\`).`,
          },
          "x-events": events,
        },
      },
    };
  }
  if ("empty" in spec) return { description: spec.description };
  const types: readonly string[] = typeof spec.text === "string" ? [spec.text] : spec.text;
  return {
    description: spec.description,
    content: Object.fromEntries(types.map((type) => [type, { schema: { type: "string" } }])),
  };
}

function problemResponses(codes: readonly ProblemCode[]): Record<string, OpenApiResponse> {
  const byStatus = new Map<number, ProblemCode[]>();
  for (const code of codes) byStatus.set(PROBLEM_STATUS[code], [...(byStatus.get(PROBLEM_STATUS[code]) ?? []), code]);
  const out: Record<string, OpenApiResponse> = {};
  for (const [status, group] of byStatus) {
    const refs = group.map((code) => ({ $ref: `#/components/schemas/${problemSchemaName(code)}` }));
    const headers = [...new Set(group.map((code) => PROBLEM_HEADERS[code]).filter((h) => h !== undefined))];
    out[String(status)] = {
      description: group.map((code) => `\`${code}\`: ${PROBLEM_TITLES[code]}`).join("; "),
      ...(headers.length > 0 ? { headers: Object.fromEntries(headers.map((h) => [h.name, header(h)])) } : {}),
      content: { "application/problem+json": { schema: refs.length === 1 ? refs[0] : { oneOf: refs } } },
    };
  }
  return out;
}

function queryParameters(query: z.ZodMiniObject): JsonSchema[] {
  const schema = tidy(z.toJSONSchema(query, { target: "draft-2020-12", io: "input" })) as {
    properties?: Record<string, JsonSchema>;
    required?: string[];
  };
  return Object.entries(schema.properties ?? {}).map(([name, property]) => {
    const { description, ...rest } = property;
    return {
      name,
      in: "query",
      required: schema.required?.includes(name) ?? false,
      ...(typeof description === "string" ? { description } : {}),
      schema: rest,
    };
  });
}

function operation(op: Operation): OpenApiOperation {
  const parameters: JsonSchema[] = [
    ...(op.pathParams ?? []).map((p) => ({
      name: p.name,
      in: "path",
      required: true,
      description: p.description,
      schema: { type: "string" },
    })),
    ...(op.query !== undefined ? queryParameters(op.query) : []),
    ...(op.headers ?? []).map((h) => ({
      name: h.name,
      in: "header",
      required: false,
      description: h.description,
      schema: { type: "string" },
    })),
  ];
  const responses: Record<string, OpenApiResponse> = {};
  for (const [status, spec] of Object.entries(op.responses)) responses[status] = successResponse(spec);
  Object.assign(responses, problemResponses(problemCodesOf(op)));
  const sorted = Object.fromEntries(Object.entries(responses).sort(([a], [b]) => Number(a) - Number(b)));
  return {
    operationId: op.id,
    tags: [op.tag],
    summary: op.summary,
    ...(op.description !== undefined ? { description: op.description } : {}),
    security: op.auth.map((p) => ({ [PRINCIPALS[p].scheme]: [] })),
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(op.body !== undefined
      ? {
          requestBody: {
            required: op.body.optional !== true,
            ...(op.body.optional === true ? { description: "May be empty (the same as `{}`)." } : {}),
            content: { "application/json": { schema: refTo(op.body.schema) } },
          },
        }
      : {}),
    responses: sorted,
  };
}

/** The OpenAPI 3.1 document of the control plane, generated from the contract's schemas and operations table. */
export function openApiDocument(): OpenApiDocument {
  const paths: Record<string, Record<string, OpenApiOperation>> = {};
  for (const op of OPERATIONS) {
    const item = (paths[op.path] ??= {});
    if (item[op.method] !== undefined)
      throw new Error(`${op.method.toUpperCase()} ${op.path} is in the operations table twice.`);
    item[op.method] = operation(op);
  }
  return {
    openapi: "3.1.0",
    jsonSchemaDialect: DIALECT,
    info: { title: "gpupool control plane", version: "1", description: DESCRIPTION },
    tags: TAGS,
    paths,
    components: {
      schemas: componentSchemas(),
      securitySchemes: Object.fromEntries(
        Object.values(PRINCIPALS).map((p) => [
          p.scheme,
          { type: "http", scheme: "bearer", description: p.description },
        ]),
      ),
    },
  };
}
