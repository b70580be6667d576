import { useState } from "preact/hooks";
import { useQuery } from "@tanstack/react-query";
import { LeaseList, UsagePage } from "@gpupool/contract";
import type { UsageRecord } from "@gpupool/contract";
import { api } from "../../client.js";
import { Card, ErrorNote, Loading, Pager, Scroll } from "../../components/ui.js";
import { num, seconds, when } from "../../format.js";
import { RANGES, keys, rangeFrom, useSummary } from "../../queries.js";
import type { Range } from "../../queries.js";

const PAGE = 20;

/** The recent calls (usage records), newest first, a page at a time from the server, with the range's CSV export. */
export function CallsCard() {
  const [range, setRange] = useState<Range>("7d");
  // The cursor of each page seen so far: Previous goes back along them, Next follows the last answer's.
  const [cursors, setCursors] = useState<readonly (string | undefined)[]>([undefined]);
  const page = cursors.length - 1;
  const records = useCallsPage(range, cursors[page]);
  const total = useSummary(range, "day").data?.total.calls;
  const costs = useSizeCosts();
  const rows = records.data?.records ?? [];
  const next = records.data?.next_cursor ?? null;
  const pages = total === undefined ? page + (next === null ? 1 : 2) : Math.max(1, Math.ceil(total / PAGE));
  const onPage = (to: number) =>
    setCursors((cs) => (to < cs.length - 1 ? cs.slice(0, to + 1) : next === null ? cs : [...cs, next]));
  return (
    <Card id="calls" title="Recent calls" wide actions={<CsvExport range={range} />}>
      <div class="toolbar">
        <label for="calls-range">Range</label>
        <select
          id="calls-range"
          value={range}
          onChange={(e) => {
            setRange(e.currentTarget.value as Range);
            setCursors([undefined]);
          }}
        >
          {Object.keys(RANGES).map((r) => (
            <option key={r} value={r}>
              last {r}
            </option>
          ))}
        </select>
        <span class="muted" id="calls-count">
          {total === undefined ? "" : `${num(total)} calls`}
        </span>
      </div>
      {!records.data ? (
        <Loading error={records.error} what="your calls" />
      ) : rows.length === 0 ? (
        <p class="muted">No calls ended in this range.</p>
      ) : (
        <>
          <Scroll label="Recent calls">
            <table id="calls-table">
              <caption class="visually-hidden">Calls that ended, newest first</caption>
              <thead>
                <tr>
                  <th scope="col">Ended</th>
                  <th scope="col">App</th>
                  <th scope="col">Size</th>
                  <th scope="col" class="num">
                    Reserved
                  </th>
                  <th scope="col" class="num">
                    Held
                  </th>
                  <th scope="col" class="num">
                    Charged
                  </th>
                  <th scope="col" class="num">
                    Refunded
                  </th>
                  <th scope="col">Paid by</th>
                  <th scope="col" class="num">
                    Cost
                  </th>
                  <th scope="col">Status</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((r) => (
                  <CallRow key={r.id} r={r} cost={costs.get(r.size)} />
                ))}
              </tbody>
            </table>
          </Scroll>
          <Pager page={page} pages={Math.max(pages, page + 1)} onPage={onPage} label="Calls" />
        </>
      )}
    </Card>
  );
}

/** One page of the range's records, newest first (`order=desc`, keyset pages). */
function useCallsPage(range: Range, cursor: string | undefined) {
  return useQuery({
    queryKey: keys.calls(range, cursor),
    queryFn: () => api.get("/v1/usage", UsagePage, { from: rangeFrom(range), order: "desc", limit: PAGE, cursor }),
    placeholderData: (previous) => previous,
  });
}

const PAID_BY: Readonly<Record<UsageRecord["cost"]["paid_by"], string>> = {
  quota: "quota",
  credits: "credits",
  quota_and_credits: "quota + credits",
  nothing: "nothing",
};

function CallRow(props: { r: UsageRecord; cost: number | undefined }) {
  const r = props.r;
  return (
    <tr data-call={r.id}>
      <td>
        <time dateTime={r.ended_at}>{when(r.ended_at)}</time>
      </td>
      <td class="call-app">{r.app === null ? "own script" : (r.app_name ?? r.app)}</td>
      <td>
        {r.size}
        {props.cost === undefined ? "" : ` ×${num(props.cost, 2)}`}
      </td>
      <td class="num">{seconds(r.reserved_s)}</td>
      <td class="num">{seconds(r.held_ms / 1000)}</td>
      <td class="num">{seconds(r.charged_s)}</td>
      <td class="num">{seconds(r.refunded_s)}</td>
      <td class="call-paid" title={r.cost.display.gpu}>
        {PAID_BY[r.cost.paid_by]}
        {r.cost.paid_by === "quota_and_credits" ? <span class="muted"> ({r.cost.display.gpu})</span> : null}
      </td>
      <td class="num call-cost">{r.cost.display.amount}</td>
      <td>
        <span class={`badge ${r.status}`}>{r.status}</span>
        {r.problem === null ? null : <code> {r.problem}</code>}
      </td>
    </tr>
  );
}

/** Each size's cost multiplier, as the caller's recent leases name them (usage records do not). */
function useSizeCosts(): Map<string, number> {
  const leases = useQuery({
    queryKey: ["leases", "recent"],
    queryFn: () => api.get("/v1/leases", LeaseList, { limit: 100 }),
    staleTime: 60_000,
  });
  const costs = new Map<string, number>();
  for (const l of leases.data?.leases ?? []) costs.set(l.size, l.cost);
  return costs;
}

/** Downloads the range's records as the server writes them (`GET /v1/usage?format=csv`). */
function CsvExport(props: { range: Range }) {
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const download = async () => {
    setBusy(true);
    setError(null);
    try {
      const csv = await api.text("/v1/usage", { format: "csv", from: rangeFrom(props.range) }, "text/csv");
      const url = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = `gpupool-usage-${props.range}.csv`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <span>
      <button type="button" id="export-csv" disabled={busy} onClick={() => void download()}>
        Export CSV
      </button>
      {error ? <ErrorNote error={error} /> : null}
    </span>
  );
}
