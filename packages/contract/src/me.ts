import * as z from "zod/mini";
import { Credits, Overage } from "./billing.js";
import { Quota } from "./quota.js";

/** `GET /v1/me`. */
export const Me = z.object({
  user: z.object({ id: z.string(), name: z.string(), tier: z.string() }),
  quota: Quota,
  credits: Credits,
  overage: Overage,
});
export type Me = z.infer<typeof Me>;
