import { newOrderedId } from "../../secrets.js";
import type { AuditRecord, Store, Tx } from "../../storage/store.js";

/** How the operator was signed in when acting: the admin token, or an operator's dashboard session. */
export type AuditActor = "admin_token" | "dashboard";

/**
 * Records an operator's action in the audit log, in the transaction that makes the change (so an
 * action is logged exactly when it happened). `detail` must never hold a secret.
 */
export async function audit(
  tx: Tx,
  entry: { action: string; target: string; actor: AuditActor; detail: Record<string, unknown> },
  now: number,
): Promise<void> {
  await tx.dashboard.addAudit({
    id: newOrderedId("au", now),
    at: now,
    action: entry.action,
    target: entry.target,
    actor: entry.actor,
    detail: JSON.stringify(entry.detail),
  });
}

/** The audit log, newest first, a page at a time. */
export class AuditLog {
  constructor(private readonly store: Store) {}

  async page(cursor: string | null, limit: number): Promise<{ entries: AuditRecord[]; next: string | null }> {
    const rows = await this.store.transaction((tx) => tx.dashboard.audit(cursor, limit + 1));
    const entries = rows.slice(0, limit);
    return { entries, next: rows.length > limit ? (entries[entries.length - 1]?.id ?? null) : null };
  }
}
