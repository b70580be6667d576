import { useState } from "preact/hooks";
import { useQuery } from "@tanstack/react-query";
import { LeaseList } from "@gpupool/contract";
import type { UsageRecord } from "@gpupool/contract";
import { api } from "../../client.js";
import { Card, ErrorNote, Loading, Pager, Scroll } from "../../components/ui.js";
import { money, num, seconds, when } from "../../format.js";
import { RANGES, rangeFrom, useAppNames, useRecords } from "../../queries.js";
import type { Range } from "../../queries.js";

const PAGE = 20;

/** The recent calls (usage records), newest first, paged, with the range's CSV export. */
export function CallsCard() {
  const [range, setRange] = useState<Range>("7d");
  const [page, setPage] = useState(0);
  const records = useRecords(range);
  const costs = useSizeCosts();
  const names = useAppNames();
  const rows = records.data?.records ?? [];
  const pages = Math.ceil(rows.length / PAGE);
  return (
    <Card id="calls" title="Recent calls" wide actions={<CsvExport range={range} />}>
      <div class="toolbar">
        <label for="calls-range">Range</label>
        <select
          id="calls-range"
          value={range}
          onChange={(e) => {
            setRange(e.currentTarget.value as Range);
            setPage(0);
          }}
        >
          {Object.keys(RANGES).map((r) => (
            <option key={r} value={r}>
              last {r}
            </option>
          ))}
        </select>
        <span class="muted">
          {records.data ? `${num(rows.length)} calls${records.data.truncated ? " (the newest 5,000)" : ""}` : ""}
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
                  <th scope="col">Status</th>
                </tr>
              </thead>
              <tbody>
                {rows.slice(page * PAGE, page * PAGE + PAGE).map((r) => (
                  <CallRow
                    key={r.id}
                    r={r}
                    cost={costs.get(r.size)}
                    app={r.app === null ? null : (names.get(r.app) ?? r.app)}
                  />
                ))}
              </tbody>
            </table>
          </Scroll>
          <Pager page={page} pages={pages} onPage={setPage} label="Calls" />
        </>
      )}
    </Card>
  );
}

function CallRow(props: { r: UsageRecord; cost: number | undefined; app: string | null }) {
  const r = props.r;
  const paid =
    r.charged_s === 0
      ? "nothing"
      : r.overage_s === 0
        ? "quota"
        : r.quota_s === 0
          ? `credits (${money(r.charged_micros, r.currency)})`
          : `quota ${seconds(r.quota_s)} + credits ${seconds(r.overage_s)} (${money(r.charged_micros, r.currency)})`;
  return (
    <tr>
      <td>
        <time dateTime={r.ended_at}>{when(r.ended_at)}</time>
      </td>
      <td>{props.app ?? "own script"}</td>
      <td>
        {r.size}
        {props.cost === undefined ? "" : ` ×${num(props.cost, 2)}`}
      </td>
      <td class="num">{seconds(r.reserved_s)}</td>
      <td class="num">{seconds(r.held_ms / 1000)}</td>
      <td class="num">{seconds(r.charged_s)}</td>
      <td class="num">{seconds(r.refunded_s)}</td>
      <td>{paid}</td>
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
