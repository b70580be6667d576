import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import type { AddressInfo, Socket } from "node:net";
import { connect } from "node:net";
import { describe, expect, it } from "vitest";
import { callerUid, cgroupPathOf, judgePid } from "../src/index.js";

const linux = process.platform === "linux";

describe("cgroupPathOf: the cgroupPath the spaces client computes for itself", () => {
  it("cgroup v1 (and hybrid hosts): the devices controller's path", () => {
    const v1 = "12:pids:/docker/abc\n5:devices:/docker/abc\n1:name=systemd:/docker/abc\n";
    expect(cgroupPathOf(v1)).toBe("/docker/abc");
    const hybrid = "9:name=systemd:/\n5:devices:/user.slice\n0::/user.slice/session-1.scope\n";
    expect(cgroupPathOf(hybrid)).toBe("/user.slice");
  });

  it("cgroup v2: the 0:: line's path; nothing recognisable: null", () => {
    expect(cgroupPathOf("0::/system.slice/app-a.service\n")).toBe("/system.slice/app-a.service");
    expect(cgroupPathOf("0::/\n")).toBe("/");
    expect(cgroupPathOf("")).toBeNull();
    expect(cgroupPathOf("3:cpu:/x\n")).toBeNull();
  });
});

describe("judgePid: the agent never stops a process the caller could not signal itself", () => {
  const owner = (real: number, cgroupPath: string | null = "/app-a") => ({
    uids: { real, effective: real, saved: real },
    cgroupPath,
  });
  const asked = (allowUid: number | null, cgroupPath: string | null = null, scheduleUid: number | null = allowUid) => ({
    allowUid,
    scheduleUid,
    cgroupPath,
  });

  it("another user's process is refused, naming both uids; the caller's own (or any, for root) is accepted", () => {
    const refused = judgePid("strict", 4242, owner(65534), asked(1000));
    expect(refused).toMatchObject({ ok: false, reason: "pid_not_yours" });
    expect(!refused.ok && refused.detail).toMatch(
      /pid 4242 belongs to uid 65534, and this lease's requests come from uid 1000/,
    );
    expect(judgePid("strict", 4242, owner(1000), asked(1000))).toEqual({ ok: true });
    expect(judgePid("strict", 4242, owner(65534), asked(0))).toEqual({ ok: true });
    // kill(2): a setuid program started by the caller (real uid theirs) is theirs to signal.
    expect(
      judgePid("strict", 4242, { uids: { real: 1000, effective: 0, saved: 0 }, cgroupPath: null }, asked(1000)),
    ).toEqual({ ok: true });
    // Both the /schedule caller and the /allow caller must be able to signal it.
    expect(judgePid("strict", 4242, owner(1000), asked(1000, null, 1001))).toMatchObject({
      ok: false,
      reason: "pid_not_yours",
    });
  });

  it("a lease scheduled with a cgroupPath takes only pids in that cgroup, unless --pid-check uid", () => {
    expect(judgePid("strict", 7, owner(1000, "/app-b"), asked(1000, "/app-a"))).toMatchObject({
      ok: false,
      reason: "pid_cgroup_mismatch",
    });
    expect(judgePid("strict", 7, owner(1000, "/app-a"), asked(1000, "/app-a"))).toEqual({ ok: true });
    expect(judgePid("uid", 7, owner(1000, "/app-b"), asked(1000, "/app-a"))).toEqual({ ok: true });
  });

  it("when nothing ties the pid to the caller it is refused, saying what to do; cgroup mode accepts a matching cgroupPath; off accepts all", () => {
    const unknown = judgePid("strict", 7, owner(1000), asked(null, "/app-a"));
    expect(unknown).toMatchObject({ ok: false, reason: "pid_unverified" });
    expect(!unknown.ok && unknown.detail).toMatch(/127\.0\.0\.1.*--pid-check cgroup/);
    expect(judgePid("cgroup", 7, owner(1000, "/app-a"), asked(null, "/app-a"))).toEqual({ ok: true });
    expect(judgePid("cgroup", 7, owner(1000, "/app-b"), asked(null, "/app-a"))).toMatchObject({
      ok: false,
      reason: "pid_cgroup_mismatch",
    });
    expect(judgePid("cgroup", 7, owner(1000), asked(null, null))).toMatchObject({
      ok: false,
      reason: "pid_unverified",
    });
    expect(judgePid("off", 7, owner(65534), asked(1000))).toEqual({ ok: true });
  });
});

describe("callerUid: who opened a connection to the agent", () => {
  const table = (rows: string[]) =>
    [
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
      ...rows.map((r, i) => `   ${i}: ${r}`),
    ].join("\n");
  const row = (local: string, remote: string, uid: number) =>
    `${local} ${remote} 01 00000000:00000000 00:00000000 00000000  ${uid}        0 12345 1 0000000000000000 20 4 30 10 -1`;

  it("finds the caller's socket (local end = the request's remote end) in /proc/net/tcp and tcp6", () => {
    // 127.0.0.1:40000 (uid 1000) → 127.0.0.1:7071; the agent's own end (uid 0) is the reverse row.
    const tcp = table([row("0100007F:1B9F", "0100007F:9C40", 0), row("0100007F:9C40", "0100007F:1B9F", 1000)]);
    const read = (path: string) => (path === "/proc/net/tcp" ? tcp : null);
    expect(
      callerUid({ remoteAddress: "127.0.0.1", remotePort: 40000, localAddress: "127.0.0.1", localPort: 7071 }, read),
    ).toBe(1000);
    // A dual-stack agent sees the same caller as ::ffff:127.0.0.1.
    expect(
      callerUid(
        { remoteAddress: "::ffff:127.0.0.1", remotePort: 40000, localAddress: "::ffff:127.0.0.1", localPort: 7071 },
        read,
      ),
    ).toBe(1000);
    expect(
      callerUid({ remoteAddress: "127.0.0.1", remotePort: 40001, localAddress: "127.0.0.1", localPort: 7071 }, read),
    ).toBeNull();
    const tcp6 = table([row("00000000000000000000000001000000:9C40", "00000000000000000000000001000000:1B9F", 1001)]);
    expect(
      callerUid({ remoteAddress: "::1", remotePort: 40000, localAddress: "::1", localPort: 7071 }, (p) =>
        p === "/proc/net/tcp6" ? tcp6 : null,
      ),
    ).toBe(1001);
    expect(
      callerUid({ remoteAddress: "10.0.0.9", remotePort: 1, localAddress: "10.0.0.5", localPort: 7071 }, () => null),
    ).toBeNull();
  });

  it.runIf(linux)("a real connection from this process is traced to this process's uid", async () => {
    const server = createServer();
    const accepted = new Promise<Socket>((resolve) => server.once("connection", resolve));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const client = connect((server.address() as AddressInfo).port, "127.0.0.1");
    try {
      const socket = await accepted;
      expect(callerUid(socket)).toBe(process.getuid!());
    } finally {
      client.destroy();
      server.close();
    }
  });

  it.runIf(linux)("this host's /proc/self/cgroup gives a cgroupPath", () => {
    expect(cgroupPathOf(readFileSync("/proc/self/cgroup", "utf8"))).toMatch(/^\//);
  });
});
