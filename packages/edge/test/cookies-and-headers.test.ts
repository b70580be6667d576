import { describe, expect, it } from "vitest";
import { plausibleSession, plausibleUserToken } from "../src/viewer-token.js";
import { dropFromClient, forwardedElement } from "../src/client-headers.js";
import {
  appSetCookies,
  cookieName,
  cookieValue,
  edgeCookie,
  setsEdgeCookie,
  withoutEdgeCookies,
} from "../src/cookies.js";
import { crossSiteReason } from "@gpupool/contract";
import { Sealer, sameSecret, signOutToken } from "../src/sealed.js";

describe("the edge's cookies", () => {
  it("are __Host- prefixed, Secure, host-only and Path=/ over TLS", () => {
    expect(cookieName("gpupool_session", true)).toBe("__Host-gpupool_session");
    expect(edgeCookie("gpupool_session", "v", 60, true)).toBe(
      "__Host-gpupool_session=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure",
    );
    expect(edgeCookie("gpupool_session", "v", 60, false)).not.toMatch(/Domain|Secure|__Host-/);
  });

  it("an app cannot set one, in any spelling", () => {
    for (const c of [
      "gpupool_session=x; Path=/",
      "__Host-gpupool_session=x; Secure; Path=/",
      "__SECURE-GPUPOOL_APP=x",
      " gpupool_state =x",
      "=gpupool_session=x",
      "gpupool_session",
      "gpupool_anything_new=1",
    ]) {
      expect(setsEdgeCookie(c), c).toBe(true);
    }
    for (const c of ["theme=dark", "session=gpupool_session", "my_gpupool_session=1"])
      expect(setsEdgeCookie(c), c).toBe(false);
    expect(appSetCookies(["gpupool_session=x", "theme=dark"])).toEqual(["theme=dark"]);
    expect(appSetCookies(["gpupool_session=x"])).toBeUndefined();
  });

  it("an app never sees one", () => {
    expect(withoutEdgeCookies("a=1; __Host-gpupool_session=s; gpupool_app=x; b=2")).toBe("a=1; b=2");
    expect(withoutEdgeCookies("theme=dark")).toBe("theme=dark");
  });

  it("a value present twice (a cookie someone else planted beside ours), empty or oversized is not believed", () => {
    expect(cookieValue("gpupool_session=a", "gpupool_session")).toBe("a");
    expect(cookieValue("gpupool_session=a; gpupool_session=b", "gpupool_session")).toBeNull();
    expect(cookieValue("gpupool_session=", "gpupool_session")).toBeNull();
    expect(cookieValue(`gpupool_session=${"x".repeat(2000)}`, "gpupool_session")).toBeNull();
    expect(plausibleSession(`gps_${"a".repeat(600)}`)).toBeNull();
    expect(plausibleSession("gps_abc")).toBe("gps_abc");
    expect(plausibleSession("gps_a\u00ff")).toBeNull();
    expect(plausibleUserToken(`gpu_u_${"a".repeat(600)}`)).toBe(false);
  });
});

describe("client headers an app must not believe", () => {
  it("address and identity headers are dropped from an untrusted peer, in hyphen or underscore spelling", () => {
    for (const h of [
      "x-real-ip",
      "true-client-ip",
      "forwarded",
      "x-forwarded-for",
      "x-forwarded-host",
      "X_Forwarded_For",
      "x-client-ip",
      "cf-connecting-ip",
      "x_real_ip",
      "x-original-url",
      "x-remote-user",
      "fastly-client-ip",
    ]) {
      expect(dropFromClient(h, false), h).toBe(true);
    }
    for (const h of ["accept", "x-requested-with", "x-custom_thing", "authorization"])
      expect(dropFromClient(h, false), h).toBe(false);
  });

  it("X-IP-Token and X-Gpupool-* are dropped from everyone; a trusted proxy's canonical headers pass", () => {
    for (const h of ["x-ip-token", "x_ip_token", "X_IP_TOKEN", "x-gpupool-charged-as"]) {
      expect(dropFromClient(h, true), h).toBe(true);
      expect(dropFromClient(h, false), h).toBe(true);
    }
    expect(dropFromClient("x-real-ip", true)).toBe(false);
    expect(dropFromClient("x_real_ip", true)).toBe(true);
  });

  it("Forwarded is written as RFC 7239 says", () => {
    expect(forwardedElement("203.0.113.9", "edge.example:7080", "https")).toBe(
      'for=203.0.113.9;host="edge.example:7080";proto=https',
    );
    expect(forwardedElement("2001:db8::1", "e", "http")).toBe('for="[2001:db8::1]";host=e;proto=http');
  });
});

describe("forged sign-ins and sign-outs", () => {
  it("a form from another origin or site is refused; this origin, or no browser at all, is not", () => {
    expect(crossSiteReason({ origin: "http://evil.example" }, "edge.example", null)).toMatch(/another origin/);
    expect(crossSiteReason({ origin: "null" }, "edge.example", null)).toMatch(/opaque/);
    expect(
      crossSiteReason({ "sec-fetch-site": "same-site", origin: "http://app.apps.example" }, "edge.example", null),
    ).toMatch(/another site/);
    expect(crossSiteReason({ origin: "http://edge.example:8080" }, "edge.example", null)).toMatch(/another origin/);
    expect(
      crossSiteReason(
        { origin: "http://edge.example:8080", "sec-fetch-site": "same-origin" },
        "edge.example:8080",
        null,
      ),
    ).toBeNull();
    expect(crossSiteReason({ origin: "https://edge.example" }, "edge.example", null)).toBeNull();
    expect(crossSiteReason({ origin: "https://pool.example" }, "10.0.0.1:7080", "https://pool.example")).toBeNull();
    expect(crossSiteReason({}, "edge.example", null)).toBeNull();
  });

  it("the sign-out token depends on the session and is compared in constant time", () => {
    expect(signOutToken("gps_a")).not.toBe(signOutToken("gps_b"));
    expect(sameSecret(signOutToken("gps_a"), signOutToken("gps_a"))).toBe(true);
    expect(sameSecret("", signOutToken("gps_a"))).toBe(false);
  });

  it("sealed tickets and cookies open only for their kind, host and key, until they expire", () => {
    const s = new Sealer("gpu_e_key");
    const t = s.seal("ticket", "a.apps.test", { session: "gps_x", state: "st", expiresAt: 2000 });
    expect(s.open("ticket", "a.apps.test", t, 1000)).toEqual({ session: "gps_x", state: "st", expiresAt: 2000 });
    expect(s.open("app", "a.apps.test", t, 1000)).toBeNull();
    expect(s.open("ticket", "b.apps.test", t, 1000)).toBeNull();
    expect(s.open("ticket", "a.apps.test", t, 2000)).toBeNull();
    expect(new Sealer("gpu_e_other").open("ticket", "a.apps.test", t, 1000)).toBeNull();
    const flipped = `${t.slice(0, 20)}${t[20] === "A" ? "B" : "A"}${t.slice(21)}`;
    expect(s.open("ticket", "a.apps.test", flipped, 1000)).toBeNull();
    expect(s.open("ticket", "a.apps.test", "%%%", 1000)).toBeNull();
  });
});
