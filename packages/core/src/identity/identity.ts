export type IdentityKind = "user" | "ip" | "app";

/** Who pays for a lease. */
export interface Identity {
  readonly kind: IdentityKind;
  readonly id: string;
  readonly tier: string;
}

export function identityKey(identity: { kind: IdentityKind; id: string }): string {
  return `${identity.kind}:${identity.id}`;
}

/** Parses the `sub` claim of an X-IP-Token: `user:<id>` or `ip:<address>`. */
export function parseSubject(sub: unknown): { kind: "user" | "ip"; id: string } | null {
  if (typeof sub !== "string") return null;
  const colon = sub.indexOf(":");
  if (colon <= 0) return null;
  const kind = sub.slice(0, colon);
  const id = sub.slice(colon + 1);
  if (id.length === 0 || id.length > 200) return null;
  if (kind === "user") return { kind, id };
  if (kind === "ip") {
    const normalized = normalizeIp(id);
    return normalized === null ? null : { kind, id: normalized };
  }
  return null;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/**
 * The charged form of a client address: IPv4 as is (/32); IPv6 reduced to its /64 prefix,
 * written `aaaa:bbbb:cccc:dddd::/64`, because one household or VM usually owns a whole /64 and
 * would otherwise get a fresh quota per address. IPv4-mapped IPv6 becomes IPv4. A value that was
 * already normalized (`…::/64`) is returned unchanged. Null when the text is not an address.
 */
export function normalizeIp(address: string): string | null {
  let text = address.trim();
  if (text.startsWith("[") && text.endsWith("]")) text = text.slice(1, -1);
  if (IPV4.test(text)) return text;
  if (text.endsWith("/64")) {
    const groups = expandIpv6(text.slice(0, -3));
    if (!groups || groups.slice(4).some((g) => g !== 0)) return null;
    return formatPrefix64(groups);
  }
  const zone = text.indexOf("%");
  if (zone >= 0) text = text.slice(0, zone);
  const groups = expandIpv6(text);
  if (!groups) return null;
  // ::ffff:a.b.c.d — an IPv4 client seen through a dual-stack socket.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    const hi = groups[6] ?? 0;
    const lo = groups[7] ?? 0;
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return formatPrefix64(groups);
}

function formatPrefix64(groups: number[]): string {
  return `${groups
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(":")}::/64`;
}

/** Eight 16-bit groups, or null. Accepts `::` compression and a trailing dotted IPv4. */
function expandIpv6(text: string): number[] | null {
  if (text.length === 0 || text.length > 45 || !/^[0-9a-fA-F:.]+$/.test(text)) return null;
  let tail: number[] = [];
  let body = text;
  const lastColon = text.lastIndexOf(":");
  const maybeV4 = text.slice(lastColon + 1);
  if (maybeV4.includes(".")) {
    if (!IPV4.test(maybeV4)) return null;
    const o = maybeV4.split(".").map(Number);
    tail = [((o[0] ?? 0) << 8) | (o[1] ?? 0), ((o[2] ?? 0) << 8) | (o[3] ?? 0)];
    body = text.slice(0, lastColon + 1);
    if (body.endsWith(":") && !body.endsWith("::")) body = body.slice(0, -1);
  }
  const parts = body.split("::");
  if (parts.length > 2) return null;
  const parse = (s: string): number[] | null => {
    if (s === "") return [];
    const out: number[] = [];
    for (const g of s.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = parse(parts[0] ?? "");
  const rest = parts.length === 2 ? parse(parts[1] ?? "") : [];
  if (!head || !rest) return null;
  const known = head.length + rest.length + tail.length;
  if (parts.length === 2) {
    if (known > 7) return null;
    return [...head, ...new Array<number>(8 - known).fill(0), ...rest, ...tail];
  }
  if (known !== 8) return null;
  return [...head, ...tail];
}
