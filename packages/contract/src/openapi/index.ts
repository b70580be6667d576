// The documents generated from the contract: the OpenAPI 3.1 document, the API reference page
// (served under a strict CSP: no scripts, no inline styles) and docs/wire.md.
export { openApiDocument, problemCodesOf } from "./document.js";
export type { JsonSchema, OpenApiDocument, OpenApiOperation, OpenApiResponse } from "./document.js";
export { OPERATIONS, PRINCIPALS } from "./operations.js";
export type { Operation, Principal } from "./operations.js";
export { NAMED_SCHEMAS, problemSchemaName } from "./schemas.js";
export { renderApiReference } from "./reference.js";
export type { ApiReferenceOptions } from "./reference.js";
export { renderWireDoc } from "./wire-doc.js";
export { requestSchemas } from "./request-schemas.js";
export type { RequestSchemas } from "./request-schemas.js";
