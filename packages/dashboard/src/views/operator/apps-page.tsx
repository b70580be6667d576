import { useQuery } from "@tanstack/react-query";
import { AppList } from "@gpupool/contract";
import { api } from "../../client.js";
import { Card, Loading, Scroll } from "../../components/ui.js";
import { num, when } from "../../format.js";
import { OwnerPage } from "../owner-page.js";

/** Every app with its concurrency limit, then every app's figures and duration advice. */
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
                    <th scope="col">Created</th>
                  </tr>
                </thead>
                <tbody>
                  {apps.data.apps.map((a) => (
                    <tr key={a.id}>
                      <th scope="row">{a.name}</th>
                      <td>
                        <code>{a.id}</code>
                      </td>
                      <td>
                        <code>{a.owner}</code>
                      </td>
                      <td class="num">{a.max_concurrency === null ? "no limit" : num(a.max_concurrency)}</td>
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
