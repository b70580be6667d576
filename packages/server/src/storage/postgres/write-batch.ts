import type { SqlValue } from "../table.js";

/** Statement texts of the combinations met so far (a handful: an admission's, a release's, a grant's). */
const combined = new Map<string, string>();

/** `text` with its parameters `$1…$n` numbered from `offset + 1`. */
const renumber = (text: string, offset: number): string =>
  offset === 0 ? text : text.replace(/\$(\d+)/g, (_, n: string) => `$${Number(n) + offset}`);

/**
 * The writes of a transaction that nothing waits for (a ledger's upsert, a lease's insert or
 * update, a usage record, a notification), held until the next statement that is waited for, or
 * the end of the transaction, and then sent as **one statement**: the writes as data-modifying
 * `WITH` queries of a `SELECT` (the notification's `pg_notify`, or `1`). PostgreSQL answers each
 * statement on its own (a Bind, an Execute and a Sync each, a message back for each): a release's
 * three writes were three statements, now one.
 *
 * Such queries run exactly once and to completion whatever the `SELECT` reads, but all on the
 * statement's one snapshot, and a statement may not change one row twice: so a batch holds at
 * most one write per kind (each kind is one table; a second write of a kind — a release that also
 * grants a queued lease updates two leases — sends the batch first), and no write of the batch
 * reads another's rows (none does: they are keyed by rows the transaction holds locked, or new).
 * A write of the batch that fails fails the statement, as it failed its own before: the
 * transaction is aborted, and the caller's deferral reports it.
 */
export class WriteBatch {
  private readonly kinds: string[] = [];
  private readonly texts: string[] = [];
  private params: SqlValue[] = [];
  private note: [string, string] | null = null;

  /**
   * `send`: executes a statement without waiting for it (the transaction's deferral); `check`:
   * throws if the transaction can send nothing more (it is over, or its session closed), so a write
   * held back is refused when it is made, as a statement would be.
   */
  constructor(
    private readonly send: (text: string, params: SqlValue[]) => void,
    private readonly check: () => void = () => undefined,
  ) {}

  /** A write of `kind` (one table), as its own statement would be (`$1…`); a batch holding that kind is sent first. */
  add(kind: string, text: string, params: readonly SqlValue[]): void {
    this.check();
    if (this.kinds.includes(kind)) this.flush();
    this.kinds.push(kind);
    this.texts.push(text);
    this.params.push(...params);
  }

  /** A notification (delivered at COMMIT, dropped by a rollback); a batch holding one is sent first. */
  notify(channel: string, payload: string): void {
    this.check();
    if (this.note !== null) this.flush();
    this.note = [channel, payload];
  }

  /** Sends what is held, as one statement (nothing held: nothing sent). */
  flush(): void {
    const { texts, note } = this;
    if (texts.length === 0 && note === null) return;
    const params = note === null ? this.params : [...this.params, ...note];
    const key = `${texts.join("\0")}\0${note === null ? "" : "notify"}`;
    let text = combined.get(key);
    if (text === undefined) {
      const tail = note === null ? "SELECT 1" : `SELECT pg_notify($${params.length - 1}, $${params.length})`;
      // Each write's parameters follow the ones before it (a text always has as many).
      let offset = 0;
      const numbered = texts.map((t) => {
        const n = renumber(t, offset);
        offset += (t.match(/\$\d+/g) ?? []).reduce((m, p) => Math.max(m, Number(p.slice(1))), 0);
        return n;
      });
      // One write alone, without a notification, is sent as it is.
      text =
        numbered.length === 1 && note === null
          ? numbered[0]!
          : numbered.length === 0
            ? tail
            : `WITH ${numbered.map((t, i) => `w${i} AS (${t})`).join(", ")} ${tail}`;
      combined.set(key, text);
    }
    this.kinds.length = 0;
    this.texts.length = 0;
    this.params = [];
    this.note = null;
    this.send(text, params);
  }
}
