import { BlockList, isIP } from "node:net";
import { normalizeIp } from "@gpupool/core";

/** Addresses whose X-Forwarded-For the edge believes: a load balancer or CDN in front of it. */
export class TrustedProxies {
  private readonly list = new BlockList();
  readonly empty: boolean;

  /** `cidrs`: addresses or CIDR blocks, IPv4 or IPv6. Throws on an entry that is neither. */
  constructor(cidrs: readonly string[]) {
    for (const entry of cidrs) {
      const [addr = "", bits] = entry.trim().split("/");
      const family = isIP(addr);
      if (family === 0) throw new Error(`"${entry}" is not an IP address or CIDR block`);
      const type = family === 4 ? "ipv4" : "ipv6";
      if (bits === undefined) this.list.addAddress(addr, type);
      else {
        const prefix = Number(bits);
        if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128))
          throw new Error(`"${entry}" has an invalid prefix length`);
        this.list.addSubnet(addr, prefix, type);
      }
    }
    this.empty = cidrs.length === 0;
  }

  has(address: string): boolean {
    if (this.empty) return false;
    const a = unmapped(address);
    const family = isIP(a);
    if (family === 0) return false;
    return this.list.check(a, family === 4 ? "ipv4" : "ipv6");
  }
}

/** `::ffff:1.2.3.4` (a dual-stack socket's view of an IPv4 peer) → `1.2.3.4`. */
function unmapped(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m?.[1] ?? address;
}

/**
 * The viewer's address as charged: the socket peer, unless that peer is a trusted proxy; then
 * X-Forwarded-For is read right to left, skipping trusted hops, and the first untrusted entry
 * is the viewer. Entries left of it were written by the client and could say anything. An entry
 * that is not an address ends the walk at the hop that wrote it. IPv6 is grouped by /64.
 */
export function viewerAddress(
  peer: string,
  forwardedFor: string | string[] | undefined,
  trusted: TrustedProxies,
): string | null {
  let current = peer;
  if (!trusted.empty && trusted.has(peer) && forwardedFor !== undefined) {
    const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(",") : forwardedFor)
      .split(",")
      .map((h) => h.trim())
      .filter((h) => h !== "");
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = stripPort(hops[i] ?? "");
      if (isIP(hop) === 0) break;
      current = hop;
      if (!trusted.has(hop)) break;
    }
  }
  return normalizeIp(current);
}

/** `1.2.3.4:5678` and `[::1]:5678` → the address; bare addresses unchanged. */
function stripPort(hop: string): string {
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(hop);
  if (v6?.[1] !== undefined) return v6[1];
  const v4 = /^(\d+\.\d+\.\d+\.\d+):\d+$/.exec(hop);
  return v4?.[1] ?? hop;
}
