import { useEffect, useState } from "preact/hooks";
import type { EventHandlers } from "@gpupool/sdk/browser";
import { api } from "./client.js";

/**
 * Follows a Server-Sent Events stream while the component is shown. Returns whether it is
 * connected: the queries it feeds poll instead while it is not (a server without the stream, or
 * one restarting), so the page stays current either way.
 */
export function useLive(path: string | null, handlers: EventHandlers): boolean {
  const [connected, setConnected] = useState(false);
  useEffect(() => {
    if (path === null) return;
    return api.readEvents(path, handlers, { onState: (s) => setConnected(s.connected) });
    // The handlers only write into the query cache, so the first ones serve for the stream's life.
  }, [path]);
  return connected;
}

/** How often a query polls: never while its stream is live, else every `ms`. */
export function pollUnless(live: boolean, ms = 2_000): number | false {
  return live ? false : ms;
}

/** The current time, ticking every `ms` (for countdowns and "seconds ago"). */
export function useNow(ms = 1_000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}
