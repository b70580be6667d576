import { useState } from "preact/hooks";
import { useQuery } from "@tanstack/react-query";
import { AuditPage } from "@gpupool/contract";
import { api } from "../../client.js";
import { Card, Loading, Scroll } from "../../components/ui.js";
import { when } from "../../format.js";

/** Every operator action (tier, quota, credits, sessions), newest first, with who did it. */
export function AuditCard() {
  const [cursors, setCursors] = useState<(string | undefined)[]>([undefined]);
  const cursor = cursors[cursors.length - 1];
  const audit = useQuery({
    queryKey: ["admin", "audit", cursor ?? ""],
    queryFn: () => api.get("/v1/admin/audit", AuditPage, { limit: 20, cursor }),
  });
  const page = audit.data;
  return (
    <Card id="audit" title="Audit log" wide>
      {!page ? (
        <Loading error={audit.error} what="the audit log" />
      ) : page.entries.length === 0 ? (
        <p class="muted">No operator action yet.</p>
      ) : (
        <>
          <Scroll label="Audit log">
            <table id="audit-table">
              <caption class="visually-hidden">Operator actions, newest first</caption>
              <thead>
                <tr>
                  <th scope="col">When</th>
                  <th scope="col">Action</th>
                  <th scope="col">Target</th>
                  <th scope="col">What changed</th>
                  <th scope="col">By</th>
                </tr>
              </thead>
              <tbody>
                {page.entries.map((e) => (
                  <tr key={e.id}>
                    <td>{when(e.at)}</td>
                    <td>
                      <code>{e.action}</code>
                    </td>
                    <td>
                      <code>{e.target}</code>
                    </td>
                    <td>
                      {Object.entries(e.detail)
                        .map(([k, v]) => `${k}: ${JSON.stringify(v)}`)
                        .join(", ")}
                    </td>
                    <td>{e.actor === "dashboard" ? "dashboard" : "admin token"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Scroll>
          <nav class="pager" aria-label="Audit log pages">
            <button type="button" disabled={cursors.length <= 1} onClick={() => setCursors(cursors.slice(0, -1))}>
              Newer
            </button>
            <button
              type="button"
              disabled={page.next_cursor === null}
              onClick={() => setCursors([...cursors, page.next_cursor ?? undefined])}
            >
              Older
            </button>
          </nav>
        </>
      )}
    </Card>
  );
}
