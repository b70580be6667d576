import { requestSchemas } from "@gpupool/contract/openapi";
import type { JsonSchema, RequestSchemas } from "@gpupool/contract/openapi";

/**
 * An operation's request schemas from the contract, with its `size` field narrowed to the sizes
 * this pool's configuration has (the contract allows any configured size), so that one 400 names
 * every invalid field at once, a size among them.
 */
export function withConfiguredSizes(operationId: string, sizes: readonly string[]): RequestSchemas {
  const schemas = requestSchemas(operationId);
  const narrow = (schema: JsonSchema): JsonSchema => {
    const properties = schema["properties"] as Record<string, Record<string, unknown>> | undefined;
    if (properties?.["size"] === undefined) return schema;
    return { ...schema, properties: { ...properties, size: { ...properties["size"], enum: [...sizes] } } };
  };
  return {
    ...(schemas.body ? { body: narrow(schemas.body) } : {}),
    ...(schemas.querystring ? { querystring: narrow(schemas.querystring) } : {}),
  };
}
