import { useState } from "preact/hooks";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { App, AppList } from "@gpupool/contract";
import type { UpdateAppRequest } from "@gpupool/contract";
import { api } from "../../client.js";
import { Card, ErrorNote, Loading, Scroll } from "../../components/ui.js";
import { num, when } from "../../format.js";
import { OwnerPage } from "../owner-page.js";

/** Every app with its concurrency limit (which the operator may change), then every app's figures and duration advice. */
export function AppsPage() {
  const apps = useQuery({
    queryKey: ["admin", "apps"],
    queryFn: () => api.get("/v1/admin/apps", AppList, { limit: 1000 }),
  });
  return (
    <>
      <div class="grid">
        <Card id="apps" title="Apps" wide>
          {!apps.data ? (
            <Loading error={apps.error} what="apps" />
          ) : (
            <Scroll label="Apps">
              <table id="apps-table">
                <caption class="visually-hidden">Apps and their concurrency limits</caption>
                <thead>
                  <tr>
                    <th scope="col">App</th>
                    <th scope="col">Id</th>
                    <th scope="col">Owner</th>
                    <th scope="col" class="num">
                      Max concurrency
                    </th>
                    <th scope="col">Change the limit</th>
                    <th scope="col">Created</th>
                  </tr>
                </thead>
                <tbody>
                  {apps.data.apps.map((a) => (
                    <tr key={a.id} data-app={a.name}>
                      <th scope="row">{a.name}</th>
                      <td>
                        <code>{a.id}</code>
                      </td>
                      <td>
                        <code>{a.owner}</code>
                      </td>
                      <td class="num app-limit">{a.max_concurrency === null ? "no limit" : num(a.max_concurrency)}</td>
                      <td>
                        <LimitForm key={`${a.id}:${a.max_concurrency ?? ""}`} app={a} />
                      </td>
                      <td>{when(a.created_at)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </Scroll>
          )}
        </Card>
      </div>
      <OwnerPage admin />
    </>
  );
}

/**
 * An app's concurrency limit, changed (PATCH /v1/admin/apps/:id with the session's CSRF token):
 * a whole number from 1 to 100,000, or empty for no limit. It holds for the app's next calls.
 */
function LimitForm(props: { app: App }) {
  const queries = useQueryClient();
  const { app } = props;
  const [value, setValue] = useState(app.max_concurrency === null ? "" : String(app.max_concurrency));
  const update = useMutation({
    mutationFn: (change: UpdateAppRequest) =>
      api.send("PATCH", `/v1/admin/apps/${encodeURIComponent(app.id)}`, change, App),
    onSuccess: () => void queries.invalidateQueries({ queryKey: ["admin"] }),
  });
  const id = `limit-${app.id}`;
  const wanted = value.trim() === "" ? null : Number(value);
  const unchanged = wanted === app.max_concurrency;
  return (
    <form
      class="inline tight"
      onSubmit={(e) => {
        e.preventDefault();
        update.mutate({ max_concurrency: wanted });
      }}
    >
      <label for={id} class="visually-hidden">
        Max concurrency of {app.name} (empty: no limit)
      </label>
      <input
        id={id}
        class="limit"
        type="number"
        min="1"
        max="100000"
        step="1"
        placeholder="no limit"
        value={value}
        onInput={(e) => setValue(e.currentTarget.value)}
      />
      <button type="submit" disabled={update.isPending || unchanged}>
        {wanted === null && !unchanged ? "Remove limit" : "Set limit"}
      </button>
      {update.error ? <ErrorNote error={update.error} /> : null}
    </form>
  );
}
