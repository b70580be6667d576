import { Me, PoolView, QueueView } from "@gpupool/contract";
import { expect } from "vitest";

/** Reading the dashboard's live streams over a real socket, as a browser's EventSource does. */

const streams: AbortController[] = [];

/** Ends every stream opened (call it after each test). */
export function closeStreams(): void {
  for (const c of streams.splice(0)) c.abort();
}

export interface Stream {
  /**
   * Waits (generously) until the latest event named `event` satisfies `match` (it may have come
   * while waiting for another one: a stream sends a view only when it changed).
   */
  until(event: string, match: (data: any) => boolean): Promise<any>;
}

export async function stream(url: string, headers: Record<string, string>): Promise<Stream> {
  const ctl = new AbortController();
  streams.push(ctl);
  const res = await fetch(url, { headers: { accept: "text/event-stream", ...headers }, signal: ctl.signal });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const latest = new Map<string, unknown>();
  return {
    async until(event, match) {
      if (latest.has(event) && match(latest.get(event))) return latest.get(event);
      const deadline = Date.now() + 10_000;
      for (;;) {
        const end = buffer.indexOf("\n\n");
        if (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const name = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (name === undefined || data === undefined) continue;
          const parsed = JSON.parse(data);
          // Every event is what the contract says.
          const schema = { me: Me, pool: PoolView, queue: QueueView }[name];
          expect(schema?.safeParse(parsed).success, `${name}: ${data.slice(0, 300)}`).toBe(true);
          latest.set(name, parsed);
          if (name === event && match(parsed)) return parsed;
          continue;
        }
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no matching "${event}" event within 10 s`);
        const chunk = await Promise.race([
          reader.read(),
          new Promise<never>((_, reject) =>
            setTimeout(() => reject(new Error(`no "${event}" event within 10 s`)), left),
          ),
        ]);
        if (chunk.done) throw new Error("the stream ended");
        buffer += decoder.decode(chunk.value, { stream: true });
      }
    },
  };
}
