import { checkServerResponse } from "../contract/check-response.js";

/**
 * Every answer this test process gets from a control plane it started (by `fetch`, the SDK's
 * included) is checked against the contract, as the in-process HTTP suites check theirs: a server
 * binary whose answer the OpenAPI document (and so docs/wire.md) does not describe fails the call
 * that got it. Event streams are left alone (their bodies do not end); edges, agents and apps are
 * not control planes and are not checked.
 */
const planes = new Set<string>();
let original: typeof fetch | null = null;

export function checkAnswersOf(baseUrl: string): void {
  planes.add(new URL(baseUrl).origin);
  if (original !== null) return;
  const fetchFirst = globalThis.fetch;
  original = fetchFirst;
  globalThis.fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const res = await fetchFirst(input, init);
    const url = new URL(typeof input === "string" ? input : input instanceof URL ? input.href : input.url);
    const type = res.headers.get("content-type") ?? "";
    if (!planes.has(url.origin) || type.startsWith("text/event-stream")) return res;
    const text = await res.clone().text();
    let body: unknown = text;
    if (/^application\/(?:[a-z.+-]*\+)?json\b/.test(type))
      try {
        body = JSON.parse(text);
      } catch {
        /* not JSON: the checker says so */
      }
    const method = init?.method ?? (input instanceof Request ? input.method : "GET");
    checkServerResponse({ method, url: url.pathname + url.search, status: res.status, contentType: type, body });
    return res;
  };
}
