// Checks a response an HTTP test received against the OpenAPI document generated from
// @gpupool/contract, so the documented wire format cannot drift from what the server sends.
// Stricter than the document on one point: a response object may not carry a field the contract
// does not name (the document keeps them open so clients ignore fields a newer server adds; the
// server's own tests must not send undocumented ones).
import { Ajv2020 } from "ajv/dist/2020.js";
import type { ValidateFunction } from "ajv/dist/2020.js";
import * as formats from "ajv-formats";
import type { FormatsPlugin } from "ajv-formats";
import { openApiDocument } from "@gpupool/contract/openapi";
import type { JsonSchema, OpenApiDocument, OpenApiOperation } from "@gpupool/contract/openapi";

export interface ReceivedResponse {
  readonly method: string;
  /** The request URL: a path (with or without a query) or an absolute URL. */
  readonly url: string;
  readonly status: number;
  /** The response's `Content-Type` header (undefined when it had none). */
  readonly contentType: unknown;
  /** The body: parsed JSON, or the text as received. */
  readonly body: unknown;
}

/** The response does not match the contract; the message says where and how. */
export class ContractMismatch extends Error {
  override readonly name = "ContractMismatch";
}

const BASE = "https://gpupool.invalid/components.json";
const addFormats = formats.default as unknown as FormatsPlugin;

/** Response objects of the server's tests are closed: every object with properties refuses others. */
function closed(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(closed);
  if (typeof value !== "object" || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) out[key] = closed(inner);
  if (out["type"] === "object" && typeof out["properties"] === "object" && !("additionalProperties" in out))
    out["additionalProperties"] = false;
  return out;
}

function rebase(schema: unknown): JsonSchema {
  return JSON.parse(JSON.stringify(schema).replaceAll('"#/components/schemas/', `"${BASE}#/$defs/`)) as JsonSchema;
}

interface Checker {
  readonly doc: OpenApiDocument;
  readonly ajv: Ajv2020;
  readonly compiled: Map<string, ValidateFunction>;
  readonly routes: { method: string; template: string; pattern: RegExp; op: OpenApiOperation }[];
}

let checker: Checker | undefined;

function getChecker(): Checker {
  if (checker !== undefined) return checker;
  const doc = openApiDocument();
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addSchema({ $id: BASE, $defs: closed(rebase(doc.components.schemas)) as object });
  const routes = Object.entries(doc.paths).flatMap(([template, item]) =>
    Object.entries(item).map(([method, op]) => ({
      method: method.toUpperCase(),
      template,
      pattern: new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\\?\{[^}]+\\?\}/g, "[^/]+")}$`),
      op,
    })),
  );
  // Literal paths before templates, so /v1/ip-tokens/reissue is never read as a template.
  routes.sort((a, b) => Number(a.template.includes("{")) - Number(b.template.includes("{")));
  checker = { doc, ajv, compiled: new Map(), routes };
  return checker;
}

function validator(c: Checker, key: string, schema: unknown): ValidateFunction {
  let fn = c.compiled.get(key);
  if (fn === undefined) {
    fn = c.ajv.compile(closed(rebase(schema)) as object);
    c.compiled.set(key, fn);
  }
  return fn;
}

function snippet(body: unknown): string {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  return text.length > 600 ? `${text.slice(0, 600)}…` : text;
}

function errorsOf(fn: ValidateFunction): string {
  return (fn.errors ?? [])
    .slice(0, 8)
    .map(
      (e) =>
        `${e.instancePath || "(root)"} ${e.message ?? "is invalid"}${e.params && Object.keys(e.params).length > 0 ? ` ${JSON.stringify(e.params)}` : ""}`,
    )
    .join("; ");
}

/** The events of a `text/event-stream` body, comments (keep-alives) left out. */
function serverSentEvents(text: string): { event: string; data: string }[] {
  const events: { event: string; data: string }[] = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    let event = "message";
    const data: string[] = [];
    for (const line of block.split(/\r?\n/)) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (data.length > 0) events.push({ event, data: data.join("\n") });
  }
  return events;
}

/**
 * Finds the operation by method and path template, then checks the status is documented for it
 * and the body matches the schema of that status and content type. Throws a ContractMismatch
 * saying what differs; returns the operation's id.
 */
export function checkResponse(response: ReceivedResponse): string {
  const c = getChecker();
  const method = response.method.toUpperCase();
  const path = new URL(response.url, "http://localhost").pathname;
  const what = `${method} ${path} → ${response.status}`;
  const route = c.routes.find((r) => r.method === method && r.pattern.test(path));
  if (route === undefined)
    throw new ContractMismatch(
      `${what}: no such operation in the contract (undocumented route). Add it to packages/contract/src/openapi/operations.ts.`,
    );
  const documented = route.op.responses[String(response.status)];
  if (documented === undefined) {
    throw new ContractMismatch(
      `${what}: status ${response.status} is not documented for ${method} ${route.template} (documented: ${Object.keys(route.op.responses).join(", ")}). Body: ${snippet(response.body)}`,
    );
  }
  if (documented.content === undefined) {
    if (response.body !== "" && response.body !== undefined)
      throw new ContractMismatch(`${what}: documented without a body, but one was sent: ${snippet(response.body)}`);
    return route.op.operationId;
  }
  const contentType =
    typeof response.contentType === "string"
      ? response.contentType
      : Array.isArray(response.contentType)
        ? String(response.contentType[0])
        : "";
  const mediaType = contentType.split(";")[0]?.trim().toLowerCase() ?? "";
  const content = documented.content ?? {};
  const media = content[mediaType];
  if (media === undefined) {
    throw new ContractMismatch(
      `${what}: content type "${contentType}" is not documented for this status (documented: ${Object.keys(content).join(", ") || "no body"}).`,
    );
  }
  const key = `${route.op.operationId} ${response.status} ${mediaType}`;
  if (mediaType === "application/json" || mediaType === "application/problem+json") {
    let body = response.body;
    if (typeof body === "string") {
      try {
        body = JSON.parse(body) as unknown;
      } catch {
        throw new ContractMismatch(`${what}: the ${mediaType} body is not JSON: ${snippet(body)}`);
      }
    }
    const fn = validator(c, key, media["schema"]);
    if (!fn(body))
      throw new ContractMismatch(
        `${what}: the body does not match the contract (${errorsOf(fn)}). Body: ${snippet(body)}`,
      );
  } else if (mediaType === "text/event-stream") {
    if (typeof response.body !== "string") throw new ContractMismatch(`${what}: expected the event stream as text.`);
    const schemas = (media["x-events"] ?? {}) as Record<string, JsonSchema>;
    const events = serverSentEvents(response.body);
    for (const [i, e] of events.entries()) {
      const schema = schemas[e.event];
      if (schema === undefined)
        throw new ContractMismatch(
          `${what}: event ${i} is "${e.event}", which the contract does not name (${Object.keys(schemas).join(", ")}).`,
        );
      let data: unknown;
      try {
        data = JSON.parse(e.data) as unknown;
      } catch {
        throw new ContractMismatch(`${what}: the data of event ${i} ("${e.event}") is not JSON: ${snippet(e.data)}`);
      }
      const fn = validator(c, `${key} ${e.event}`, schema);
      if (!fn(data))
        throw new ContractMismatch(
          `${what}: event ${i} ("${e.event}") does not match the contract (${errorsOf(fn)}). Data: ${snippet(data)}`,
        );
    }
  } else if (typeof response.body !== "string") {
    throw new ContractMismatch(`${what}: expected a ${mediaType} body as text.`);
  }
  return route.op.operationId;
}

/**
 * What the HTTP test suites check every response with: a documented route's answer must match
 * the contract (checkResponse); a request to a route the server does not have may only be
 * answered 404 `not_found` as a problem. Returns the operation's id, or null for such a 404.
 */
export function checkServerResponse(response: ReceivedResponse): string | null {
  const c = getChecker();
  const method = response.method.toUpperCase();
  const path = new URL(response.url, "http://localhost").pathname;
  if (c.routes.some((r) => r.method === method && r.pattern.test(path))) return checkResponse(response);
  const what = `${method} ${path} → ${response.status}`;
  const contentType = typeof response.contentType === "string" ? response.contentType : "";
  // A page the dashboard routes in the browser (a deep link, a reload): the dashboard's page, as
  // the `dashboardPage` operation documents for any path outside /v1/ asked for as text/html.
  if (method === "GET" && !path.startsWith("/v1/") && response.status === 200 && contentType.startsWith("text/html"))
    return checkResponse({ ...response, url: "/" });
  if (response.status !== 404 || !contentType.startsWith("application/problem+json")) {
    throw new ContractMismatch(
      `${what}: no such operation in the contract, and the answer is not a 404 problem (undocumented route). Body: ${snippet(response.body)}`,
    );
  }
  const fn = validator(c, "unknown route 404", { $ref: "#/components/schemas/NotFoundProblem" });
  if (!fn(response.body))
    throw new ContractMismatch(
      `${what}: the 404 for an unknown route is not a not_found problem (${errorsOf(fn)}). Body: ${snippet(response.body)}`,
    );
  return null;
}

/** The operations of the contract, as `METHOD /template` (to tell which ones a suite drove). */
export function documentedOperations(): Map<string, string> {
  return new Map(getChecker().routes.map((r) => [r.op.operationId, `${r.method} ${r.template}`]));
}
