import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { PROBLEM_CODES, PROBLEM_STATUS } from "../src/index.js";
import { OPERATIONS, openApiDocument, renderApiReference, renderWireDoc } from "../src/openapi/index.js";

const doc = openApiDocument();

describe("the API reference page", () => {
  const { html, css } = renderApiReference(doc);

  it("is static: no scripts, no inline styles, no event handlers (it is served under default-src 'none'; style-src 'self')", () => {
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/<style/i);
    expect(html).not.toMatch(/\sstyle=/i);
    expect(html).not.toMatch(/\son[a-z]+=/i);
    expect(html).not.toMatch(/javascript:/i);
    expect(html).toContain('<link rel="stylesheet" href="/docs/api.css">');
    expect(renderApiReference(doc, { cssHref: "/static/x.css" }).html).toContain('href="/static/x.css"');
    expect(css).toMatch(/^:root \{/);
    expect(css).not.toMatch(/url\(|@import/);
  });

  it("lists every operation with its method, path, auth and responses", () => {
    for (const op of OPERATIONS) {
      expect(html).toContain(`id="op-${op.id}"`);
      expect(html).toContain(
        `<span class="method ${op.method}">${op.method.toUpperCase()}</span> <code>${op.path}</code>`,
      );
    }
    expect(html).toMatch(
      /Auth: <code>Authorization: Bearer<\/code> <a href="#auth-appKey">appKey<\/a> or <a href="#auth-userToken">userToken<\/a>/,
    );
    expect(html).toContain("<code>X-IP-Token</code>");
    expect(html).toContain("<code>text/event-stream</code>");
  });

  it("shows request and response fields as tables, not raw JSON", () => {
    expect(html).toContain("<caption>Request body LeaseRequest</caption>");
    expect(html).toContain("<caption>Response: Lease</caption>");
    expect(html).toMatch(/<td><code>deadline<\/code><\/td><td class="type">string \(date-time\) or null<\/td>/);
    expect(html).not.toContain('"$ref"');
  });

  it("has the problem-code table: every code, its status and its fields", () => {
    for (const code of PROBLEM_CODES)
      expect(html).toMatch(new RegExp(`<code>${code}</code></a></td><td>${PROBLEM_STATUS[code]}</td>`));
    expect(html).toMatch(/<code>quota_exceeded<\/code>.*<code>retry_at<\/code>.*<code>next_step<\/code>/);
  });

  it("escapes what it shows", () => {
    const hostile = JSON.parse(JSON.stringify(doc)) as typeof doc & { info: { title: string } };
    (hostile.info as { title: string }).title = "<img src=x onerror=alert(1)>";
    expect(renderApiReference(hostile).html).not.toContain("<img");
  });
});

describe("docs/wire.md", () => {
  it("is what the contract generates (run `npm run docs` after changing the contract)", () => {
    const file = readFileSync(fileURLToPath(new URL("../../../docs/wire.md", import.meta.url)), "utf8");
    expect(file === renderWireDoc(doc), "docs/wire.md differs from the contract: run `npm run docs`").toBe(true);
  });

  it("covers every route, every problem code and the lease's node and failed", () => {
    const text = renderWireDoc(doc);
    for (const op of OPERATIONS) expect(text).toContain(`\`${op.method.toUpperCase()} ${op.path}\``);
    for (const code of PROBLEM_CODES) expect(text).toContain(`\`${code}\``);
    expect(text).toMatch(/\| `node` \| string or null \|/);
    expect(text).toMatch(/\| `failed` \| boolean \|/);
  });
});
