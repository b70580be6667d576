import { useEffect, useMemo } from "preact/hooks";
import { useQueryClient } from "@tanstack/react-query";
import { Me } from "@gpupool/contract";
import { on } from "@gpupool/sdk/browser";
import { Card, Loading } from "../../components/ui.js";
import { pollUnless, useLive } from "../../live.js";
import { keys, useMe } from "../../queries.js";
import { QuotaCard } from "./quota-card.js";
import { WhyCard } from "./why-card.js";
import { CreditsCard } from "./credits-card.js";
import { OverageCard } from "./overage-card.js";
import { UsageChartCard } from "./usage-chart.js";
import { CallsCard } from "./calls-card.js";
import { QueuedCard } from "./queued-card.js";

/** The end user's page: the quota now (live), credits, overage, usage, calls. */
export function UserPage() {
  const queries = useQueryClient();
  const handlers = useMemo(
    () => ({
      me: on(Me, (me) => queries.setQueryData(keys.me, me)),
    }),
    [queries],
  );
  const live = useLive("/v1/me/events", handlers);
  const me = useMe(pollUnless(live));
  // A change of the quota or credits is a call that started, queued or ended, or a grant: what
  // lists them follows. (The query keeps the same object while nothing changed.)
  const changed = me.data;
  useEffect(() => {
    if (changed === undefined) return;
    void queries.invalidateQueries({ queryKey: keys.queued });
    void queries.invalidateQueries({ queryKey: keys.wallet });
    void queries.invalidateQueries({ queryKey: keys.diagnose });
    void queries.invalidateQueries({ queryKey: ["usage"] });
    void queries.invalidateQueries({ queryKey: ["summary"] });
  }, [changed, queries]);
  if (!me.data)
    return (
      <Card id="quota" title="GPU quota">
        <Loading error={me.error} what="your quota" />
      </Card>
    );
  return (
    <div class="grid">
      <QuotaCard me={me.data} live={live} />
      <QueuedCard live={live} />
      <WhyCard me={me.data} />
      <CreditsCard me={me.data} />
      <OverageCard me={me.data} />
      <UsageChartCard />
      <CallsCard />
    </div>
  );
}
