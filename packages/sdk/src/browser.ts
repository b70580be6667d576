// The dashboard's client (`@gpupool/sdk/browser`): the page talks to the control plane that served
// it, signed in by the HttpOnly session cookie (never a token in storage or a URL). Every answer is
// decoded with the contract's schema; a problem+json becomes the SDK's typed error; state-changing
// requests carry the session's CSRF token.
import { DashboardSession, decodeWire } from "@gpupool/contract";
import type { DashboardSignIn, WireSchema, WireType } from "@gpupool/contract";
import { GpupoolError, normalizeProblem, sdkProblem } from "./errors.js";
import { problemToError } from "./problem-errors.js";
import { readServerSentEvents } from "./sse.js";

export type Query = Readonly<Record<string, string | number | boolean | null | undefined>>;
type Method = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

export interface BrowserClientOptions {
  /** Where the control plane is; default the page's own origin (same-origin requests only). */
  readonly base?: string;
  readonly fetch?: typeof globalThis.fetch;
}

/** What `readEvents` tells its caller about the stream itself (the events go to the handlers). */
export interface StreamState {
  readonly connected: boolean;
  /** The last failure, e.g. a 404 from a server without this stream; null while connected. */
  readonly error: GpupoolError | null;
}

export interface EventStreamOptions {
  readonly onState?: (state: StreamState) => void;
  /** First wait before reconnecting after the stream ends or fails (doubles up to 30 s). */
  readonly retryMs?: number;
  /** The largest event read (default 64 MiB: the pool's view with ten thousand calls queued is several). */
  readonly maxEventBytes?: number;
}

export interface BrowserClient {
  /** The CSRF token sent on every request that changes something (set from the session). */
  csrfToken: string | null;
  /** GET `path`, decoded with `schema`. */
  get<S extends WireSchema>(path: string, schema: S, query?: Query): Promise<WireType<S>>;
  /** A state-changing request with a JSON body (or none); the answer decoded with `schema`, or null for 204. */
  send<S extends WireSchema>(method: Method, path: string, body: unknown, schema: S): Promise<WireType<S>>;
  /** A state-changing request whose answer has no body (204). */
  sendEmpty(method: Method, path: string, body?: unknown): Promise<void>;
  /** GET a text answer (a CSV export), as sent. */
  text(path: string, query: Query, accept: string): Promise<string>;
  /** The dashboard session of this browser (cookie), or null when not signed in. */
  session(): Promise<DashboardSession | null>;
  /** Signs in with a user or admin token, or a one-time code from a sign-in link; keeps the CSRF token. */
  signIn(credential: DashboardSignIn): Promise<DashboardSession>;
  /** Revokes the session (the cookie is cleared by the answer). */
  signOut(): Promise<void>;
  /**
   * Follows a Server-Sent Events stream: each event's JSON data goes to the handler of its name
   * (decoded with that handler's schema). Reconnects with backoff when the stream ends or fails,
   * until the returned function is called.
   */
  readEvents(path: string, handlers: EventHandlers, options?: EventStreamOptions): () => void;
}

export interface EventHandler<S extends WireSchema = WireSchema> {
  readonly schema: S;
  readonly handle: (value: WireType<S>) => void;
}
export type EventHandlers = Readonly<Record<string, EventHandler<any>>>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** An event handler, typed by its schema. */
export function on<S extends WireSchema>(schema: S, handle: (value: WireType<S>) => void): EventHandler<S> {
  return { schema, handle };
}

export function createBrowserClient(options: BrowserClientOptions = {}): BrowserClient {
  const base = (options.base ?? "").replace(/\/+$/, "");
  const doFetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));

  const url = (path: string, query?: Query): string => {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== null) params.set(k, String(v));
    const q = params.toString();
    return `${base}${path}${q === "" ? "" : `?${q}`}`;
  };

  const request = async (method: Method, target: string, body: unknown, accept: string): Promise<Response> => {
    const headers: Record<string, string> = { accept };
    if (method !== "GET") {
      if (client.csrfToken !== null) headers["x-csrf-token"] = client.csrfToken;
      if (body !== undefined) headers["content-type"] = "application/json";
    }
    let response: Response;
    try {
      response = await doFetch(target, {
        method,
        headers,
        credentials: "same-origin",
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (error) {
      throw new GpupoolError(
        sdkProblem("control_plane_unavailable", "Pool not answering", 0, "The pool did not answer; retrying."),
        { cause: error },
      );
    }
    if (!response.ok) throw await problemOf(response);
    return response;
  };

  const decode = async <S extends WireSchema>(response: Response, schema: S): Promise<WireType<S>> => {
    const decoded = decodeWire(schema, await response.json());
    if (!decoded.ok)
      throw new GpupoolError(
        sdkProblem("invalid_response", "Unexpected answer", response.status, `The pool's answer: ${decoded.message}`),
      );
    return decoded.value;
  };

  const client: BrowserClient = {
    csrfToken: null,
    async get(path, schema, query) {
      return decode(await request("GET", url(path, query), undefined, "application/json"), schema);
    },
    async send(method, path, body, schema) {
      return decode(await request(method, url(path), body, "application/json"), schema);
    },
    async sendEmpty(method, path, body) {
      await request(method, url(path), body, "application/json");
    },
    async text(path, query, accept) {
      return (await request("GET", url(path, query), undefined, accept)).text();
    },
    async session() {
      try {
        const s = await client.get(SESSION, DashboardSession);
        client.csrfToken = s.csrf_token;
        return s;
      } catch (error) {
        // 404: a server without dashboard sessions; signed out either way.
        if (error instanceof GpupoolError && (error.status === 401 || error.status === 404)) return null;
        throw error;
      }
    },
    async signIn(credential) {
      const s = await client.send("POST", SESSION, credential, DashboardSession);
      client.csrfToken = s.csrf_token;
      return s;
    },
    async signOut() {
      try {
        await request("DELETE", url(SESSION), undefined, "application/json");
      } finally {
        client.csrfToken = null;
      }
    },
    readEvents(path, handlers, options = {}) {
      const controller = new AbortController();
      const firstWait = options.retryMs ?? 1000;
      let wait = firstWait;
      const follow = async (): Promise<void> => {
        while (!controller.signal.aborted) {
          try {
            const response = await doFetch(url(path), {
              headers: { accept: "text/event-stream" },
              credentials: "same-origin",
              signal: controller.signal,
            });
            if (!response.ok || response.body === null) throw await problemOf(response);
            options.onState?.({ connected: true, error: null });
            wait = firstWait;
            const maxEventBytes = options.maxEventBytes ?? 64 * 1024 * 1024;
            for await (const e of readServerSentEvents(response.body, { maxEventBytes })) {
              const handler = handlers[e.event];
              if (handler === undefined) continue;
              const decoded = decodeWire(handler.schema, JSON.parse(e.data));
              if (decoded.ok) handler.handle(decoded.value);
              else
                options.onState?.({
                  connected: true,
                  error: new GpupoolError(
                    sdkProblem("invalid_response", "Unexpected event", 200, `The ${e.event} event: ${decoded.message}`),
                  ),
                });
            }
            options.onState?.({ connected: false, error: null });
          } catch (error) {
            if (controller.signal.aborted) return;
            const failure =
              error instanceof GpupoolError
                ? error
                : new GpupoolError(
                    sdkProblem("control_plane_unavailable", "Pool not answering", 0, "The live stream was cut."),
                    { cause: error },
                  );
            options.onState?.({ connected: false, error: failure });
            wait = Math.min(wait * 2, 30_000);
          }
          await new Promise((resolve) => setTimeout(resolve, wait));
        }
      };
      void follow();
      return () => controller.abort();
    },
  };
  return client;
}

const SESSION = "/v1/dashboard/session";

export type { DashboardSession } from "@gpupool/contract";

/** The typed error of a failed answer: its problem+json, or one made from the status. */
async function problemOf(response: Response): Promise<GpupoolError> {
  const text = await response.text().catch(() => "");
  let body: unknown = undefined;
  try {
    body = JSON.parse(text) as unknown;
  } catch {
    // A proxy's HTML page: the status says enough.
  }
  return problemToError(normalizeProblem(body, response.status, `The pool answered ${response.status}.`), {
    url: response.url,
  });
}

export { GpupoolError } from "./errors.js";
export { CreditsExhaustedError, SpendCapReachedError } from "./errors-billing.js";
export { QuotaExceededError, UnauthorizedError } from "./errors.js";
