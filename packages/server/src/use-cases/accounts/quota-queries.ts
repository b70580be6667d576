import { DomainError } from "@gpupool/core";
import type { Clock } from "../../clock.js";
import type { Store } from "../../storage/store.js";
import type { Caller } from "../identity/callers.js";
import type { IpTokenHeader, RequestIdentity } from "../identity/request-identity.js";
import type { Accounts, IdentityQuota } from "./accounts.js";

/** `GET /v1/quota`: the quota of whoever a call from this caller (with this X-IP-Token) would be charged to. */
export class QuotaQueries {
  constructor(
    private readonly store: Store,
    private readonly identity: RequestIdentity,
    private readonly accounts: Accounts,
    private readonly clock: Clock,
  ) {}

  async forCaller(caller: Caller & { kind: "app" | "user" }, ipToken: IpTokenHeader): Promise<IdentityQuota> {
    const attribution = await this.identity.of(caller, ipToken);
    if (!attribution.ok) throw new DomainError(attribution.problem);
    // A read: no lock, nothing written (a window that ended reads as a fresh one; see Accounts.quota).
    return this.store.read((tx) => this.accounts.quota(tx, attribution.charged, this.clock.now(), false));
  }
}
