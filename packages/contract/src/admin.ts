import * as z from "zod/mini";
import { Name, Seconds, Time, describe } from "./common.js";
import { Quota } from "./quota.js";

const Tier = describe(
  z.string().check(z.maxLength(32)),
  "A configured tier (`anonymous`, `free`, `pro`, `team`, `enterprise` by default).",
);

export const CreateUserRequest = z.strictObject({
  name: Name,
  tier: describe(z.optional(Tier), "Default `free`."),
});
export type CreateUserRequest = z.infer<typeof CreateUserRequest>;

export const User = z.object({
  id: describe(z.string(), "`u_` then 16 characters."),
  name: z.string(),
  tier: z.string(),
  quota_override: describe(z.nullable(Seconds), "Seconds per window replacing the tier's quota, or null."),
  created_at: Time,
});
export type User = z.infer<typeof User>;

export const CreatedUser = z.object({
  ...User.shape,
  token: describe(z.string(), "The user's access token (`gpu_u_…`): shown only this once."),
});
export type CreatedUser = z.infer<typeof CreatedUser>;

export const UserWithQuota = z.object({
  ...User.shape,
  quota: Quota,
});
export type UserWithQuota = z.infer<typeof UserWithQuota>;

export const UserList = z.object({
  users: describe(z.array(User), "A page, by name."),
  next_cursor: describe(
    z.optional(z.nullable(z.string())),
    "Pass as `cursor` for the next page; null on the last one. Always present from this server.",
  ),
});
export type UserList = z.infer<typeof UserList>;

/** `PATCH /v1/admin/users/:id`: at least one field. */
export const UpdateUserRequest = z
  .strictObject({
    tier: z.optional(Tier),
    quota: describe(
      z.optional(z.nullable(z.number().check(z.minimum(0), z.maximum(7 * 86_400)))),
      "Seconds per window replacing the tier's quota; null clears the override.",
    ),
    bonus: describe(
      z.optional(z.number().check(z.minimum(-86_400), z.maximum(86_400))),
      "Seconds added to (or, negative, taken from) the current window only.",
    ),
  })
  .check(z.meta({ minProperties: 1 }));
export type UpdateUserRequest = z.infer<typeof UpdateUserRequest>;

/** An app's concurrency limit as a request sets it: 1 to 100,000 leases at once. */
const MaxConcurrency = z.int().check(z.minimum(1), z.maximum(100_000));

export const CreateAppRequest = z.strictObject({
  name: Name,
  owner: describe(
    z.string().check(z.minLength(1), z.maxLength(64)),
    "The owning user's id or name (`u_` then 16 characters is an id only).",
  ),
  max_concurrency: describe(
    z.optional(z.nullable(MaxConcurrency)),
    "Most leases of this app active at once; more wait with reason `concurrency`. Null or absent: no limit.",
  ),
});
export type CreateAppRequest = z.infer<typeof CreateAppRequest>;

/** `PATCH /v1/admin/apps/:id`. */
export const UpdateAppRequest = z.strictObject({
  max_concurrency: describe(
    z.nullable(MaxConcurrency),
    "Most leases of this app active at once (1 to 100000), for every admission from the answer on: more wait with reason `concurrency`; leases already held keep their GPUs. Null: no limit.",
  ),
});
export type UpdateAppRequest = z.infer<typeof UpdateAppRequest>;

export const App = z.object({
  id: describe(z.string(), "`a_` then 16 characters."),
  name: z.string(),
  owner: describe(z.string(), "The owning user's id."),
  max_concurrency: z.nullable(z.int()),
  created_at: Time,
});
export type App = z.infer<typeof App>;

export const CreatedApp = z.object({
  ...App.shape,
  key: describe(z.string(), "The app key (`gpu_a_…`): shown only this once."),
});
export type CreatedApp = z.infer<typeof CreatedApp>;

export const AppList = z.object({
  apps: describe(z.array(App), "A page, by name."),
  next_cursor: describe(
    z.optional(z.nullable(z.string())),
    "Pass as `cursor` for the next page; null on the last one. Always present from this server; absent only from servers older than pages.",
  ),
});
export type AppList = z.infer<typeof AppList>;

/** `POST /v1/admin/nodes` and `POST /v1/admin/edges`. */
export const CreateKeyRequest = z.strictObject({ name: Name });
export type CreateKeyRequest = z.infer<typeof CreateKeyRequest>;

/** A node or edge and its key. */
export const CreatedKey = z.object({
  id: z.string(),
  name: z.string(),
  key: describe(z.string(), "The node key (`gpu_n_…`) or edge key (`gpu_e_…`): shown only this once."),
});
export type CreatedKey = z.infer<typeof CreatedKey>;

export const UserSessionsRevoked = z.object({
  user: describe(z.string(), "The user's id."),
  revoked: describe(z.int(), "Sessions revoked by this call."),
});
export type UserSessionsRevoked = z.infer<typeof UserSessionsRevoked>;
