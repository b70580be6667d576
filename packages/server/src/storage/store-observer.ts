import type { Logger } from "pino";
import type { Registry } from "prom-client";

/**
 * Where a store reports what it does on its own, outside any call (`Store.observe`; PostgreSQL:
 * its follower's commit groups, failed groups logged, group sizes and fallbacks counted). Each
 * part optional.
 */
export interface StoreObserver {
  readonly log?: Logger;
  readonly registry?: Registry;
}
