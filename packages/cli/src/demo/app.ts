// The demo's "ML app": a plain node:http server whose POST /generate runs a fake 2-second
// GPU job through the SDK, charged to whoever the request's X-IP-Token names.
import { createServer } from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createClient, forwardIpToken, GpupoolError } from "@gpupool/sdk";

export interface DemoApp {
  readonly url: string;
  close(): Promise<void>;
}

export interface DemoAppOptions {
  /** Control plane URL. */
  readonly poolUrl: string;
  readonly appKey: string;
  readonly host?: string;
  readonly port: number;
  /** How long the fake job holds the GPU (default 2 s). */
  readonly workMs?: number;
}

const MAX_BODY = 16 * 1024;

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
function work(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

async function readPrompt(req: IncomingMessage): Promise<string> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw Object.assign(new Error("body too large"), { status: 413 });
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8").trim();
  if (text === "") return "an astronaut riding a horse";
  try {
    const body = JSON.parse(text) as { prompt?: unknown };
    return typeof body.prompt === "string" && body.prompt !== ""
      ? body.prompt.slice(0, 500)
      : "an astronaut riding a horse";
  } catch {
    throw Object.assign(new Error('send JSON such as {"prompt": "a cat"} (or no body)'), { status: 400 });
  }
}

function send(res: ServerResponse, status: number, body: unknown, type = "application/json"): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { "content-type": type });
  res.end(typeof body === "string" ? body : `${JSON.stringify(body, null, 2)}\n`);
}

const ABOUT = `sdxl-demo: a gpupool demo app.

POST /generate   {"prompt": "..."} (optional) -> runs a fake 2 s GPU job with
                 gpu({ duration: 20 }) and returns { image, device, charged_to }.
The X-IP-Token of the request (the edge injects one per viewer) is forwarded to the
pool, so the viewer is charged; without one, the app itself is charged.
`;

/**
 * Who the pool will charge for this request, read from the X-IP-Token's claims. For display only:
 * the app never trusts this itself — the pool verifies the token when the app borrows a GPU.
 */
function chargedAs(req: IncomingMessage): string {
  const token = forwardIpToken(req.headers);
  if (token === undefined)
    return "This request has no X-IP-Token: a GPU call from it is charged to the app itself (anonymous).";
  try {
    const payload = JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")) as {
      sub?: unknown;
      exp?: unknown;
    };
    const sub = typeof payload.sub === "string" ? payload.sub : "?";
    const how = sub.startsWith("user:")
      ? "you are signed in at the edge"
      : "you are not signed in, so the edge named your IP address";
    return `You are charged as ${sub} (${how}).`;
  } catch {
    return "This request carries an X-IP-Token the app cannot read.";
  }
}

export async function startDemoApp(options: DemoAppOptions): Promise<DemoApp> {
  const pool = createClient({ url: options.poolUrl, appKey: options.appKey });
  const workMs = options.workMs ?? 2000;

  const generate = async (req: IncomingMessage, res: ServerResponse) => {
    const prompt = await readPrompt(req);
    // A client that hangs up gives the GPU back (queued: cancelled; running: released).
    const hangup = new AbortController();
    res.on("close", () => {
      if (!res.writableFinished) hangup.abort(new Error("the client closed the connection"));
    });
    const result = await pool.gpu(
      { duration: 20, ipToken: forwardIpToken(req.headers), signal: hangup.signal },
      async ({ lease, device, signal }) => {
        await work(workMs, signal);
        return {
          image: `data:image/png;base64,…fake image of "${prompt}"…`,
          prompt,
          device: { node: device.node, index: device.index, name: device.name, uuid: device.uuid, slots: device.slots },
          charged_to: `${lease.identity.kind}:${lease.identity.id}`,
          tier: lease.identity.tier,
          lease: lease.id,
        };
      },
    );
    send(res, 200, result);
  };

  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method === "GET" && path === "/")
      return send(res, 200, `${ABOUT}\n${chargedAs(req)}\n`, "text/plain; charset=utf-8");
    if (path !== "/generate") return send(res, 404, { error: "not found: try POST /generate" });
    if (req.method !== "POST") return send(res, 405, { error: "use POST /generate" });
    generate(req, res).catch((error: unknown) => {
      if (error instanceof GpupoolError) {
        // The pool's problem, as is: the viewer sees exactly why (quota, token, queue…).
        return send(res, error.status >= 400 ? error.status : 502, error.problem, "application/problem+json");
      }
      const status = (error as { status?: unknown }).status;
      send(res, typeof status === "number" ? status : 500, {
        error: error instanceof Error ? error.message : String(error),
      });
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${options.host ?? "127.0.0.1"}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
