import type * as z from "zod/mini";
import * as admin from "../admin.js";
import * as billing from "../billing.js";
import { Identity } from "../common.js";
import * as dashboard from "../dashboard.js";
import * as diagnose from "../diagnose.js";
import { OpenApiDocumentObject } from "../documents.js";
import * as health from "../health.js";
import * as identity from "../identity.js";
import * as leases from "../leases.js";
import * as nodes from "../nodes.js";
import * as pool from "../pool.js";
import { FieldError, PROBLEMS, Problem } from "../problem-objects.js";
import type { ProblemCode } from "../problems.js";
import { PROBLEM_CODES } from "../problems.js";
import { Me } from "../me.js";
import { Quota } from "../quota.js";
import * as usage from "../usage.js";

/** `quota_exceeded` → `QuotaExceededProblem`. */
export function problemSchemaName(code: ProblemCode): string {
  return `${code.replace(/(^|_)([a-z])/g, (_, _sep: string, c: string) => c.toUpperCase())}Problem`;
}

/** Every named schema of the document (components/schemas), by its name there. */
export const NAMED_SCHEMAS: Readonly<Record<string, z.ZodMiniType>> = {
  Identity,
  Quota,
  Credits: billing.Credits,
  Overage: billing.Overage,
  LeaseBilling: billing.LeaseBilling,
  Me,
  Wallet: billing.Wallet,
  WalletGrant: billing.WalletGrant,
  WalletTransaction: billing.WalletTransaction,
  BillingSettingsRequest: billing.BillingSettingsRequest,
  BillingSettings: billing.BillingSettings,
  CreditGrantRequest: billing.CreditGrantRequest,
  UsageRecord: usage.UsageRecord,
  UsageCost: usage.UsageCost,
  UsagePage: usage.UsagePage,
  UsageTotals: usage.UsageTotals,
  UsageSummary: usage.UsageSummary,
  Lease: leases.Lease,
  Device: leases.Device,
  LeaseProblem: leases.LeaseProblem,
  LeaseRequest: leases.LeaseRequest,
  LeaseList: leases.LeaseList,
  ReleaseRequest: leases.ReleaseRequest,
  ReleaseResult: leases.ReleaseResult,
  QueuedEvent: leases.QueuedEvent,
  GrantedEvent: leases.GrantedEvent,
  FailedEvent: leases.FailedEvent,
  EndedEvent: leases.EndedEvent,
  Diagnosis: diagnose.Diagnosis,
  DiagnosisStep: diagnose.DiagnosisStep,
  DiagnosisRequest: diagnose.DiagnosisRequest,
  DiagnosisBucket: diagnose.DiagnosisBucket,
  DiagnosisVerdict: diagnose.DiagnosisVerdict,
  DiagnosisCause: diagnose.DiagnosisCause,
  IpTokenRequest: identity.IpTokenRequest,
  IpTokenReissueRequest: identity.IpTokenReissueRequest,
  IpToken: identity.IpToken,
  Jwks: identity.Jwks,
  Jwk: identity.Jwk,
  SessionOpenRequest: identity.SessionOpenRequest,
  SessionRequest: identity.SessionRequest,
  SessionUser: identity.SessionUser,
  SessionOpened: identity.SessionOpened,
  SessionResolved: identity.SessionResolved,
  SessionRevoked: identity.SessionRevoked,
  CreateUserRequest: admin.CreateUserRequest,
  UpdateUserRequest: admin.UpdateUserRequest,
  User: admin.User,
  CreatedUser: admin.CreatedUser,
  UserWithQuota: admin.UserWithQuota,
  UserList: admin.UserList,
  UserSessionsRevoked: admin.UserSessionsRevoked,
  CreateAppRequest: admin.CreateAppRequest,
  UpdateAppRequest: admin.UpdateAppRequest,
  App: admin.App,
  CreatedApp: admin.CreatedApp,
  AppList: admin.AppList,
  CreateKeyRequest: admin.CreateKeyRequest,
  CreatedKey: admin.CreatedKey,
  DashboardSignIn: dashboard.DashboardSignIn,
  DashboardSession: dashboard.DashboardSession,
  DashboardLinkRequest: dashboard.DashboardLinkRequest,
  DashboardLink: dashboard.DashboardLink,
  QueueView: dashboard.QueueView,
  QueueTier: dashboard.QueueTier,
  QueueEntriesPage: dashboard.QueueEntriesPage,
  RefusalsView: dashboard.RefusalsView,
  AuditEntry: dashboard.AuditEntry,
  AuditPage: dashboard.AuditPage,
  AppStats: dashboard.AppStats,
  AppStatsList: dashboard.AppStatsList,
  PoolView: pool.PoolView,
  PoolNode: pool.PoolNode,
  PoolDevice: pool.PoolDevice,
  PoolActiveLease: pool.PoolActiveLease,
  PoolQueueEntry: pool.PoolQueueEntry,
  QueueCounts: pool.QueueCounts,
  SlotCounts: pool.SlotCounts,
  NodeRegisterRequest: nodes.NodeRegisterRequest,
  RegisteredDevice: nodes.RegisteredDevice,
  NodeRegistered: nodes.NodeRegistered,
  NodeRef: nodes.NodeRef,
  HeartbeatRequest: nodes.HeartbeatRequest,
  Heartbeat: nodes.Heartbeat,
  Health: health.Health,
  Readiness: health.Readiness,
  OpenApiDocument: OpenApiDocumentObject,
  Problem,
  FieldError,
  ...Object.fromEntries(PROBLEM_CODES.map((code) => [problemSchemaName(code), PROBLEMS[code]])),
};
