// The demo's billing (docs/billing.md): overage on for the pro tier, and a pro user, cleo, whose quota is
// small enough (a minute) that the tour can show a call split into quota + overage, the wallet
// after it, and the spend cap refusing the next one.
import { createClient } from "@gpupool/sdk";
import type { AdminClient } from "@gpupool/sdk";
import type { DemoCredentials, DemoUser, Outcome } from "./credentials.js";
import { ensureUser } from "./credentials.js";

/** The demo's `billing:` block: docs/billing.md's example configuration, with overage enabled. */
export const DEMO_BILLING = {
  currency: "USD",
  included_credits: { pro: "2.00", team: "2.00", enterprise: "2.00" },
  overage: {
    enabled: true,
    tiers: ["pro", "team", "enterprise"],
    price_per_gpu_minute: "0.10",
    default_monthly_cap: "5.00",
  },
};

/** cleo's quota for the tour (seconds per window) and her monthly overage cap. */
export const CLEO_QUOTA_S = 60;
export const CLEO_CAP = "0.05";

/**
 * cleo, pro, with a 60 s quota and overage on under a $0.05 cap. Like bob, a cleo whose quota or
 * wallet an earlier run used is replaced by a fresh one, so the tour shows the same on every start.
 */
export async function ensureCleo(
  admin: AdminClient,
  creds: DemoCredentials,
  url: string,
): Promise<{ user: DemoUser; outcome: Outcome }> {
  const cleo = await ensureUser(admin, creds, "cleo", "pro", async (user) => {
    const me = await createClient({ url, token: user.token })
      .me()
      .catch(() => null);
    return me !== null && me.quota.used === 0 && me.quota.reserved === 0 && me.overage.spentMicros === 0;
  });
  await admin.updateUser(cleo.user.id, { quota: CLEO_QUOTA_S });
  await createClient({ url, token: cleo.user.token }).setBilling({ overage: true, monthlyCap: CLEO_CAP });
  return cleo;
}

/** Ends the calls a user's own scripts left queued or running (an earlier run of the tour's step 10). */
export async function endOwnCalls(url: string, token: string): Promise<void> {
  const client = createClient({ url, token });
  for (const status of ["active", "queued"] as const) {
    const leases = await client.leases({ status, limit: 500 }).catch(() => []);
    for (const l of leases) await client.cancel(l.id).catch(() => undefined);
  }
}
