import type { Me } from "@gpupool/contract";
import { Bar, Card, Stat } from "../../components/ui.js";
import { clock, countdown, gpuTime, num, percent, seconds, shown, when, zoneName } from "../../format.js";
import { useNow } from "../../live.js";

/** Who pays, the quota meter (used / reserved / left, exact), and the countdown to the reset. */
export function QuotaCard(props: { me: Me; live: boolean }) {
  const { user, quota: q } = props.me;
  const full = q.quota > 0 ? (q.used + q.reserved) / q.quota : 1;
  return (
    <Card
      id="quota"
      title="GPU quota"
      wide
      actions={
        <span
          class={props.live ? "live on" : "live"}
          title={props.live ? "Updates as they happen" : "Refreshes every 2 s"}
        >
          {props.live ? "Live" : "Polling"}
        </span>
      }
    >
      <p class="charged-as">
        Charged as <strong>{user.name}</strong> (
        <code id="charged-identity">
          {q.identity.kind}:{q.identity.id}
        </code>
        ), tier <strong id="tier">{q.identity.tier}</strong>.{" "}
        <a href="#why" onClick={(e) => openWhy(e)}>
          How is this decided?
        </a>
      </p>
      <Bar
        label={`Quota: ${seconds(q.used)} used, ${seconds(q.reserved)} reserved by calls in flight, ${seconds(q.left)} left of ${seconds(q.quota)}`}
        total={q.quota}
        parts={[
          { name: "used", cls: "used", value: q.used },
          { name: "reserved", cls: "reserved", value: q.reserved },
        ]}
      />
      <dl class="stats legend">
        <Stat label="Used" id="quota-used" value={seconds(q.used)} hint={gpuTime(q.used)} />
        <Stat label="Reserved (in flight)" id="quota-reserved" value={seconds(q.reserved)} hint={gpuTime(q.reserved)} />
        <Stat label="Left" id="quota-left" value={seconds(q.left)} hint={gpuTime(q.left)} />
        <Stat
          label="Quota"
          id="quota-total"
          value={seconds(q.quota)}
          hint={q.bonus !== 0 ? `includes a bonus of ${seconds(q.bonus)}` : gpuTime(q.quota)}
        />
        <Stat
          label="Calls this window"
          id="quota-runs"
          value={q.max_runs === null ? num(q.runs) : `${num(q.runs)} / ${num(q.max_runs)}`}
        />
        <Stat label="Longest call" value={seconds(q.max_duration)} />
      </dl>
      <p class={full >= 1 ? "note warn" : "note"} id="at-full">
        <strong>{percent(Math.min(1, full))} taken.</strong> {atFull(props.me)}
      </p>
      <Reset resetsAt={q.resets_at} window={q.window} />
    </Card>
  );
}

function openWhy(e: Event): void {
  // The hash names the view: open the explanation without changing it.
  e.preventDefault();
  const why = document.getElementById("why-details") as HTMLDetailsElement | null;
  if (why === null) return;
  why.open = true;
  why.scrollIntoView({ block: "start" });
  why.querySelector("summary")?.focus();
}

/** What happens when the quota runs out, for this user's settings. */
function atFull(me: Me): string {
  const o = me.overage;
  const admission =
    "A call is admitted only if its whole reservation (duration × the size's cost) fits in what is left; the unused part is refunded when it ends.";
  if (o.enabled && o.blocked_by === null) {
    const cap =
      o.monthly_cap_micros === null
        ? ""
        : `, up to your monthly cap of ${shown(o.display, "monthly_cap", o.monthly_cap_micros, o.currency)}`;
    return `At 100 %, calls go on and what the quota cannot pay is paid from your credits at ${shown(o.display, "price_per_gpu_minute", o.price_per_gpu_minute_micros, o.currency)} per GPU-minute${cap}. ${admission}`;
  }
  const refused = "At 100 %, new calls are refused (429 quota_exceeded) until the window resets.";
  switch (o.blocked_by) {
    case "not_opted_in":
      return `${refused} Turn overage on below to let your credits pay past the quota. ${admission}`;
    case "tier_without_overage":
      return `${refused} Your tier does not offer paying past the quota with credits. ${admission}`;
    case "operator_disabled":
    case "not_a_user":
    case null:
      return `${refused} ${admission}`;
  }
}

function Reset(props: { resetsAt: string | null; window: number }) {
  const now = useNow(1000);
  if (props.resetsAt === null)
    return (
      <p class="reset" id="reset">
        <strong id="reset-countdown">Window not started</strong>: your {gpuTime(props.window)} window starts at your
        first call, and the quota resets {gpuTime(props.window)} after it.
      </p>
    );
  const ms = new Date(props.resetsAt).getTime() - now;
  return (
    <p class="reset" id="reset">
      Resets in{" "}
      <strong role="timer" id="reset-countdown" aria-label={`Resets in ${countdown(ms)}`}>
        {countdown(ms)}
      </strong>{" "}
      — at{" "}
      <time dateTime={props.resetsAt} title={when(props.resetsAt)}>
        {clock(props.resetsAt)} {zoneName()}
      </time>{" "}
      ({when(props.resetsAt)})
    </p>
  );
}
