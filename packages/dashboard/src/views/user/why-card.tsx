import { PROBLEM_MEANINGS, PROBLEM_TITLES } from "@gpupool/contract";
import type { Me, ProblemCode, UsageRecord } from "@gpupool/contract";
import { Card, Loading } from "../../components/ui.js";
import { seconds, when } from "../../format.js";
import { useDiagnosis, useRecords } from "../../queries.js";

/** How the charged identity is decided (diagnose's steps), what a call would get now, and the last refusal. */
export function WhyCard(props: { me: Me }) {
  const diagnosis = useDiagnosis();
  const records = useRecords("7d");
  const refused = records.data?.records.find((r) => r.problem !== null);
  const d = diagnosis.data;
  return (
    <Card id="why" title="Why: who pays, and refusals">
      <LastRefusal record={refused} loading={!records.data} />
      {d?.verdict.outcome === "rejected" ? (
        <div class="note warn" id="next-refusal">
          <p>
            <strong>
              A {seconds(d.request.duration)} {d.request.size} call now would be refused
            </strong>{" "}
            (<code>{d.verdict.problem.code}</code>): {d.verdict.problem.detail}
          </p>
          {d.causes[0] ? (
            <p>
              <em>Fix:</em> {d.causes[0].fix}
            </p>
          ) : null}
        </div>
      ) : null}
      <details id="why-details">
        <summary>How your calls are charged to {props.me.user.name}</summary>
        {!d ? (
          <Loading error={diagnosis.error} what="the explanation" />
        ) : (
          <>
            <ol class="steps">
              {d.steps.map((s, i) => (
                <li key={i}>
                  <span class={`badge ${s.outcome}`}>{s.outcome}</span> <strong>{s.step}</strong>: {s.detail}
                </li>
              ))}
            </ol>
            <h3>
              Who pays for a {seconds(d.request.duration)} {d.request.size} call (reserves {seconds(d.request.reserves)}
              )
            </h3>
            <ul class="plain">
              {d.buckets.map((b) => (
                <li key={b.bucket}>
                  <span class={b.applies ? "badge ok" : "badge"}>{b.applies ? "applies" : "does not apply"}</span>{" "}
                  <strong>{b.bucket}</strong>: {b.detail}
                </li>
              ))}
            </ul>
            <p id="verdict">
              If you called now: <strong>{verdict(d.verdict)}</strong>
            </p>
            {d.causes.length > 0 ? (
              <ol class="causes">
                {d.causes.map((c) => (
                  <li key={c.rank}>
                    {c.cause} <em>Fix:</em> {c.fix}
                  </li>
                ))}
              </ol>
            ) : null}
          </>
        )}
      </details>
    </Card>
  );
}

function verdict(v: NonNullable<ReturnType<typeof useDiagnosis>["data"]>["verdict"]): string {
  switch (v.outcome) {
    case "granted":
      return "granted at once.";
    case "admitted":
      return "admitted (the quota allows it).";
    case "queued":
      return `queued at position ${v.position}${v.eta_s === null ? "" : `, about ${seconds(v.eta_s)} to wait`}.`;
    case "rejected":
      return `refused: ${v.problem.detail}`;
  }
}

function LastRefusal(props: { record: UsageRecord | undefined; loading: boolean }) {
  if (props.loading) return <p class="muted">Looking for refused calls…</p>;
  const r = props.record;
  if (r === undefined)
    return (
      <p id="last-refusal" class="muted">
        No call of yours was refused or timed out in the last 7 days.
      </p>
    );
  const code = r.problem as ProblemCode;
  return (
    <div id="last-refusal" class="note warn">
      <p>
        <strong>Last refused call</strong> ({when(r.ended_at)}, {r.app ?? "your own script"}, {r.size}):{" "}
        <strong>{PROBLEM_TITLES[code] ?? code}</strong> <code>{code}</code>
      </p>
      <p>{PROBLEM_MEANINGS[code] ?? ""}</p>
      {r.charged_s === 0 ? <p>Nothing was charged for it.</p> : <p>Charged {seconds(r.charged_s)}.</p>}
    </div>
  );
}
