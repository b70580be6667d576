export interface SseEvent {
  readonly event: string;
  readonly data: string;
}

/** Bounds one event, so a broken upstream cannot make the agent buffer without end. */
const MAX_BUFFER = 1024 * 1024;

/**
 * Reads a `text/event-stream` body: `field: value` lines, `data` lines joined by newlines, a
 * blank line dispatches, `:` lines are comments (keep-alives). `id` and `retry` are not used.
 */
export async function* readServerSentEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "";
  let data: string[] = [];
  try {
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) return;
      buffer += decoder.decode(chunk.value, { stream: true });
      if (buffer.length > MAX_BUFFER) throw new Error("an event of the control plane's stream is larger than 1 MiB");
      let newline: RegExpExecArray | null;
      while ((newline = /\r\n|\n|\r(?=[^\n])/.exec(buffer)) !== null) {
        const line = buffer.slice(0, newline.index);
        buffer = buffer.slice(newline.index + newline[0].length);
        if (line === "") {
          if (data.length > 0) yield { event: event === "" ? "message" : event, data: data.join("\n") };
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}
