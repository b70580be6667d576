import { describe, expect, it } from "vitest";
import { Me, QueuedEvent, UsagePage } from "@gpupool/contract";
import { GpupoolError, QuotaExceededError, createBrowserClient, on } from "../src/browser.js";

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly credentials: string | undefined;
  readonly body: string | undefined;
}

/** A fetch that records each request and answers from `answer`. */
function fakeFetch(answer: (req: Seen) => Response) {
  const seen: Seen[] = [];
  const fetch = (async (input: string | URL | Request, init?: RequestInit) => {
    const req: Seen = {
      method: init?.method ?? "GET",
      url: input instanceof Request ? input.url : input instanceof URL ? input.href : input,
      headers: { ...(init?.headers as Record<string, string> | undefined) },
      credentials: init?.credentials,
      body: init?.body as string | undefined,
    };
    seen.push(req);
    return answer(req);
  }) as typeof globalThis.fetch;
  return { fetch, seen };
}

const json = (status: number, body: unknown, type = "application/json") =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": type } });

const SESSION = {
  role: "user",
  user: { id: "u_1", name: "ada", tier: "pro" },
  csrf_token: "c-1",
  expires_at: "2030-01-01T00:00:00.000Z",
};

describe("the dashboard's browser client", () => {
  it("signs in, then sends the session's CSRF token on every change and never on a read", async () => {
    const { fetch, seen } = fakeFetch((req) =>
      req.url.endsWith("/v1/dashboard/session") ? json(201, SESSION) : json(200, { overage: {} }),
    );
    const client = createBrowserClient({ fetch });
    const session = await client.signIn({ token: "gpu_u_secret" });
    expect(session.role).toBe("user");
    await client.get("/v1/usage", UsagePage, { limit: 5, cursor: undefined }).catch(() => undefined);
    await client.sendEmpty("PATCH", "/v1/me/billing", { overage: true });
    const [signIn, read, change] = seen;
    expect(signIn!.body).toBe(JSON.stringify({ token: "gpu_u_secret" }));
    expect(read!.url).toBe("/v1/usage?limit=5");
    expect(read!.headers["x-csrf-token"]).toBeUndefined();
    expect(change!.headers["x-csrf-token"]).toBe("c-1");
    expect(change!.headers["content-type"]).toBe("application/json");
    // Same-origin credentials only: the cookie never goes to another origin.
    for (const r of seen) expect(r.credentials).toBe("same-origin");
  });

  it("answers null for no session (401, or 404 from a server without dashboard sessions)", async () => {
    for (const status of [401, 404]) {
      const { fetch } = fakeFetch(() =>
        json(status, {
          type: "x",
          title: "t",
          status,
          detail: "no",
          code: status === 401 ? "unauthorized" : "not_found",
        }),
      );
      expect(await createBrowserClient({ fetch }).session()).toBeNull();
    }
  });

  it("turns problem+json into the SDK's typed errors, and an answer of the wrong shape into invalid_response", async () => {
    const problem = {
      type: "urn:gpupool:problem:quota_exceeded",
      title: "GPU quota exceeded",
      status: 429,
      detail: "Not enough quota left.",
      code: "quota_exceeded",
      requested: 60,
      left: 10,
    };
    const { fetch } = fakeFetch(() => json(429, problem, "application/problem+json"));
    const error = await createBrowserClient({ fetch })
      .get("/v1/me", Me)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QuotaExceededError);
    expect((error as QuotaExceededError).left).toBe(10);

    const wrong = fakeFetch(() => json(200, { user: "not a user" }));
    const bad = await createBrowserClient({ fetch: wrong.fetch })
      .get("/v1/me", Me)
      .catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(GpupoolError);
    expect((bad as GpupoolError).code).toBe("invalid_response");
  });

  it("follows an event stream: decoded events to their handler, reconnecting after it ends, until stopped", async () => {
    let opened = 0;
    const { fetch } = fakeFetch(() => {
      opened++;
      return new Response(`event: queued\ndata: {"position":${opened},"reason":"node","eta_s":null}\n\n`, {
        status: 200,
        headers: { "content-type": "text/event-stream" },
      });
    });
    const positions: number[] = [];
    const client = createBrowserClient({ fetch });
    const stop = client.readEvents(
      "/v1/leases/ls_1/events",
      { queued: on(QueuedEvent, (e) => positions.push(e.position)), ignored: on(Me, () => positions.push(-1)) },
      { retryMs: 10 },
    );
    const end = Date.now() + 10_000;
    while (positions.length < 2 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    stop();
    expect(positions.slice(0, 2)).toEqual([1, 2]);
  });
});
