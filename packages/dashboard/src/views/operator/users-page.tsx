import { useEffect, useState } from "preact/hooks";
import { keepPreviousData, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { UserList, UserWithQuota, Wallet, WalletGrant } from "@gpupool/contract";
import type { CreditGrantRequest, UpdateUserRequest } from "@gpupool/contract";
import { api } from "../../client.js";
import { Card, ErrorNote, Loading, Stat } from "../../components/ui.js";
import { AuditCard } from "./audit-card.js";
import { num, seconds, shown, when } from "../../format.js";

const TIERS = ["free", "pro", "team", "enterprise"];

/** Find a user; set the tier, override the quota, grant credits. */
export function UsersPage() {
  const [q, setQ] = useState("");
  const [selected, setSelected] = useState<string | null>(null);
  const needle = useDebounced(q.trim(), 250);
  const users = useQuery({
    queryKey: ["admin", "users", needle],
    queryFn: () => api.get("/v1/admin/users", UserList, { q: needle === "" ? undefined : needle, limit: 50 }),
    placeholderData: keepPreviousData,
  });
  const found = users.data?.users ?? [];
  return (
    <div class="grid">
      <Card id="users" title="Users">
        <div class="toolbar">
          <label for="user-search">Find</label>
          <input
            id="user-search"
            type="search"
            placeholder="name or id"
            value={q}
            onInput={(e) => setQ(e.currentTarget.value)}
          />
        </div>
        {!users.data ? (
          <Loading error={users.error} what="users" />
        ) : (
          <ul class="pick" id="user-list">
            {found.map((u) => (
              <li key={u.id}>
                <button
                  type="button"
                  aria-pressed={selected === u.id}
                  onClick={() => setSelected(u.id)}
                  data-user={u.name}
                >
                  <strong>{u.name}</strong> <span class="badge">{u.tier}</span>
                  {u.quota_override === null ? null : <span class="badge warn">quota {seconds(u.quota_override)}</span>}
                </button>
              </li>
            ))}
            {found.length === 0 ? <li class="muted">No user matches.</li> : null}
          </ul>
        )}
      </Card>
      {selected === null ? null : <UserDetail key={selected} id={selected} />}
      <AuditCard />
    </div>
  );
}

function UserDetail(props: { id: string }) {
  const queries = useQueryClient();
  const path = `/v1/admin/users/${encodeURIComponent(props.id)}`;
  const user = useQuery({ queryKey: ["admin", "user", props.id], queryFn: () => api.get(path, UserWithQuota) });
  const wallet = useQuery({
    queryKey: ["admin", "wallet", props.id],
    queryFn: () => api.get(`${path}/wallet`, Wallet),
  });
  const refresh = () => void queries.invalidateQueries({ queryKey: ["admin"] });
  const update = useMutation({
    mutationFn: (change: UpdateUserRequest) => api.send("PATCH", path, change, UserWithQuota),
    onSuccess: refresh,
  });
  const grant = useMutation({
    mutationFn: (g: CreditGrantRequest) => api.send("POST", `${path}/credits`, g, WalletGrant),
    onSuccess: refresh,
  });
  const [tier, setTier] = useState<string | null>(null);
  const [quota, setQuota] = useState("");
  const [amount, setAmount] = useState("");
  const [category, setCategory] = useState<"promotional" | "purchased">("promotional");
  const [expires, setExpires] = useState("");
  const [source, setSource] = useState("");
  const u = user.data;
  if (!u)
    return (
      <Card id="user" title="User">
        <Loading error={user.error} what="the user" />
      </Card>
    );
  return (
    <Card id="user" title={`User ${u.name}`} wide>
      <dl class="stats">
        <Stat label="Id" value={<code>{u.id}</code>} />
        <Stat label="Tier" id="user-tier" value={u.tier} />
        <Stat
          label="Quota"
          id="user-quota"
          value={`${seconds(u.quota.quota)}${u.quota_override === null ? "" : " (override)"}`}
        />
        <Stat
          label="Used / reserved / left"
          value={`${seconds(u.quota.used)} / ${seconds(u.quota.reserved)} / ${seconds(u.quota.left)}`}
        />
        <Stat
          label="Credits"
          id="user-credits"
          value={
            wallet.data ? shown(wallet.data.display, "balance", wallet.data.balance_micros, wallet.data.currency) : "…"
          }
        />
        <Stat label="Calls this window" value={num(u.quota.runs)} />
      </dl>
      <div class="actions">
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            update.mutate({ tier: tier ?? u.tier });
          }}
        >
          <label for="set-tier">Tier</label>
          <select id="set-tier" value={tier ?? u.tier} onChange={(e) => setTier(e.currentTarget.value)}>
            {[...new Set([u.tier, ...TIERS])].map((t) => (
              <option key={t}>{t}</option>
            ))}
          </select>
          <button type="submit" disabled={update.isPending}>
            Set tier
          </button>
        </form>
        <form
          class="inline"
          onSubmit={(e) => {
            e.preventDefault();
            update.mutate({ quota: quota.trim() === "" ? null : Number(quota) });
          }}
        >
          <label for="set-quota">Quota override (s per window)</label>
          <input
            id="set-quota"
            type="number"
            min="0"
            max="604800"
            step="1"
            placeholder="the tier's"
            value={quota}
            onInput={(e) => setQuota(e.currentTarget.value)}
          />
          <button type="submit" disabled={update.isPending}>
            {quota.trim() === "" ? "Clear override" : "Override quota"}
          </button>
        </form>
        {update.error ? <ErrorNote error={update.error} /> : null}
        <form
          class="grant"
          onSubmit={(e) => {
            e.preventDefault();
            grant.mutate({
              amount: amount.trim(),
              category,
              idempotency_key: `dashboard-${crypto.randomUUID()}`,
              ...(expires === "" ? {} : { expires_at: new Date(expires).toISOString() }),
              ...(source.trim() === "" ? {} : { source: source.trim() }),
            });
            setAmount("");
          }}
        >
          <fieldset>
            <legend>Grant credits</legend>
            <label for="grant-amount">Amount ({wallet.data?.currency ?? ""})</label>
            <input
              id="grant-amount"
              required
              inputMode="decimal"
              pattern="(0|[1-9][0-9]{0,9})(\.[0-9]{1,6})?"
              value={amount}
              onInput={(e) => setAmount(e.currentTarget.value)}
            />
            <label for="grant-category">Kind</label>
            <select
              id="grant-category"
              value={category}
              onChange={(e) => setCategory(e.currentTarget.value as typeof category)}
            >
              <option value="promotional">promotional (a gift)</option>
              <option value="purchased">purchased (a top-up)</option>
            </select>
            <label for="grant-expires">Expires (optional)</label>
            <input
              id="grant-expires"
              type="datetime-local"
              value={expires}
              onInput={(e) => setExpires(e.currentTarget.value)}
            />
            <label for="grant-source">Note (optional)</label>
            <input id="grant-source" maxLength={200} value={source} onInput={(e) => setSource(e.currentTarget.value)} />
            <button type="submit" class="primary" disabled={grant.isPending || amount.trim() === ""}>
              Grant
            </button>
          </fieldset>
        </form>
        {grant.error ? <ErrorNote error={grant.error} /> : null}
        {grant.data ? (
          <p role="status" id="grant-done">
            Granted {shown(grant.data.display, "amount", grant.data.amount_micros, grant.data.currency)} (
            {grant.data.id}),{" "}
            {grant.data.expires_at === null ? "never expires" : `expires ${when(grant.data.expires_at)}`}.
          </p>
        ) : null}
      </div>
    </Card>
  );
}

function useDebounced<T>(value: T, ms: number): T {
  const [v, set] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => set(value), ms);
    return () => clearTimeout(t);
  }, [value, ms]);
  return v;
}
