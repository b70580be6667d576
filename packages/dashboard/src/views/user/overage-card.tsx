import { useState } from "preact/hooks";
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { BillingSettings } from "@gpupool/contract";
import type { BillingSettingsRequest, Me, OverageBlocker } from "@gpupool/contract";
import { api } from "../../client.js";
import { Bar, Card, ErrorNote, Stat } from "../../components/ui.js";
import { shown, when } from "../../format.js";
import { keys } from "../../queries.js";

const BLOCKED: Record<OverageBlocker, string> = {
  operator_disabled: "This pool does not offer paying past the quota with credits.",
  tier_without_overage: "Your tier does not offer paying past the quota with credits.",
  not_opted_in: "Off: calls past the quota are refused.",
  not_a_user: "Only signed-in users have credits.",
};

/** The overage switch, the monthly cap, and the month's spend against it. */
export function OverageCard(props: { me: Me }) {
  const o = props.me.overage;
  const queries = useQueryClient();
  const [cap, setCap] = useState<string | null>(null);
  const save = useMutation({
    mutationFn: (change: BillingSettingsRequest) => api.send("PATCH", "/v1/me/billing", change, BillingSettings),
    onSuccess: (settings) => {
      queries.setQueryData(keys.me, (me: Me | undefined) => (me ? { ...me, overage: settings.overage } : me));
      void queries.invalidateQueries({ queryKey: keys.me });
      void queries.invalidateQueries({ queryKey: keys.diagnose });
      setCap(null);
    },
  });
  const capValue = cap ?? (o.monthly_cap_micros === null ? "" : String(o.monthly_cap_micros / 1e6));
  const used = o.spent_micros + o.held_micros;
  return (
    <Card id="overage" title="Overage">
      <div class="switch-row">
        <label class="switch" for="overage-switch">
          <input
            id="overage-switch"
            type="checkbox"
            role="switch"
            checked={save.isPending ? (save.variables.overage ?? o.enabled) : o.enabled}
            disabled={!o.available || save.isPending}
            onChange={(e) => save.mutate({ overage: e.currentTarget.checked })}
            aria-describedby="overage-state"
          />
          <span>Pay from credits when the quota runs out</span>
        </label>
      </div>
      <p id="overage-state" class="muted">
        {o.blocked_by === null
          ? `On: past the quota, calls are paid from credits at ${shown(o.display, "price_per_gpu_minute", o.price_per_gpu_minute_micros, o.currency)} per GPU-minute (× the size's cost).`
          : BLOCKED[o.blocked_by]}
      </p>
      <dl class="stats">
        <Stat
          label={`Spent in ${o.month}`}
          id="overage-spent"
          value={shown(o.display, "spent", o.spent_micros, o.currency)}
        />
        <Stat label="Held (in flight)" value={shown(o.display, "held", o.held_micros, o.currency)} />
        <Stat
          label="Monthly cap"
          id="overage-cap"
          value={
            o.monthly_cap_micros === null ? "none" : shown(o.display, "monthly_cap", o.monthly_cap_micros, o.currency)
          }
        />
      </dl>
      {o.monthly_cap_micros !== null ? (
        <Bar
          label={`Spent and held ${shown(o.display, "spent", o.spent_micros, o.currency)} of a cap of ${shown(o.display, "monthly_cap", o.monthly_cap_micros, o.currency)}`}
          total={o.monthly_cap_micros}
          parts={[
            { name: "spent", cls: "used", value: o.spent_micros },
            { name: "held", cls: "reserved", value: o.held_micros },
          ]}
        />
      ) : null}
      <p class="muted">
        {o.monthly_cap_micros !== null && used >= o.monthly_cap_micros
          ? "The cap is reached: calls past the quota are refused (402 spend_cap_reached) until the month ends"
          : "At the cap, calls past the quota are refused (402 spend_cap_reached) until the month ends"}{" "}
        ({when(o.month_ends_at)}).
      </p>
      {o.enabled ? (
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            save.mutate({ monthly_cap: capValue.trim() === "" ? null : capValue.trim() });
          }}
        >
          <label for="overage-cap-input">Monthly cap ({o.currency})</label>
          <input
            id="overage-cap-input"
            inputMode="decimal"
            pattern="(0|[1-9][0-9]{0,9})(\.[0-9]{1,6})?"
            placeholder="the pool's default"
            value={capValue}
            onInput={(e) => setCap(e.currentTarget.value)}
          />
          <button type="submit" disabled={save.isPending}>
            Set cap
          </button>
        </form>
      ) : null}
      {save.error ? <ErrorNote error={save.error} /> : null}
    </Card>
  );
}
