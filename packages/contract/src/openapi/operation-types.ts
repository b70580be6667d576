import type * as z from "zod/mini";
import type { ProblemCode } from "../problems.js";

/** Who may call: the bearer credentials a route takes (`none`: no Authorization header). */
export type Principal = "app" | "user" | "admin" | "edge" | "node";

export const PRINCIPALS: Readonly<Record<Principal, { scheme: string; description: string }>> = {
  app: {
    scheme: "appKey",
    description:
      "An app key (`gpu_a_…`, from `POST /v1/admin/apps`): leases are the app's, charged to the X-IP-Token's identity or else to the app.",
  },
  user: {
    scheme: "userToken",
    description:
      "A user access token (`gpu_u_…`, from `POST /v1/admin/users`): for a user's own scripts, charged to that user.",
  },
  admin: {
    scheme: "adminToken",
    description: "The server's `GPUPOOL_ADMIN_TOKEN`. Without it set, admin routes answer 403 `admin_disabled`.",
  },
  edge: {
    scheme: "edgeKey",
    description: "An edge key (`gpu_e_…`, from `POST /v1/admin/edges`): the identity proxy's credential.",
  },
  node: {
    scheme: "nodeKey",
    description: "A node key (`gpu_n_…`, from `POST /v1/admin/nodes`): a node agent's credential.",
  },
};

export interface HeaderParam {
  readonly name: string;
  readonly description: string;
}

export const IP_TOKEN_HEADER: HeaderParam = {
  name: "X-IP-Token",
  description:
    "The end user the call is for: a token the edge injected (or `POST /v1/ip-tokens` minted) for this app. Valid: its identity is charged. Absent: the app itself (or the user, for a user token). Present but invalid, expired, for another app, or sent with a user token: 401 `invalid_ip_token` with the reason — never a silent fallback. Send exactly one.",
};

export const NODE_KEY_HEADER: HeaderParam = {
  name: "X-Gpupool-Node-Key",
  description:
    "Sent by a node agent asking on behalf of an app on its host: only that node's GPUs will do. Not a valid node key: 401.",
};

export const IDEMPOTENCY_KEY_HEADER: HeaderParam = {
  name: "Idempotency-Key",
  description:
    "Makes the request safe to retry: 1 to 255 printable ASCII characters (no spaces), unique per logical request (a UUID). The same key from the same caller for the same identity within 24 h returns the lease the first request made — 201 if it was granted (even if it has ended since), 202 while it waits, 200 if it ended without a GPU — instead of making another; with a different request (duration, size, `queue`, node) it is 409 `idempotency_key_reused`. A key that is empty, too long or has other characters is 400 `invalid_request`. The SDK sends one per call and retries with it.",
};

export type ResponseSpec =
  | {
      readonly description: string;
      readonly json: z.ZodMiniType;
      readonly headers?: readonly HeaderParam[];
      /** Other media types the same status may carry as text, chosen by the request (e.g. an export's `format`). */
      readonly alsoText?: readonly string[];
    }
  | { readonly description: string; readonly events: Readonly<Record<string, z.ZodMiniType>> }
  /** A body as text, of one media type or (a static file) of one of several. */
  | { readonly description: string; readonly text: string | readonly string[] }
  /** No body (204). */
  | { readonly description: string; readonly empty: true };

/** One route, written once: the OpenAPI document, the reference page and docs/wire.md come from here. */
export interface Operation {
  readonly id: string;
  readonly method: "get" | "post" | "patch" | "delete";
  /** OpenAPI path template (`{id}`). */
  readonly path: string;
  readonly tag: string;
  readonly summary: string;
  readonly description?: string;
  /** Credentials taken; empty for none. */
  readonly auth: readonly Principal[];
  readonly pathParams?: readonly HeaderParam[];
  readonly query?: z.ZodMiniObject;
  readonly headers?: readonly HeaderParam[];
  /** A JSON body; `optional`: an empty body (or none) is the same as `{}`. */
  readonly body?: { readonly schema: z.ZodMiniType; readonly optional?: boolean };
  /** Success answers by status. */
  readonly responses: Readonly<Record<number, ResponseSpec>>;
  /**
   * The problem codes the route itself can answer with. Those of every route of its kind are
   * added by the document: `internal`; `storage_unavailable` unless `noStorage`; with `auth`,
   * `invalid_request`, `unauthorized` and `forbidden` (and `admin_disabled` for admin-only
   * routes); with a body, `invalid_request`, `payload_too_large` and `unsupported_media_type`;
   * with a query, `invalid_request`; with path parameters, `uri_too_long`.
   */
  readonly problems?: readonly ProblemCode[];
  /** The route never touches the database. */
  readonly noStorage?: boolean;
}

export const RETRY_AFTER: HeaderParam = { name: "Retry-After", description: "Seconds to wait before retrying." };
export const LOCATION: HeaderParam = { name: "Location", description: "`/v1/leases/<id>`." };
export const LEASE_ID: HeaderParam = {
  name: "id",
  description:
    "The lease id (`ls_…`). A lease is visible to the app that made it, the user it is charged to, and the admin.",
};
export const USER_REF: HeaderParam = {
  name: "id",
  description: "The user's id (`u_` then 16 characters: looked up as an id only) or name.",
};

export const APP_REF: HeaderParam = {
  name: "id",
  description: "The app's id (`a_` then 16 characters: looked up as an id only) or name.",
};

/** Headers sent with problems of these codes (the rest of a route's problems carry none). */
export const PROBLEM_HEADERS: Partial<Record<ProblemCode, HeaderParam>> = {
  quota_exceeded: RETRY_AFTER,
  runs_exceeded: RETRY_AFTER,
  no_gpu_available: RETRY_AFTER,
  storage_unavailable: RETRY_AFTER,
};
