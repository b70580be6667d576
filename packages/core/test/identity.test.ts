import { describe, expect, it } from "vitest";
import { identityKey, normalizeIp, parseSubject } from "../src/index.js";

describe("normalizeIp — IPv4", () => {
  it.each(["1.2.3.4", "0.0.0.0", "255.255.255.255", "203.0.113.7", "10.0.0.1"])("keeps %s as is (/32)", (ip) => {
    expect(normalizeIp(ip)).toBe(ip);
  });

  it("trims surrounding whitespace", () => {
    expect(normalizeIp("  1.2.3.4 \n")).toBe("1.2.3.4");
  });

  it("keeps two IPv4 addresses in the same /24 apart", () => {
    expect(normalizeIp("1.2.3.4")).not.toBe(normalizeIp("1.2.3.5"));
  });

  it.each(["1.2.3.256", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.-1", "1..3.4", "1.2.3.4/32", "1.2.3.4:80"])(
    "refuses %j",
    (ip) => {
      expect(normalizeIp(ip)).toBeNull();
    },
  );
});

describe("normalizeIp — IPv6 /64", () => {
  it("reduces a full address to its /64 prefix", () => {
    expect(normalizeIp("2001:0db8:0000:0000:0000:0000:0000:0001")).toBe("2001:db8:0:0::/64");
  });

  it("gives the full and the compressed spelling the same prefix text", () => {
    const full = normalizeIp("2001:0db8:85a3:0000:0000:8a2e:0370:7334");
    const compressed = normalizeIp("2001:db8:85a3::8a2e:370:7334");
    expect(full).toBe("2001:db8:85a3:0::/64");
    expect(compressed).toBe(full);
  });

  it("is case-insensitive", () => {
    expect(normalizeIp("2001:DB8:ABCD:12::1")).toBe(normalizeIp("2001:db8:abcd:12::1"));
  });

  it("makes two addresses in one /64 equal", () => {
    const a = normalizeIp("2001:db8:1:2:aaaa:bbbb:cccc:dddd");
    const b = normalizeIp("2001:db8:1:2::1");
    expect(a).not.toBeNull();
    expect(a).toBe(b);
  });

  it("keeps addresses in different /64s apart", () => {
    expect(normalizeIp("2001:db8:1:2::1")).not.toBe(normalizeIp("2001:db8:1:3::1"));
    expect(normalizeIp("2001:db8::1")).not.toBe(normalizeIp("2001:db9::1"));
  });

  it("handles :: at either end", () => {
    expect(normalizeIp("::1")).toBe("0:0:0:0::/64");
    expect(normalizeIp("::")).toBe("0:0:0:0::/64");
    expect(normalizeIp("fe80::")).toBe("fe80:0:0:0::/64");
    expect(normalizeIp("1:2:3:4:5:6:7::")).toBe("1:2:3:4::/64");
  });

  it("returns an already normalized prefix unchanged (idempotent)", () => {
    const once = normalizeIp("2001:db8:85a3::8a2e:370:7334");
    expect(once).not.toBeNull();
    expect(normalizeIp(once ?? "")).toBe(once);
  });

  it("refuses a /64 suffix on an address with host bits", () => {
    expect(normalizeIp("2001:db8::1/64")).toBeNull();
  });

  it("strips brackets", () => {
    expect(normalizeIp("[2001:db8::1]")).toBe("2001:db8:0:0::/64");
    expect(normalizeIp("[1.2.3.4]")).toBe("1.2.3.4");
  });

  it("drops a zone id", () => {
    expect(normalizeIp("fe80::1%eth0")).toBe("fe80:0:0:0::/64");
    expect(normalizeIp("[fe80::1%25en0]")).toBe("fe80:0:0:0::/64");
  });

  it("accepts a trailing dotted IPv4 part in a non-mapped address", () => {
    expect(normalizeIp("64:ff9b::192.0.2.33")).toBe("64:ff9b:0:0::/64");
    expect(normalizeIp("1:2:3:4:5:6:1.2.3.4")).toBe("1:2:3:4::/64");
  });
});

describe("normalizeIp — IPv4-mapped IPv6", () => {
  it.each([
    ["::ffff:1.2.3.4", "1.2.3.4"],
    ["::FFFF:203.0.113.7", "203.0.113.7"],
    ["[::ffff:10.0.0.1]", "10.0.0.1"],
    ["::ffff:0102:0304", "1.2.3.4"],
    ["0:0:0:0:0:ffff:c000:0221", "192.0.2.33"],
  ])("%s becomes %s", (mapped, v4) => {
    expect(normalizeIp(mapped)).toBe(v4);
  });

  it("charges the mapped and the plain form to the same identity", () => {
    expect(normalizeIp("::ffff:198.51.100.9")).toBe(normalizeIp("198.51.100.9"));
  });
});

describe("normalizeIp — garbage", () => {
  it.each([
    "",
    "   ",
    "garbage",
    "localhost",
    ":::",
    "1::2::3",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7:8::",
    "12345::1",
    "g::1",
    ":1:2:3:4:5:6:7",
    "1:2:3:4:5:6:7:",
    "::ffff:1.2.3.256",
    "[::1",
    "[::1]:8080",
    "%eth0",
    "1".repeat(46),
    "1:".repeat(30) + "1",
    "a".repeat(10_000),
  ])("returns null for %j", (text) => {
    expect(normalizeIp(text)).toBeNull();
  });
});

describe("parseSubject", () => {
  it("parses user subjects", () => {
    expect(parseSubject("user:u_123")).toEqual({ kind: "user", id: "u_123" });
    expect(parseSubject("user:a:b")).toEqual({ kind: "user", id: "a:b" });
  });

  it("normalizes ip subjects", () => {
    expect(parseSubject("ip:1.2.3.4")).toEqual({ kind: "ip", id: "1.2.3.4" });
    expect(parseSubject("ip:2001:db8::1")).toEqual({ kind: "ip", id: "2001:db8:0:0::/64" });
    expect(parseSubject("ip:::ffff:1.2.3.4")).toEqual({ kind: "ip", id: "1.2.3.4" });
    expect(parseSubject("ip:2001:db8:0:0::/64")).toEqual({ kind: "ip", id: "2001:db8:0:0::/64" });
  });

  it.each([
    ["not a string", 42],
    ["null", null],
    ["no colon", "user"],
    ["empty kind", ":abc"],
    ["empty id", "user:"],
    ["unknown kind", "app:abc"],
    ["unknown kind org", "org:abc"],
    ["bad ip", "ip:1.2.3.256"],
    ["garbage ip", "ip:nope"],
    ["overlong id", "user:" + "x".repeat(201)],
  ])("refuses %s", (_label, sub) => {
    expect(parseSubject(sub)).toBeNull();
  });

  it("accepts an id of exactly 200 characters", () => {
    expect(parseSubject("user:" + "x".repeat(200))).toEqual({ kind: "user", id: "x".repeat(200) });
  });
});

describe("identityKey", () => {
  it("joins kind and id", () => {
    expect(identityKey({ kind: "user", id: "u1" })).toBe("user:u1");
    expect(identityKey({ kind: "ip", id: "2001:db8:0:0::/64" })).toBe("ip:2001:db8:0:0::/64");
    expect(identityKey({ kind: "app", id: "a1" })).toBe("app:a1");
  });
});
