// The operations table: one entry per route, written once; the OpenAPI document, the reference
// page and docs/wire.md come from it (see document.ts).
import { ACCESS_OPERATIONS } from "./operations-access.js";
import { BILLING_OPERATIONS } from "./operations-billing.js";
import {
  DASHBOARD_PAGE_OPERATIONS,
  DASHBOARD_READ_OPERATIONS,
  DASHBOARD_SESSION_OPERATIONS,
} from "./operations-dashboard.js";
import { LEASE_OPERATIONS } from "./operations-leases.js";
import { SYSTEM_OPERATIONS } from "./operations-system.js";
import type { Operation } from "./operation-types.js";

export * from "./operation-types.js";

export const OPERATIONS: readonly Operation[] = [
  ...LEASE_OPERATIONS,
  ...BILLING_OPERATIONS,
  ...ACCESS_OPERATIONS,
  ...DASHBOARD_SESSION_OPERATIONS,
  ...DASHBOARD_READ_OPERATIONS,
  ...DASHBOARD_PAGE_OPERATIONS,
  ...SYSTEM_OPERATIONS,
];
