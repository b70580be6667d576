import { describe, expect, it } from "vitest";
import { readServerSentEvents, type SseEvent } from "../src/sse.js";

function streamOf(chunks: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      controller.close();
    },
  });
}

async function collect(chunks: string[]): Promise<SseEvent[]> {
  const events: SseEvent[] = [];
  for await (const event of readServerSentEvents(streamOf(chunks))) events.push(event);
  return events;
}

describe("readServerSentEvents", () => {
  it("parses events, skips comments, joins data lines", async () => {
    expect(
      await collect([
        ": ping\n\n",
        'event: queued\ndata: {"position":2}\n\n',
        "data: a\ndata: b\n\n",
        "event:granted\ndata:{}\n\n",
      ]),
    ).toEqual([
      { event: "queued", data: '{"position":2}' },
      { event: "message", data: "a\nb" },
      { event: "granted", data: "{}" },
    ]);
  });

  it("handles events and CRLF split across chunks, a BOM, and a trailing partial event", async () => {
    expect(
      await collect(["\uFEFFeve", "nt: queued\r", '\ndata: {"po', 'sition":1}\r\n\r', "\nevent: granted\ndata: x"]),
    ).toEqual([{ event: "queued", data: '{"position":1}' }]);
  });

  it("splits multi-byte characters across chunks correctly", async () => {
    const bytes = new TextEncoder().encode("data: café\n\n");
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes.slice(0, 9));
        controller.enqueue(bytes.slice(9));
        controller.close();
      },
    });
    const events: SseEvent[] = [];
    for await (const event of readServerSentEvents(stream)) events.push(event);
    expect(events).toEqual([{ event: "message", data: "café" }]);
  });
});
