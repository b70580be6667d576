import type { Me } from "@gpupool/contract";
import { Card, Loading, Stat, Scroll } from "../../components/ui.js";
import { shown, when } from "../../format.js";
import { useWallet } from "../../queries.js";

/** The credits by grant, in the order they are spent, with expiry. */
export function CreditsCard(props: { me: Me }) {
  const c = props.me.credits;
  const wallet = useWallet();
  return (
    <Card id="credits" title="Credits">
      <dl class="stats">
        <Stat label="Balance" id="credits-balance" value={shown(c.display, "balance", c.balance_micros, c.currency)} />
        <Stat label="Held (in flight)" value={shown(c.display, "held", c.held_micros, c.currency)} />
        <Stat label="Available" value={shown(c.display, "available", c.available_micros, c.currency)} />
      </dl>
      {!wallet.data ? (
        <Loading error={wallet.error} what="your grants" />
      ) : wallet.data.grants.length === 0 ? (
        <p class="muted">No credits yet.</p>
      ) : (
        <Scroll label="Credit grants">
          <table id="grants">
            <caption class="visually-hidden">Credit grants, spent in this order</caption>
            <thead>
              <tr>
                <th scope="col">Grant</th>
                <th scope="col" class="num">
                  Left
                </th>
                <th scope="col" class="num">
                  Of
                </th>
                <th scope="col">Expires</th>
              </tr>
            </thead>
            <tbody>
              {wallet.data.grants.map((g) => (
                <tr key={g.id}>
                  <td>
                    <span class="badge">{g.category}</span> {g.source}
                  </td>
                  <td class="num">{shown(g.display, "remaining", g.remaining_micros, g.currency)}</td>
                  <td class="num">{shown(g.display, "amount", g.amount_micros, g.currency)}</td>
                  <td>{g.expires_at === null ? "never" : when(g.expires_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </Scroll>
      )}
    </Card>
  );
}
