import { useMemo, useState } from "preact/hooks";
import { useQueryClient } from "@tanstack/react-query";
import { EndedEvent, FailedEvent, GrantedEvent, QueuedEvent } from "@gpupool/contract";
import type { Lease } from "@gpupool/contract";
import { on } from "@gpupool/sdk/browser";
import { Card } from "../../components/ui.js";
import { seconds, when } from "../../format.js";
import { pollUnless, useLive } from "../../live.js";
import { keys, useQueuedLeases } from "../../queries.js";

/** The caller's queued calls, each with its live place in line and expected wait. */
export function QueuedCard(props: { live: boolean }) {
  const queued = useQueuedLeases(pollUnless(props.live));
  const leases = queued.data?.leases ?? [];
  if (leases.length === 0) return null;
  return (
    <Card id="queued" title="Waiting for a GPU">
      <ul class="plain" id="queued-list">
        {leases.slice(0, 5).map((l) => (
          <QueuedLease key={l.id} lease={l} />
        ))}
      </ul>
    </Card>
  );
}

function QueuedLease(props: { lease: Lease }) {
  const queries = useQueryClient();
  const l = props.lease;
  const [place, setPlace] = useState<QueuedEvent>({
    position: l.position ?? 0,
    reason: l.reason ?? "node",
    eta_s: l.eta_s,
    eta_max_s: l.eta_max_s ?? null,
  });
  const done = () => void queries.invalidateQueries({ queryKey: keys.queued });
  const handlers = useMemo(
    () => ({
      queued: on(QueuedEvent, setPlace),
      granted: on(GrantedEvent, done),
      failed: on(FailedEvent, done),
      ended: on(EndedEvent, done),
    }),
    [l.id],
  );
  useLive(`/v1/leases/${encodeURIComponent(l.id)}/events`, handlers);
  return (
    <li class="queued" data-lease={l.id}>
      <span class="big" aria-live="polite">
        Position <strong class="queue-position">{place.position}</strong>
      </span>{" "}
      <span>
        {place.eta_s === null ? "wait unknown" : `about ${seconds(place.eta_s)}`}
        {place.eta_max_s === null || place.eta_max_s === undefined ? "" : ` (at most ${seconds(place.eta_max_s)})`}
      </span>
      <span class="muted">
        {" "}
        · {l.app ?? "own script"}, {l.size}, {seconds(l.duration)},{" "}
        {place.reason === "concurrency" ? "the app is at its limit" : "no slot free"}, queued {when(l.queued_at)}
      </span>
    </li>
  );
}
