import { patternWords } from "../common.js";
import type { JsonSchema, OpenApiDocument, OpenApiOperation } from "./document.js";
import type { FieldRow, TypePart } from "./fields.js";
import { fieldsOf, problemCodeOf, refName, text, typeOf, variantsOf } from "./fields.js";

// docs/wire.md, written from the OpenAPI document so it cannot drift from the contract
// (a test compares the file with this output; `npm run docs` rewrites it).

const METHODS = ["get", "post", "patch", "put", "delete"] as const;
const SCHEME_NAMES: Readonly<Record<string, string>> = {
  appKey: "app key",
  userToken: "user token",
  adminToken: "admin token (`$GPUPOOL_ADMIN_TOKEN`)",
  edgeKey: "edge key",
  nodeKey: "node key",
};

function cell(text: string): string {
  return text.replace(/\n/g, " ").replace(/\|/g, "\\|");
}

function typeMd(parts: readonly TypePart[]): string {
  return parts.map((p) => (typeof p === "string" ? p : `[${p.ref}](#${p.ref.toLowerCase()})`)).join("");
}

function table(rows: readonly FieldRow[]): string {
  if (rows.length === 0) return "No fields.\n";
  const lines = rows.map((r) => {
    const meaning = [r.description, r.limits === "" ? "" : `(${r.limits})`].filter((s) => s !== "").join(" ");
    return `| \`${r.name}\`${r.required ? "" : " (optional)"} | ${cell(typeMd(r.type))} | ${cell(meaning)} |`;
  });
  return ["| field | type | meaning |", "|---|---|---|", ...lines].join("\n") + "\n";
}

function schemaMd(doc: OpenApiDocument, schema: JsonSchema): string {
  const variants = variantsOf(doc, schema);
  if (variants === null) return table(fieldsOf(doc, schema));
  return variants
    .map((v, i) => {
      const note = typeof v["description"] === "string" ? ` ${v["description"]}` : "";
      return `Variant ${i + 1}.${note}\n\n${table(fieldsOf(doc, v))}`;
    })
    .join("\n");
}

function isRequest(name: string): boolean {
  return name.endsWith("Request") || name === "RegisteredDevice";
}

function authMd(op: OpenApiOperation): string {
  if (op.security.length === 0) return "none";
  return `\`Authorization: Bearer\` ${op.security.map((s) => SCHEME_NAMES[Object.keys(s)[0] ?? ""] ?? Object.keys(s)[0]).join(" or ")}`;
}

function operationMd(doc: OpenApiDocument, path: string, method: string, op: OpenApiOperation): string {
  const out: string[] = [`#### \`${method.toUpperCase()} ${path}\` — ${op.summary}`, ""];
  if (op.description !== undefined) out.push(op.description, "");
  out.push(`- Auth: ${authMd(op)}.`);
  for (const p of op.parameters ?? []) {
    const schema = (p["schema"] ?? {}) as JsonSchema;
    const where = p["in"] === "header" ? "header" : p["in"] === "query" ? "query" : "path";
    const type =
      p["in"] === "query"
        ? ` (${typeMd(typeOf(schema))}${typeof schema["pattern"] === "string" ? `, ${patternWords(schema["pattern"]) ?? `\`${schema["pattern"]}\``}` : ""})`
        : "";
    out.push(
      `- ${where[0]?.toUpperCase()}${where.slice(1)} \`${String(p["name"])}\`${p["required"] === true ? "" : " (optional)"}${type}: ${text(p["description"])}`,
    );
  }
  if (op.requestBody !== undefined) {
    const schema = ((op.requestBody["content"] as Record<string, JsonSchema>)["application/json"]?.["schema"] ??
      {}) as JsonSchema;
    out.push(
      `- Body: ${typeMd(typeOf(schema))}${op.requestBody["required"] === true ? "" : " — may be empty (the same as `{}`)"}.`,
    );
  }
  const problems = new Map<string, string[]>();
  for (const [status, response] of Object.entries(op.responses)) {
    for (const [type, media] of Object.entries(response.content ?? {})) {
      const schema = (media["schema"] ?? {}) as JsonSchema;
      if (type === "application/problem+json") {
        const refs = Array.isArray(schema["oneOf"]) ? (schema["oneOf"] as JsonSchema[]) : [schema];
        problems.set(
          status,
          refs.map((r) => `\`${problemCodeOf(doc.components.schemas[refName(r) ?? ""] ?? {}) ?? "?"}\``),
        );
        continue;
      }
      const events = media["x-events"] as Record<string, JsonSchema> | undefined;
      const body =
        events !== undefined
          ? `events ${Object.entries(events)
              .map(([name, s]) => `\`${name}\` ${typeMd(typeOf(s))}`)
              .join(", ")}`
          : type === "application/json"
            ? typeMd(typeOf(schema))
            : "text";
      const headers = Object.keys(response.headers ?? {});
      out.push(
        `- ${status} \`${type}\`: ${body} — ${response.description}${headers.length > 0 ? ` Headers: ${headers.map((h) => `\`${h}\``).join(", ")}.` : ""}`,
      );
    }
  }
  out.push(`- Problems: ${[...problems].map(([status, codes]) => `${status} ${codes.join(", ")}`).join("; ")}.`);
  return out.join("\n") + "\n";
}

/** docs/wire.md: the wire format for people, from the OpenAPI document. */
export function renderWireDoc(doc: OpenApiDocument): string {
  const out: string[] = [
    "# Wire shapes (v1) — the contract between server, SDK, agent, edge and CLI",
    "",
    "<!-- Generated from packages/contract by `npm run docs`: edit the contract, not this file (a test compares them). -->",
    "",
    'The control plane\'s requests and responses, exactly as sent. Their source is the `@gpupool/contract` package: a runtime decoder and TypeScript type for each (`import { Lease } from "@gpupool/contract"`), from which the OpenAPI 3.1 document (`GET /openapi.json`), the API reference page (`GET /docs/api`) and this file are generated.',
    "",
    "All amounts are **seconds** (numbers, may be fractional for sub-second values) unless the name says otherwise (`held_ms`, `eta_s`), all times ISO 8601 strings (UTC). Response objects may gain fields in later versions: clients ignore fields they do not know. Request bodies are closed: an unknown field is a 400.",
    "",
    "## Errors",
    "",
    "`Content-Type: application/problem+json` (RFC 9457):",
    "```json",
    '{ "type": "urn:gpupool:problem:quota_exceeded", "title": "GPU quota exceeded", "status": 429,',
    '  "detail": "one or two sentences a person can act on", "code": "quota_exceeded", "...": "extra fields" }',
    "```",
    "Codes and statuses (stable); a field marked ? is not always sent:",
    "",
    "| code | status | extra fields | when |",
    "|---|---|---|---|",
  ];
  const problemSchemas = Object.entries(doc.components.schemas).filter(([, s]) => problemCodeOf(s) !== null);
  const extraOf = (s: JsonSchema) =>
    fieldsOf(doc, s).filter((f) => !["type", "title", "status", "detail", "code"].includes(f.name));
  for (const [, s] of problemSchemas) {
    const code = problemCodeOf(s) ?? "";
    const status = text(((s["properties"] ?? {}) as Record<string, JsonSchema>)["status"]?.["const"]);
    const extra = extraOf(s);
    const fields = extra.map((f) => `\`${f.name}\`${f.required ? "" : "?"}`).join(", ");
    out.push(
      `| ${extra.length > 0 ? `[\`${code}\`](#${code})` : `\`${code}\``} | ${status} | ${cell(fields)} | ${cell(text(s["description"]))} |`,
    );
  }
  out.push(
    "",
    '`identity` in problems is the string `"<kind>:<id>"`, e.g. `"user:u_abc"`, `"ip:203.0.113.7"`, `"app:a_xyz"`.',
    "",
  );
  for (const [, s] of problemSchemas) {
    const extra = extraOf(s);
    if (extra.length === 0) continue;
    out.push(`### \`${problemCodeOf(s) ?? ""}\``, "", table(extra));
  }

  out.push("## Objects", "", "Responses, by the name the OpenAPI document gives them.", "");
  for (const [name, s] of Object.entries(doc.components.schemas)) {
    if (problemCodeOf(s) !== null || isRequest(name)) continue;
    out.push(`### ${name}`, "");
    if (typeof s["description"] === "string") out.push(s["description"], "");
    out.push(schemaMd(doc, s));
  }

  out.push("## Request bodies", "");
  for (const [name, s] of Object.entries(doc.components.schemas)) {
    if (!isRequest(name)) continue;
    out.push(`### ${name}`, "");
    if (typeof s["description"] === "string") out.push(s["description"], "");
    out.push(schemaMd(doc, s));
  }

  out.push(
    "## Routes",
    "",
    "Problems every route of its kind can answer are listed with each: `internal` (500) always; `storage_unavailable` (503) when it touches the database; `unauthorized` (401), `forbidden` (403) and `invalid_request` (400: `Authorization` sent twice) with a credential, `admin_disabled` (403) for admin-only routes; `invalid_request` (400) with a body or query, `payload_too_large` (413) and `unsupported_media_type` (415) with a body; `uri_too_long` (414) with a path parameter. Unknown routes answer 404 `not_found`. Before any route, a request the server cannot read is answered 400 `invalid_request` (not well-formed HTTP/1.1), 408 `request_timeout` or 431 `headers_too_large`, as problems like the rest; no detail quotes more than a short excerpt of what was sent.",
    "",
  );
  for (const tag of doc.tags) {
    const ops: string[] = [];
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of METHODS) {
        const op = item[method];
        if (op !== undefined && op.tags[0] === tag.name) ops.push(operationMd(doc, path, method, op));
      }
    }
    if (ops.length === 0) continue;
    out.push(`### ${tag.name}`, "", tag.description, "", ops.join("\n"));
  }
  out.push(
    "## Edge response headers",
    "",
    "Not the control plane's, but part of what an app's caller sees: `X-Gpupool-Charged-As: user:<id> | ip:<addr>` on every proxied response; `X-Gpupool-Token-Dropped: <reason>` when a presented `X-IP-Token` was dropped. See `docs/edge.md`.",
    "",
  );
  return out.join("\n");
}
