// The control plane's wire format (v1): a runtime decoder and its TypeScript type for every public
// request and response, in snake_case exactly as sent. Response objects accept fields they do not
// know (a newer server may add some) and require every field the server sends today.
// The OpenAPI document, the API reference page and docs/wire.md are generated from these:
// `@gpupool/contract/openapi`.
export {
  ID_PATTERNS,
  IDENTITY_KINDS,
  Identity,
  IdentityKey,
  IdentityKind,
  LEASE_STATUSES,
  LeaseStatus,
  QUEUE_REASONS,
  QueueReason,
  Size,
  Time,
  isIdOf,
  isIdShaped,
  patternWords,
} from "./common.js";
export type { RecordKind } from "./common.js";
export * from "./problems.js";
export * from "./problem-objects.js";
export * from "./quota.js";
export * from "./billing.js";
export * from "./usage.js";
export * from "./me.js";
export * from "./leases.js";
export * from "./diagnose.js";
export * from "./pool.js";
export * from "./admin.js";
export * from "./dashboard.js";
export * from "./nodes.js";
export * from "./identity.js";
export * from "./health.js";
export * from "./decode.js";
export * from "./documents.js";
export * from "./same-origin.js";
