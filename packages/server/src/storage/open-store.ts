import { PostgresStore } from "./postgres/postgres-store.js";
import { SqliteStore } from "./sqlite/sqlite-store.js";
import type { Store } from "./store.js";

/** The adapter for a storage URL, migrated and ready. */
export async function openStore(url: string): Promise<Store> {
  if (url.startsWith("sqlite:")) {
    const store = new SqliteStore(url);
    await store.migrate();
    return store;
  }
  if (url.startsWith("postgres://") || url.startsWith("postgresql://")) {
    const store = new PostgresStore(url);
    try {
      await store.migrate();
    } catch (err) {
      await store.close();
      throw err;
    }
    return store;
  }
  throw new Error('storage.url must start with "sqlite:" or "postgres://"');
}
