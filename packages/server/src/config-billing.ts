import { parseMoney } from "@gpupool/core";
import type { BillingPolicy, TierPolicy } from "@gpupool/core";
import { z } from "zod";

/**
 * `billing:` (docs/billing.md). Amounts are decimal strings ("2.00"; a YAML number is read as its
 * decimal text) turned into micro-units; every problem is reported with its path, with the rest
 * of the configuration's.
 */
const money = (fallback: string) =>
  z
    .union([z.string(), z.number()])
    .default(fallback)
    .transform((value, ctx) => {
      const parsed = parseMoney(String(value));
      if (!parsed.ok) {
        ctx.addIssue({ code: "custom", message: parsed.message });
        return z.NEVER;
      }
      return parsed.micros;
    });

export const billingSchema = z
  .strictObject({
    currency: z
      .string()
      .regex(/^[A-Z]{3}$/, "must be an ISO 4217 code such as USD")
      .default("USD"),
    month: z.enum(["calendar"], { message: 'must be "calendar" (billing months in UTC)' }).default("calendar"),
    included_credits: z.record(z.string(), money("0")).default({}),
    overage: z
      .strictObject({
        enabled: z.boolean().default(false),
        tiers: z.array(z.string()).default(["pro", "team", "enterprise"]),
        price_per_gpu_minute: money("0.10"),
        default_monthly_cap: money("5.00"),
      })
      .prefault({}),
  })
  .optional();

export type BillingConfig = z.output<typeof billingSchema>;

/** The billing policy, or undefined without `billing:`; pushes what is wrong onto `problems`. */
export function normalizeBilling(
  c: BillingConfig,
  tiers: Readonly<Record<string, TierPolicy>>,
  problems: string[],
): BillingPolicy | undefined {
  if (c === undefined) return undefined;
  const known = (name: string): boolean => tiers[name] !== undefined;
  for (const name of Object.keys(c.included_credits))
    if (!known(name)) problems.push(`billing.included_credits.${name}: not a tier of quota.tiers`);
  c.overage.tiers.forEach((name, i) => {
    if (!known(name)) problems.push(`billing.overage.tiers.${i}: "${name}" is not a tier of quota.tiers`);
    if (name === "anonymous") problems.push("billing.overage.tiers: anonymous visitors have no wallet");
  });
  if (c.overage.enabled && c.overage.price_per_gpu_minute === 0)
    problems.push("billing.overage.price_per_gpu_minute: must be more than 0 when overage is enabled");
  return {
    currency: c.currency,
    includedMicros: c.included_credits,
    overage: {
      enabled: c.overage.enabled,
      tiers: c.overage.tiers.filter(known),
      pricePerMinuteMicros: c.overage.price_per_gpu_minute,
      defaultCapMicros: c.overage.default_monthly_cap,
    },
  };
}
