import { readFileSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";

/** The two ends of a request's TCP connection, as the agent's socket sees them. */
export interface ConnectionEnds {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly localAddress?: string | undefined;
  readonly localPort?: number | undefined;
}

/**
 * The uid of the process that opened the connection of a request, or null when it cannot be told.
 *
 * TCP has no SO_PEERCRED, but on Linux the kernel lists every socket of the network namespace in
 * /proc/net/tcp{,6} with its owner's uid, readable by anyone: the caller's socket is the row whose
 * local end is the request's remote end and whose remote end is the agent. So a caller on this
 * host (127.0.0.1, or any address of the same network namespace) is known without privileges.
 * A caller in another network namespace (a container on a bridge) or on another host is not
 * listed: null.
 */
export function callerUid(ends: ConnectionEnds, readProc: (path: string) => string | null = readText): number | null {
  const { remoteAddress, remotePort, localAddress, localPort } = ends;
  if (remoteAddress === undefined || remotePort === undefined || localAddress === undefined || localPort === undefined)
    return null;
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"] as const) {
    const wantLocal = procEndpoints(remoteAddress, remotePort, table);
    const wantRemote = procEndpoints(localAddress, localPort, table);
    if (wantLocal.length === 0 || wantRemote.length === 0) continue;
    const text = readProc(table);
    if (text === null) continue;
    for (const line of text.split("\n").slice(1)) {
      // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
      const f = line.trim().split(/\s+/);
      const [local, remote, uid] = [f[1], f[2], f[7]];
      if (local === undefined || remote === undefined || uid === undefined) continue;
      if (wantLocal.includes(local) && wantRemote.includes(remote) && /^\d+$/.test(uid)) return Number(uid);
    }
  }
  return null;
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return null;
  }
}

const hex = (n: number, width: number) => n.toString(16).toUpperCase().padStart(width, "0");

/** An IPv4 address as /proc/net/tcp prints it: the 32-bit value in host (little-endian) order. */
function procIPv4(address: string): string {
  const b = address.split(".").map(Number);
  return [b[3], b[2], b[1], b[0]].map((x) => hex(x ?? 0, 2)).join("");
}

/** An IPv6 address as /proc/net/tcp6 prints it: four 32-bit words, each in host order. */
function procIPv6(address: string): string | null {
  const bytes = ipv6Bytes(address);
  if (bytes === null) return null;
  let out = "";
  for (let w = 0; w < 16; w += 4)
    out += [bytes[w + 3], bytes[w + 2], bytes[w + 1], bytes[w]].map((x) => hex(x ?? 0, 2)).join("");
  return out;
}

function ipv6Bytes(address: string): number[] | null {
  let text = address.split("%")[0] ?? "";
  let tail: number[] = [];
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted) {
    tail = (dotted[2] ?? "").split(".").map(Number);
    text = `${dotted[1] ?? ""}0:0`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const words = (s: string | undefined) =>
    s === undefined || s === "" ? [] : s.split(":").map((w) => parseInt(w, 16));
  const head = words(halves[0]);
  const rest = halves.length === 2 ? words(halves[1]) : [];
  const fill = 8 - head.length - rest.length;
  if (fill < 0 || (halves.length === 1 && fill !== 0)) return null;
  const all = [...head, ...Array<number>(fill).fill(0), ...rest];
  const bytes = all.flatMap((w) => [(w >> 8) & 0xff, w & 0xff]);
  if (tail.length === 4) bytes.splice(12, 4, ...tail);
  return bytes.some((x) => Number.isNaN(x)) ? null : bytes;
}

/**
 * The forms an endpoint can take in one table. A dual-stack agent sees an IPv4 caller as
 * ::ffff:a.b.c.d, while the caller's own socket is an IPv4 one (in /proc/net/tcp).
 */
function procEndpoints(address: string, port: number, table: "/proc/net/tcp" | "/proc/net/tcp6"): string[] {
  const p = hex(port, 4);
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  const v4 = isIPv4(address) ? address : mapped;
  if (table === "/proc/net/tcp") return v4 !== undefined ? [`${procIPv4(v4)}:${p}`] : [];
  const forms: string[] = [];
  if (isIPv6(address)) {
    const v6 = procIPv6(address);
    if (v6 !== null) forms.push(`${v6}:${p}`);
  }
  if (v4 !== undefined) {
    const v6 = procIPv6(`::ffff:${v4}`);
    if (v6 !== null) forms.push(`${v6}:${p}`);
  }
  return forms;
}
