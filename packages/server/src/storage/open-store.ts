import { SqliteStore } from "./sqlite/sqlite-store.js";
import type { Store } from "./store.js";

/** The adapter for a storage URL. */
export async function openStore(url: string): Promise<Store> {
  if (url.startsWith("sqlite:")) {
    const store = new SqliteStore(url);
    await store.migrate();
    return store;
  }
  throw new Error(`storage.url ${url.split("@").pop() ?? ""}: the PostgreSQL adapter is not available in this version; use sqlite:`);
}
