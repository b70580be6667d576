import type { FastifyReply, FastifyRequest } from "fastify";
import type { RouteContext } from "./context.js";
import type { SentEvent } from "./shared-views.js";

/**
 * A live view as Server-Sent Events: `produce` (usually a SharedView's, so many streams of one
 * view read and serialize it once) is called on connect, whenever leases change on
 * this replica or the leader (`events.onChange`, which a follower hears too), and every `pollMs`
 * for what no lease event announces (a heartbeat, a credit grant on another replica). Calls are
 * coalesced — at most one per `minGapMs` — and an event is written only when its data differs
 * from what this stream last sent. Keep-alive comments every 15 s; a shutting-down server ends it.
 */
export function liveStream(
  ctx: Pick<RouteContext, "events" | "log">,
  req: FastifyRequest,
  reply: FastifyReply,
  produce: () => Promise<readonly SentEvent[]>,
  options: { readonly minGapMs: number; readonly pollMs: number; readonly onClose?: () => void },
): void {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    "x-accel-buffering": "no",
  });
  const sent = new Map<string, string>();
  let closed = false;
  let running = false;
  let again = false;
  let timer: NodeJS.Timeout | null = null;
  let lastRun = 0;

  const run = async (): Promise<void> => {
    if (closed) return;
    if (running) return void (again = true);
    running = true;
    lastRun = performance.now();
    try {
      for (const e of await produce()) {
        if (closed || sent.get(e.event) === e.json) continue;
        sent.set(e.event, e.json);
        res.write(`event: ${e.event}\ndata: ${e.json}\n\n`);
      }
    } catch (err) {
      // The database may be away a moment: the next change or poll tries again.
      ctx.log.warn({ err }, "a dashboard stream could not read its view");
    } finally {
      running = false;
    }
    if (again) {
      again = false;
      schedule();
    }
  };
  function schedule(): void {
    if (closed || timer !== null) return;
    timer = setTimeout(
      () => {
        timer = null;
        void run();
      },
      Math.max(0, lastRun + options.minGapMs - performance.now()),
    );
    timer.unref();
  }

  const stopChanges = ctx.events.onChange(schedule);
  const poll = setInterval(schedule, options.pollMs);
  poll.unref();
  const ping = setInterval(() => res.write(": ping\n\n"), 15_000);
  ping.unref();
  const stopOnShutdown = ctx.events.onShutdown(() => close());
  function close(): void {
    if (closed) return;
    closed = true;
    stopChanges();
    stopOnShutdown();
    clearInterval(poll);
    clearInterval(ping);
    if (timer !== null) clearTimeout(timer);
    options.onClose?.();
    res.end();
  }
  req.raw.on("close", close);
  void run();
}
