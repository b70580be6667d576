export interface SseEvent {
  readonly event: string;
  readonly data: string;
}

/**
 * Parses a `text/event-stream` body (WHATWG HTML "server-sent events" rules, minus `id` and
 * `retry`, which gpupool does not use): `field: value` lines, several `data` lines joined by
 * newlines, a blank line dispatches, `:` lines are comments (keep-alives).
 * Hand-written because the SDK has no dependencies and Node has no EventSource before v22.
 */
export async function* readServerSentEvents(
  body: ReadableStream<Uint8Array>,
  options: { readonly maxEventBytes?: number } = {},
): AsyncGenerator<SseEvent> {
  // Bounds one event, so a broken upstream cannot make the reader buffer without end.
  const maxEventBytes = options.maxEventBytes ?? 1024 * 1024;
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let first = true;
  let event = "";
  let data: string[] = [];
  let ended = false;

  try {
    while (true) {
      const line = nextLine();
      if (line === undefined) {
        if (ended) return;
        const chunk = await reader.read();
        if (chunk.done) {
          ended = true;
          buffer += decoder.decode();
          // A final line without a newline cannot complete an event (it still needs a blank
          // line), so it is dropped, as a browser would.
          continue;
        }
        buffer += decoder.decode(chunk.value, { stream: true });
        if (buffer.length > maxEventBytes)
          throw new Error(`an event of the stream is larger than ${maxEventBytes} bytes`);
        if (first && buffer.length > 0) {
          if (buffer.startsWith("\uFEFF")) buffer = buffer.slice(1);
          first = false;
        }
        continue;
      }

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
  } finally {
    // Closes the connection when the consumer stops early (granted, failed, aborted).
    await reader.cancel().catch(() => {});
    reader.releaseLock();
  }

  function nextLine(): string | undefined {
    const match = /\r\n|\r|\n/.exec(buffer);
    if (match === null) return undefined;
    // A chunk may end between "\r" and "\n"; wait for the next one before deciding.
    if (match[0] === "\r" && match.index === buffer.length - 1 && !ended) return undefined;
    const line = buffer.slice(0, match.index);
    buffer = buffer.slice(match.index + match[0].length);
    return line;
  }
}
