export { createClient } from "./client.js";
export type { ClientOptions, GpupoolClient, LeaseListOptions, QueryOptions } from "./client.js";
export type { AcquireOptions } from "./acquire.js";
export type { AdminClient, Page, PageOptions, UserChanges } from "./admin.js";
export type { BillingMethods } from "./billing.js";
export type {
  BillingChanges,
  CreditGrantRequest,
  CreditGrantResult,
  GrantCategory,
  Me,
  UsageExport,
  UsageExportFormat,
  UsageGroup,
  UsageGroupBy,
  UsagePage,
  UsageQuery,
  UsageRange,
  UsageRecord,
  UsageRecords,
  UsageSummary,
  UsageTotals,
  Wallet,
  WalletGrant,
  WalletTransaction,
} from "./billing-types.js";
export { createAgentClient } from "./agent-client.js";
export type {
  AgentClient,
  AgentClientOptions,
  AgentGpuContext,
  AgentGpuDevice,
  AgentGpuOptions,
  AgentGrant,
  AgentQueueUpdate,
  AgentScheduleOptions,
} from "./agent-client.js";
export type { GpuContext, GpuDevice, GpuFunction, GpuOptions } from "./gpu.js";
export { forwardIpToken } from "./ip-token-header.js";
export { isTraceparent, newTraceparent } from "./trace-context.js";
export type { HeadersLike, IpTokenInput } from "./ip-token-header.js";
export type { FetchLike } from "./transport.js";
export {
  DurationTooLongError,
  ForbiddenError,
  GpupoolError,
  InvalidIpTokenError,
  InvalidRequestError,
  LeaseDeadlineError,
  NoGpuAvailableError,
  NotFoundError,
  QueueTimeoutError,
  QuotaExceededError,
  RunsExceededError,
  ServerUnavailableError,
  UnauthorizedError,
} from "./errors.js";
export { problemToError } from "./problem-errors.js";
export { CreditsExhaustedError, OverageNotAvailableError, SpendCapReachedError } from "./errors-billing.js";
export type { FieldError, GpupoolErrorOptions, InvalidIpTokenReason, NoGpuAvailableReason } from "./errors.js";
export type {
  App,
  CreatedApp,
  CreatedPrincipal,
  CreatedUser,
  Device,
  Diagnosis,
  DiagnosisCause,
  DiagnosisStep,
  DiagnosisBucket,
  DiagnosisRequest,
  DiagnosisVerdict,
  Identity,
  IdentityKind,
  IpToken,
  Credits,
  Lease,
  LeaseBilling,
  LeaseStatus,
  Overage,
  OverageBlocker,
  PoolActiveLease,
  PoolDevice,
  PoolNode,
  PoolQueueEntry,
  PoolState,
  Problem,
  ProblemCode,
  QueueReason,
  QueueUpdate,
  Quota,
  ReleaseResult,
  Size,
  Tier,
  User,
} from "./types.js";
// The stream parser, for other gpupool clients of the control plane (the node agent).
export { readServerSentEvents } from "./sse.js";
export type { SseEvent } from "./sse.js";
