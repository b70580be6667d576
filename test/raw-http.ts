// Sends raw bytes to a listening server and reads its one answer, as a client that writes HTTP
// by hand (or gets it wrong) would: for tests of what happens before any framework code runs.
import { connect } from "node:net";

export interface RawAnswer {
  readonly status: number;
  /** Lower-case header names; a repeated header keeps its last value. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
  /** Everything received, head and body. */
  readonly raw: string;
}

/**
 * Writes `bytes` (in the given pieces, one write each) to `port` and resolves with the first
 * response: once its body is complete (by Content-Length), or when the server closes.
 */
export function rawRequest(port: number, bytes: string | readonly string[]): Promise<RawAnswer> {
  const pieces = typeof bytes === "string" ? [bytes] : bytes;
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let received = Buffer.alloc(0);
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      const parsed = parse(received, closed, pieces[0]?.startsWith("HEAD ") === true);
      if (parsed === null) {
        if (closed) {
          done = true;
          reject(
            new Error(
              `the server closed the connection without a whole answer: ${JSON.stringify(received.toString("latin1").slice(0, 300))}`,
            ),
          );
        }
        return;
      }
      done = true;
      socket.destroy();
      resolve(parsed);
    };
    socket.on("data", (d: Buffer) => {
      received = Buffer.concat([received, d]);
      finish(false);
    });
    socket.on("close", () => finish(true));
    // A reset after the answer arrived is the server closing on a request it refused.
    socket.on("error", () => finish(true));
    socket.on("connect", () => {
      for (const piece of pieces) socket.write(piece, "latin1");
    });
  });
}

/** The answer in `received`, or null while it is not whole (a HEAD's answer has no body, whatever its Content-Length). */
function parse(received: Buffer, closed: boolean, head: boolean): RawAnswer | null {
  const text = received.toString("latin1");
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return null;
  const [statusLine = "", ...lines] = text.slice(0, end).split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? NaN);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const bodyBytes = received.subarray(Buffer.byteLength(text.slice(0, end + 4), "latin1"));
  const length = head ? 0 : headers["content-length"] === undefined ? null : Number(headers["content-length"]);
  if (length !== null && bodyBytes.length < length) return null;
  if (length === null && !closed) return null;
  return {
    status,
    headers,
    body: bodyBytes.subarray(0, length ?? bodyBytes.length).toString("utf8"),
    raw: text,
  };
}
