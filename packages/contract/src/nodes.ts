import * as z from "zod/mini";
import { Count, Seconds, describe } from "./common.js";

/** The most devices one agent may register (a large host has 8–16 GPUs, each with up to 7 MIG slices). */
export const MAX_NODE_DEVICES = 256;

export const RegisteredDevice = z.strictObject({
  index: describe(
    z.int().check(z.minimum(0), z.maximum(65_535)),
    "The device's index on the host (MIG slices numbered after one another).",
  ),
  uuid: z.string().check(z.minLength(1), z.maxLength(128), z.regex(/^[A-Za-z0-9._:/-]+$/)),
  name: z.string().check(z.minLength(1), z.maxLength(128)),
  memory_mb: z.int().check(z.minimum(0), z.maximum(100_000_000)),
  slots: describe(
    z.optional(z.int().check(z.minimum(1), z.maximum(64))),
    "2 for a whole GPU (default), 1 for a MIG slice.",
  ),
});
export type RegisteredDevice = z.infer<typeof RegisteredDevice>;

export const NodeRegisterRequest = z.strictObject({
  devices: describe(
    z.array(RegisteredDevice).check(z.maxLength(MAX_NODE_DEVICES)),
    "Every GPU of the host; replaces what the node registered before.",
  ),
  agent_url: describe(
    z.optional(z.string().check(z.maxLength(512))),
    "Where the agent's device API listens (informational).",
  ),
  previous_registration: describe(
    z.optional(z.string().check(z.maxLength(64))),
    "The `registration` this agent held before it restarted, so it may take the node back at once.",
  ),
});
export type NodeRegisterRequest = z.infer<typeof NodeRegisterRequest>;

export const NodeRef = z.object({ id: z.string(), name: z.string() });

const timing = {
  heartbeat_interval_s: describe(Seconds, "How often to heartbeat."),
  heartbeat_timeout_s: describe(
    Seconds,
    "A node silent this long is lost: its leases fail and its GPUs leave the pool.",
  ),
};

export const NodeRegistered = z.object({
  node: NodeRef,
  devices: describe(Count, "Devices registered."),
  registration: describe(z.string(), "Which registration of the node this is: send it with each heartbeat."),
  ...timing,
});
export type NodeRegistered = z.infer<typeof NodeRegistered>;

/** `POST /v1/nodes/heartbeat`; agents from before registrations send no body (not checked). */
export const HeartbeatRequest = z.looseObject({
  registration: describe(
    z.optional(z.string().check(z.maxLength(64))),
    "The `registration` the node's register answered; another one means another agent took the node over (409).",
  ),
});
export type HeartbeatRequest = z.infer<typeof HeartbeatRequest>;

export const Heartbeat = z.object({ node: NodeRef, ...timing });
export type Heartbeat = z.infer<typeof Heartbeat>;
