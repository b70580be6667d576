import { request } from "node:http";
import type { IncomingHttpHeaders } from "node:http";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { EdgeWorld, Seen } from "./edge-fixture.js";
import { startEdgeWorld } from "./edge-fixture.js";

/**
 * Generated request lines and header sets through the real edge binary, with a real control plane
 * and a real upstream app (test/e2e/edge-fixture.ts). Whatever a client sends:
 * - the edge never answers 5xx (the control plane is up all along), nor logs an error;
 * - an app never sees a path outside its base path, the client's X-IP-Token (in any spelling),
 *   or an address or identity header the client wrote;
 * - what the edge answers itself is a problem+json, one of its HTML pages, or a redirect.
 */

const RUNS = Number(process.env["GPUPOOL_EDGE_FUZZ_RUNS"] ?? 3000);
/** Every spoofed address or identity carries one of these: an app must never see either. */
const SPOOF_ADDR = "203.0.113.77";
const MARK = "SPOOFEDVALUE";

let w: EdgeWorld;
let port: number;
let session: string;
let validIpToken: string;
const appIds = new Map<string, string>();

beforeAll(async () => {
  w = await startEdgeWorld();
  port = Number(new URL(w.edge.url).port);
  for (const [name, app] of Object.entries(w.apps)) appIds.set(app.id, name);
  const login = await fetch(`${w.edge.url}/login`, {
    method: "POST",
    body: new URLSearchParams({ token: w.alice.token }),
    redirect: "manual",
  });
  session = (login.headers.get("set-cookie") ?? "").split(";")[0]!;
  // A valid token, as an app would forward it, minted by the pool itself (so never one the edge
  // has cached and might inject again: whatever the app sees must be the edge's own).
  const minted = await fetch(`${w.pool.url}/v1/ip-tokens`, {
    method: "POST",
    headers: { authorization: `Bearer ${w.edgeKey}`, "content-type": "application/json" },
    body: JSON.stringify({ app: "back", user: w.alice.id }),
  });
  validIpToken = ((await minted.json()) as { token: string }).token;
}, 60_000);
afterAll(async () => {
  await w?.stop();
});

interface Sent {
  readonly method: string;
  readonly target: string;
  readonly headers: Record<string, string | string[]>;
  readonly body: string | undefined;
}

interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

function send(s: Sent): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: "127.0.0.1", port, method: s.method, path: s.target, headers: s.headers, agent: false, timeout: 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (d: Buffer) => chunks.push(d));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }),
        );
      },
    );
    req.on("timeout", () => req.destroy(new Error(`no answer to ${s.method} ${s.target}`)));
    req.on("error", reject);
    req.end(s.body);
  });
}

// --- generators ---------------------------------------------------------------------------

const segment = fc.constantFrom(
  "whoami",
  "a",
  "b.txt",
  "..",
  ".",
  "%2e%2e",
  "%2E",
  ".%2e",
  "..%2f",
  "%2f",
  "%2F..",
  "%5c",
  "\\",
  "..\\",
  ";",
  "..;",
  ";x=1",
  "%252e%252e",
  "",
  "%zz",
  "%00",
  "%",
  "é",
  "base",
  ".gpupool",
  "%2egpupool",
  "enter",
  "login",
  "logout",
);
const path = fc.array(segment, { maxLength: 7 }).map((segs) => `/${segs.join("/")}`);
const query = fc.constantFrom(
  "",
  "?",
  "?a=1",
  "?next=//evil.example",
  "?next=%2F..%2F..",
  "?ticket=AAAA&next=/x",
  "?host=side.example.test&state=AAAAAAAAAAAAAAAAAAAA&next=/",
  "?x=../..",
);
const appSegment = fc.constantFrom("front", "based", "back", "side", "nope", "%66ront", "%zz", "..", "%2e%2e", "FRONT");
const target = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .tuple(appSegment, path, query, fc.boolean())
      .map(([a, p, q, bare]) => `/apps/${a}${p === "/" && bare ? "" : p}${q}`),
  },
  { weight: 3, arbitrary: fc.tuple(path, query).map(([p, q]) => `${p}${q}`) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(
        fc.constantFrom("http", "https", "HTTP", "ftp"),
        fc.constantFrom(
          "side.example.test",
          "SIDE.example.test:80",
          "elsewhere.example",
          "edge.test",
          "127.0.0.1",
          "u@side.example.test",
          "[::1]",
        ),
        path,
        query,
      )
      .map(([s, h, p, q]) => `${s}://${h}${p}${q}`),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "/",
      "/login",
      "/logout",
      "/.gpupool/login",
      "/.gpupool/logout",
      "/.gpupool/enter",
      "*",
      "/a#b",
      "/apps/front#x",
    ),
  },
);
const host = fc.constantFrom(
  undefined,
  "side.example.test",
  "side.example.test:PORT",
  "Side.Example.Test",
  "edge.test:PORT",
  "elsewhere.example",
  "127.0.0.1:PORT",
  "",
);

const spoofName = fc.constantFrom(
  "X-Real-IP",
  "True-Client-IP",
  "Forwarded",
  "X-Forwarded-For",
  "X-Forwarded-Host",
  "X-Forwarded-Proto",
  "X-Forwarded-Prefix",
  "X-Forwarded-Port",
  "X-Forwarded-Server",
  "X-Client-IP",
  "Client-IP",
  "X-Cluster-Client-IP",
  "CF-Connecting-IP",
  "Fastly-Client-IP",
  "X-Original-URL",
  "X-Rewrite-URL",
  "X-Remote-User",
  "X-Remote-Addr",
  "X-Gpupool-Charged-As",
  "X_IP_Token",
  "x_ip_token",
  "X_Forwarded_For",
  "X_Real_IP",
  "X_Forwarded_Host",
  "True_Client_IP",
  "x-ip_token",
  "X-Envoy-External-Address",
  "X-Amzn-Oidc-Identity",
  "X-Forwarded-User",
);
const spoofValue = fc.constantFrom(
  SPOOF_ADDR,
  `for=${SPOOF_ADDR}`,
  `${SPOOF_ADDR}, 10.0.0.1`,
  `/${MARK}`,
  `user:${MARK}`,
  `https://${MARK}.example`,
);
const spoofs = fc.uniqueArray(fc.tuple(spoofName, spoofValue), { maxLength: 6, selector: ([n]) => n.toLowerCase() });

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v) ?? "").toString("base64url");
const claims = fc.record(
  {
    alg: fc.constantFrom("EdDSA", "none", "HS256"),
    kid: fc.oneof(fc.string(), fc.integer()),
    sub: fc.string(),
    aud: fc.string(),
    exp: fc.oneof(fc.integer(), fc.double()),
    iss: fc.constantFrom("gpupool", "x"),
  },
  { requiredKeys: [] },
);
/** A JWS-shaped token the pool never signed: three base64url parts of JSON (or anything). */
const randomJws = fc
  .tuple(fc.oneof(claims, fc.jsonValue()), fc.oneof(claims, fc.jsonValue()), fc.base64String({ maxLength: 120 }))
  .map(
    ([h, p, sig]) => `jws:${b64url(h)}.${b64url(p)}.${sig.replace(/\+/g, "-").replace(/\//g, "_").replace(/=/g, "")}`,
  );
const ipToken = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom("none", "none", "valid", "garbage", "jws", "huge", "twice", "empty") },
  { weight: 1, arbitrary: randomJws },
);
const cookie = fc.constantFrom<"none" | "valid" | "huge" | "odd" | "twice" | "app" | "host" | "state">(
  "none",
  "none",
  "valid",
  "huge",
  "odd",
  "twice",
  "app",
  "host",
  "state",
);
const authorization = fc.constantFrom(
  undefined,
  undefined,
  "valid",
  `Bearer gpu_u_${"a".repeat(600)}`,
  "Bearer gpu_u_bad",
  "Bearer gpu_u_é",
  "Basic dXNlcjpwdw==",
  "Bearer other-scheme-token",
  "Bearer",
);
const browserish = fc.constantFrom<Record<string, string>>(
  {},
  { origin: "http://evil.example" },
  { origin: "null" },
  { "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document" },
  { "sec-fetch-site": "same-origin" },
  { "sec-fetch-mode": "navigate", "sec-fetch-dest": "document" },
  { "upgrade-insecure-requests": "1", accept: "text/html" },
);
const method = fc.constantFrom("GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE");
const body = fc.constantFrom(
  undefined,
  "",
  "token=gpu_u_nope",
  "token=&next=//evil",
  `csrf=x&next=/`,
  "a".repeat(9000),
);

const requestArb = fc.record({ method, target, host, spoofs, ipToken, cookie, authorization, browserish, body });

type Generated = typeof requestArb extends fc.Arbitrary<infer T> ? T : never;

function build(g: Generated, id: string): { sent: Sent; presentedTokens: string[] } {
  const headers: Record<string, string | string[]> = { "x-fuzz-id": id, ...g.browserish };
  if (g.host !== undefined) headers["host"] = g.host.replace("PORT", String(port));
  for (const [n, v] of g.spoofs) headers[n] = v;
  const presentedTokens: string[] = [];
  const fixed: Record<string, string | null> = {
    none: null,
    valid: validIpToken,
    garbage: "not a token",
    jws: "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1c2VyOng.",
    huge: "a".repeat(9 * 1024),
    twice: null,
    empty: "",
  };
  const tok = g.ipToken.startsWith("jws:") ? g.ipToken.slice(4) : (fixed[g.ipToken] ?? null);
  if (tok !== null) {
    headers["x-ip-token"] = tok;
    presentedTokens.push(tok);
  }
  if (g.ipToken === "twice") {
    headers["x-ip-token"] = [validIpToken, "eyJhbGciOiJub25lIn0.e30."];
    presentedTokens.push(validIpToken, "eyJhbGciOiJub25lIn0.e30.");
  }
  const cookies = {
    none: null,
    valid: session,
    huge: `gpupool_session=gps_${"a".repeat(600)}`,
    odd: "gpupool_session=gps_é; theme=dark",
    twice: `${session}; gpupool_session=gps_other`,
    app: "gpupool_app=forged; theme=dark",
    host: `__Host-${session}`,
    state: "gpupool_state=AAAAAAAAAAAAAAAAAAAA",
  }[g.cookie];
  if (cookies !== null) headers["cookie"] = cookies;
  if (g.authorization !== undefined)
    headers["authorization"] = g.authorization === "valid" ? `Bearer ${w.alice.token}` : g.authorization;
  const sendBody = g.method === "GET" || g.method === "HEAD" ? undefined : g.body;
  if (sendBody !== undefined) headers["content-type"] = "application/x-www-form-urlencoded";
  return { sent: { method: g.method, target: g.target, headers, body: sendBody }, presentedTokens };
}

// --- invariants -----------------------------------------------------------------------------

/** The ways a server behind the edge might read a path (see request-target.ts's couldEscape). */
function readings(p: string): string[] {
  const out: string[] = [];
  for (const q of [p, p.replace(/%25/gi, "%")]) {
    for (const r of [q, q.replace(/%2f/gi, "/"), q.replace(/%5c/gi, "/"), q.replace(/%2f|%5c/gi, "/")]) {
      out.push(r, r.replace(/;[^/\\]*/g, ""), r.replace(/\/+/g, "/"), r.replace(/;[^/\\]*/g, "").replace(/\/+/g, "/"));
    }
  }
  return out;
}

const payloadOf = (token: string): { iss?: string; aud?: string; sub?: string } => {
  try {
    return JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString("utf8")) as {
      iss?: string;
      aud?: string;
      sub?: string;
    };
  } catch {
    return {};
  }
};

const normal = (name: string): string => name.toLowerCase().replace(/_/g, "-");
/** What the edge sets itself, and what nobody else may. */
const EDGE_SET = new Set([
  "x-ip-token",
  "x-forwarded-for",
  "forwarded",
  "x-forwarded-proto",
  "x-forwarded-host",
  "x-forwarded-prefix",
]);

function checkUpstream(seen: Seen, presentedTokens: string[], chargedAs: string | undefined, label: string): void {
  const h = seen.headers;
  // A pool-minted token for the app that got the request, naming whom the viewer was told is
  // charged, never one the client sent.
  const token = h["x-ip-token"];
  expect(typeof token, label).toBe("string");
  expect(presentedTokens, label).not.toContain(token);
  const payload = payloadOf(String(token));
  expect(payload.iss, label).toBe("gpupool");
  expect(payload.sub, label).toBe(chargedAs);
  const app = appIds.get(String(payload.aud));
  expect(app, label).toBeDefined();
  // No header the client could have written under an edge-set or spoofable name.
  for (const name of Object.keys(h)) {
    if (name === "x-fuzz-id") continue;
    if (EDGE_SET.has(normal(name))) expect(name, label).toBe(normal(name));
  }
  expect(JSON.stringify(h), label).not.toContain(SPOOF_ADDR);
  expect(JSON.stringify(h), label).not.toContain(MARK);
  expect(h["x-forwarded-for"], label).toBe("127.0.0.1");
  expect(String(h["forwarded"]), label).toMatch(/^for=127\.0\.0\.1;host=[^,]*;proto=http$/);
  // The path stays under the app's base, whatever reading of it the app's server makes.
  const base = app === "based" ? "/base/" : "/";
  const p = seen.path.split("?")[0] ?? "";
  expect(p.startsWith(base), label).toBe(true);
  // Nor a network-path reference (`//host`, `/\\host`) to an app that parses it as a URL.
  expect(new URL(seen.path, "http://app.example").host, label).toBe("app.example");
  for (const r of readings(p)) {
    const resolved = new URL(`http://h/root${r}`).pathname;
    expect(resolved.startsWith(`/root${base}`), `${label}: ${p} read as ${r}`).toBe(true);
  }
}

function checkEdgeOwn(a: Answer, sent: Sent, label: string): void {
  if (a.status >= 300 && a.status < 400) {
    expect(a.headers.location, label).toBeTruthy();
    return;
  }
  const type = a.headers["content-type"];
  if (type === "application/problem+json") {
    if (sent.method === "HEAD") return;
    const p = JSON.parse(a.body) as { code?: unknown; status?: unknown; detail?: unknown };
    expect(typeof p.code, label).toBe("string");
    expect(p.status, label).toBe(a.status);
    expect(a.body, label).not.toMatch(/\n\s+at |node:internal|gpu_e_/);
    return;
  }
  expect(type, label).toBe("text/html; charset=utf-8");
  if (sent.method !== "HEAD") expect(a.body, label).toMatch(/<title>(Sign in|Apps) — gpupool<\/title>/);
}

describe("the edge under generated requests", () => {
  it(`${RUNS} request lines and header sets: no 5xx, nothing out of an app's base, no client identity reaching an app, only problems and pages from the edge`, async () => {
    let n = 0;
    const statuses = new Map<number, number>();
    let proxied = 0;
    let own = 0;
    await fc.assert(
      fc.asyncProperty(requestArb, async (g) => {
        const id = `f${++n}`;
        const { sent, presentedTokens } = build(g, id);
        const label = `${sent.method} ${sent.target} ${JSON.stringify(sent.headers).slice(0, 300)}`;
        const a = await send(sent);
        statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
        expect(a.status, `${label} → ${a.body.slice(0, 300)}`).toBeLessThan(500);
        const seen = w.seen.filter((s) => s.headers["x-fuzz-id"] === id);
        expect(seen.length, label).toBeLessThanOrEqual(1);
        if (seen[0] !== undefined) {
          proxied++;
          checkUpstream(seen[0], presentedTokens, a.headers["x-gpupool-charged-as"] as string | undefined, label);
        }
        if (a.headers["x-gpupool-charged-as"] === undefined) {
          own++;
          expect(seen.length, label).toBe(0);
          checkEdgeOwn(a, sent, label);
        }
      }),
      { numRuns: RUNS },
    );
    // The generators reach both sides: requests served by apps, and answers of the edge's own, of
    // more than one kind (400 and 404 come up hundreds of times a run; 403 and 413 only a few
    // times, and on some seeds not at all — a check that wanted three kinds failed CI).
    expect(proxied).toBeGreaterThan(RUNS / 10);
    expect(own).toBeGreaterThan(RUNS / 10);
    expect([...statuses.keys()].filter((s) => s >= 400).length).toBeGreaterThanOrEqual(2);
    expect(
      w.edge
        .output()
        .split("\n")
        .filter((l) => /"level":(50|60)/.test(l)),
    ).toEqual([]);
  }, 120_000);
});
