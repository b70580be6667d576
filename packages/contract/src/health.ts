import * as z from "zod/mini";
import { describe } from "./common.js";
import { SlotCounts } from "./pool.js";

export const Health = z.object({ status: z.literal("ok") });
export type Health = z.infer<typeof Health>;

export const Readiness = z.object({
  status: z.literal("ready"),
  storage: z.enum(["sqlite", "postgres"]),
  leader: describe(z.boolean(), "Whether this replica leads the pool."),
  queue: describe(
    z.nullable(z.int()),
    "Leases waiting; null on a replica that does not lead (the queue lives in the leader's memory).",
  ),
  slots: describe(z.nullable(SlotCounts), "Null on a replica that does not lead."),
});
export type Readiness = z.infer<typeof Readiness>;
