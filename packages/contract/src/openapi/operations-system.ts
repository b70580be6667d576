import { OpenApiDocumentObject } from "../documents.js";
import * as health from "../health.js";
import * as nodes from "../nodes.js";
import type { Operation } from "./operation-types.js";

/** Node agents, health, and the API's own documents. */
export const SYSTEM_OPERATIONS: readonly Operation[] = [
  {
    id: "registerNode",
    method: "post",
    path: "/v1/nodes/register",
    tag: "Nodes",
    summary: "Register a node's GPUs (node agent)",
    description:
      "Replaces what the node registered before. 409 `conflict` when the node name is also one of the server's configured nodes, or another agent holds the node (`reason: node_in_use`); 400 when a device index or UUID is listed twice.",
    auth: ["node"],
    body: { schema: nodes.NodeRegisterRequest },
    responses: { 200: { description: "The registration and the heartbeat timing.", json: nodes.NodeRegistered } },
    problems: ["conflict"],
  },
  {
    id: "heartbeat",
    method: "post",
    path: "/v1/nodes/heartbeat",
    tag: "Nodes",
    summary: "Heartbeat (node agent)",
    description:
      "A node that stops heartbeating for `heartbeat_timeout_s` has its leases failed and its GPUs removed; it must register again (409 `node_not_registered`).",
    auth: ["node"],
    body: { schema: nodes.HeartbeatRequest, optional: true },
    responses: { 200: { description: "The heartbeat timing.", json: nodes.Heartbeat } },
    problems: ["node_not_registered"],
  },
  {
    id: "healthz",
    method: "get",
    path: "/healthz",
    tag: "Health",
    summary: "Liveness",
    auth: [],
    noStorage: true,
    responses: { 200: { description: "The process answers.", json: health.Health } },
  },
  {
    id: "readyz",
    method: "get",
    path: "/readyz",
    tag: "Health",
    summary: "Readiness",
    description: "503 `storage_unavailable` (without `reason`) when the database does not answer.",
    auth: [],
    responses: { 200: { description: "Ready.", json: health.Readiness } },
  },
  {
    id: "metrics",
    method: "get",
    path: "/metrics",
    tag: "Health",
    summary: "Prometheus metrics",
    description: "Queue depth, grants, denials by code, slot utilization, lease durations, ledger latency.",
    auth: [],
    noStorage: true,
    responses: { 200: { description: "Prometheus text exposition format.", text: "text/plain" } },
  },
  {
    id: "openApiDocument",
    method: "get",
    path: "/openapi.json",
    tag: "Documents",
    summary: "This API's OpenAPI 3.1 document",
    description:
      "Generated from @gpupool/contract, the same schemas the server validates requests with and its answers are typed against.",
    auth: [],
    noStorage: true,
    responses: { 200: { description: "The OpenAPI 3.1 document.", json: OpenApiDocumentObject } },
  },
  {
    id: "apiReference",
    method: "get",
    path: "/docs/api",
    tag: "Documents",
    summary: "The API reference, for a person",
    description:
      "A static page rendered from the OpenAPI document: no scripts, served under a strict Content-Security-Policy.",
    auth: [],
    noStorage: true,
    responses: { 200: { description: "The reference page.", text: "text/html" } },
  },
  {
    id: "apiReferenceCss",
    method: "get",
    path: "/docs/api.css",
    tag: "Documents",
    summary: "The reference page's stylesheet",
    auth: [],
    noStorage: true,
    responses: { 200: { description: "CSS.", text: "text/css" } },
  },
];
