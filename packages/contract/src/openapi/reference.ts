import type { JsonSchema, OpenApiDocument, OpenApiOperation } from "./document.js";
import type { FieldRow, TypePart } from "./fields.js";
import { fieldsOf, problemCodeOf, refName, text, typeOf, variantsOf } from "./fields.js";

export interface ApiReferenceOptions {
  /** Where the page links its stylesheet (default `/docs/api.css`). */
  readonly cssHref?: string;
}

const METHODS = ["get", "post", "patch", "put", "delete"] as const;

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** The little Markdown the descriptions use: `code`, **strong**, paragraphs. */
function prose(text: string): string {
  return text
    .split(/\n\s*\n/)
    .map((para) => `<p>${inline(para)}</p>`)
    .join("\n");
}

function inline(text: string): string {
  return escape(text)
    .replace(/`([^`]+)`/g, "<code>$1</code>")
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/\n/g, " ");
}

const anchor = (prefix: string, name: string): string => `${prefix}-${name.replace(/[^A-Za-z0-9_-]/g, "-")}`;

function typeHtml(parts: readonly TypePart[]): string {
  return parts
    .map((p) => (typeof p === "string" ? escape(p) : `<a href="#${anchor("schema", p.ref)}">${escape(p.ref)}</a>`))
    .join("");
}

function fieldTable(rows: readonly FieldRow[], caption: string): string {
  if (rows.length === 0) return `<p class="none">${escape(caption)}: no fields.</p>`;
  const body = rows
    .map(
      (r) =>
        `<tr><td><code>${escape(r.name)}</code>${r.required ? "" : ' <span class="optional">optional</span>'}</td><td class="type">${typeHtml(r.type)}${r.limits === "" ? "" : `<br><span class="limits">${inline(r.limits)}</span>`}</td><td>${inline(r.description)}</td></tr>`,
    )
    .join("\n");
  return `<table class="fields"><caption>${escape(caption)}</caption>\n<thead><tr><th>Field</th><th>Type</th><th>Meaning</th></tr></thead>\n<tbody>\n${body}\n</tbody></table>`;
}

function schemaBlock(doc: OpenApiDocument, schema: JsonSchema, caption: string): string {
  const variants = variantsOf(doc, schema);
  if (variants !== null) {
    return `<p>One of:</p>\n${variants.map((v, i) => (refName(v) !== null ? `<p>${typeHtml(typeOf(v))}</p>` : fieldTable(fieldsOf(doc, v), `${caption}, variant ${i + 1}${typeof v["description"] === "string" ? `: ${v["description"]}` : ""}`))).join("\n")}`;
  }
  return fieldTable(fieldsOf(doc, schema), caption);
}

function authHtml(doc: OpenApiDocument, op: OpenApiOperation): string {
  if (op.security.length === 0) return `<p class="auth">Auth: none.</p>`;
  const schemes = op.security
    .map((s) => Object.keys(s)[0] ?? "")
    .map((name) => `<a href="#${anchor("auth", name)}">${escape(name)}</a>`);
  return `<p class="auth">Auth: <code>Authorization: Bearer</code> ${schemes.join(" or ")}.</p>`;
}

function parametersHtml(op: OpenApiOperation): string {
  if (op.parameters === undefined || op.parameters.length === 0) return "";
  const rows = op.parameters
    .map((p) => {
      const schema = (p["schema"] ?? {}) as JsonSchema;
      const where = String(p["in"]);
      return `<tr><td><code>${escape(String(p["name"]))}</code>${p["required"] === true ? "" : ' <span class="optional">optional</span>'}</td><td>${escape(where)}</td><td class="type">${typeHtml(typeOf(schema))}</td><td>${inline(typeof p["description"] === "string" ? p["description"] : "")}</td></tr>`;
    })
    .join("\n");
  return `<table class="fields"><caption>Parameters</caption>\n<thead><tr><th>Name</th><th>In</th><th>Type</th><th>Meaning</th></tr></thead>\n<tbody>\n${rows}\n</tbody></table>`;
}

function responsesHtml(doc: OpenApiDocument, op: OpenApiOperation): string {
  const rows: string[] = [];
  const details: string[] = [];
  for (const [status, response] of Object.entries(op.responses)) {
    for (const [type, media] of Object.entries(response.content ?? {})) {
      const schema = (media["schema"] ?? {}) as JsonSchema;
      const events = media["x-events"] as Record<string, JsonSchema> | undefined;
      let body: string;
      if (events !== undefined)
        body = Object.entries(events)
          .map(([name, s]) => `<code>${escape(name)}</code> ${typeHtml(typeOf(s))}`)
          .join("<br>");
      else if (type === "application/problem+json") {
        const refs = Array.isArray(schema["oneOf"]) ? (schema["oneOf"] as JsonSchema[]) : [schema];
        body = refs
          .map(
            (r) =>
              `<a href="#${anchor("problem", (refName(r) ?? "").replace(/Problem$/, ""))}"><code>${escape(problemCodeOf(doc.components.schemas[refName(r) ?? ""] ?? {}) ?? "?")}</code></a>`,
          )
          .join(", ");
      } else body = typeHtml(typeOf(schema));
      const headers = Object.keys(response.headers ?? {});
      rows.push(
        `<tr><td class="status s${status.slice(0, 1)}xx">${escape(status)}</td><td><code>${escape(type)}</code></td><td>${body}</td><td>${inline(response.description)}${headers.length > 0 ? `<br><span class="limits">Headers: ${headers.map((h) => `<code>${escape(h)}</code>`).join(", ")}</span>` : ""}</td></tr>`,
      );
      if (status.startsWith("2") && type === "application/json")
        details.push(schemaBlock(doc, schema, `Response: ${refName(schema) ?? "body"}`));
    }
  }
  return `<table class="responses"><caption>Responses</caption>\n<thead><tr><th>Status</th><th>Content type</th><th>Body</th><th>When</th></tr></thead>\n<tbody>\n${rows.join("\n")}\n</tbody></table>\n${[...new Set(details)].join("\n")}`;
}

function operationHtml(doc: OpenApiDocument, path: string, method: string, op: OpenApiOperation): string {
  const body = op.requestBody;
  const bodyHtml =
    body === undefined
      ? ""
      : (() => {
          const schema = ((body["content"] as Record<string, JsonSchema>)["application/json"]?.["schema"] ??
            {}) as JsonSchema;
          const note =
            body["required"] === true
              ? ""
              : ` ${typeof body["description"] === "string" ? inline(body["description"]) : ""}`;
          return `<p>Request body: <code>application/json</code> ${typeHtml(typeOf(schema))}.${note}</p>\n${schemaBlock(doc, schema, `Request body ${refName(schema) ?? ""}`.trim())}`;
        })();
  return [
    `<section class="operation" id="${anchor("op", op.operationId)}">`,
    `<h3><span class="method ${method}">${method.toUpperCase()}</span> <code>${escape(path)}</code></h3>`,
    `<p class="summary">${inline(op.summary)}</p>`,
    op.description === undefined ? "" : prose(op.description),
    authHtml(doc, op),
    parametersHtml(op),
    bodyHtml,
    responsesHtml(doc, op),
    `</section>`,
  ]
    .filter((s) => s !== "")
    .join("\n");
}

function problemsHtml(doc: OpenApiDocument): string {
  const rows = Object.entries(doc.components.schemas)
    .filter(([, s]) => problemCodeOf(s) !== null)
    .map(([name, s]) => {
      const properties = (s["properties"] ?? {}) as Record<string, JsonSchema>;
      const code = problemCodeOf(s) ?? "";
      const title = text(properties["title"]?.["description"]).replace(/^"|"$/g, "");
      const extra = fieldsOf(doc, s).filter((f) => !["type", "title", "status", "detail", "code"].includes(f.name));
      const fields =
        extra.length === 0 ? "" : extra.map((f) => `<code>${escape(f.name)}</code>${f.required ? "" : "?"}`).join(", ");
      return `<tr id="${anchor("problem", name.replace(/Problem$/, ""))}"><td><a href="#${anchor("schema", name)}"><code>${escape(code)}</code></a></td><td>${escape(text(properties["status"]?.["const"]))}</td><td>${escape(title)}</td><td>${fields}</td><td>${inline(typeof s["description"] === "string" ? s["description"] : "")}</td></tr>`;
    })
    .join("\n");
  return `<section id="problems"><h2>Problem codes</h2>\n<p>Every error is <code>application/problem+json</code>: <code>{ type, title, status, detail, code, …fields }</code>. Branch on <code>code</code>; show <code>detail</code> to people. A field marked ? is not always sent.</p>\n<table class="problems"><thead><tr><th>Code</th><th>Status</th><th>Title</th><th>Fields</th><th>When</th></tr></thead>\n<tbody>\n${rows}\n</tbody></table></section>`;
}

function schemasHtml(doc: OpenApiDocument): string {
  const blocks = Object.entries(doc.components.schemas).map(([name, s]) => {
    const description = typeof s["description"] === "string" ? prose(s["description"]) : "";
    return `<section class="schema" id="${anchor("schema", name)}"><h3>${escape(name)}</h3>\n${description}\n${schemaBlock(doc, s, name)}</section>`;
  });
  return `<section id="schemas"><h2>Objects</h2>\n${blocks.join("\n")}</section>`;
}

/**
 * The API reference as one static page and its stylesheet: every operation with its auth,
 * parameters, request and response fields, and the problem codes. No scripts and no inline
 * styles, so it can be served under `default-src 'none'; style-src 'self'`.
 */
export function renderApiReference(
  doc: OpenApiDocument,
  options: ApiReferenceOptions = {},
): { html: string; css: string } {
  const cssHref = options.cssHref ?? "/docs/api.css";
  const byTag = new Map<string, { path: string; method: string; op: OpenApiOperation }[]>();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (op === undefined) continue;
      const tag = op.tags[0] ?? "Other";
      byTag.set(tag, [...(byTag.get(tag) ?? []), { path, method, op }]);
    }
  }
  const tags = [
    ...doc.tags.map((t) => t.name).filter((t) => byTag.has(t)),
    ...[...byTag.keys()].filter((t) => !doc.tags.some((d) => d.name === t)),
  ];
  const nav = tags
    .map(
      (tag) =>
        `<li>${escape(tag)}<ul>${(byTag.get(tag) ?? []).map(({ path, method, op }) => `<li><a href="#${anchor("op", op.operationId)}"><span class="method ${method}">${method.toUpperCase()}</span> ${escape(path)}</a></li>`).join("")}</ul></li>`,
    )
    .join("\n");
  const auth = Object.entries(doc.components.securitySchemes)
    .map(
      ([name, s]) =>
        `<tr id="${anchor("auth", name)}"><td><code>${escape(name)}</code></td><td>${inline(text(s["description"]))}</td></tr>`,
    )
    .join("\n");
  const sections = tags
    .map((tag) => {
      const description = doc.tags.find((t) => t.name === tag)?.description ?? "";
      return `<section class="tag" id="${anchor("tag", tag)}"><h2>${escape(tag)}</h2>\n${description === "" ? "" : `<p>${inline(description)}</p>`}\n${(byTag.get(tag) ?? []).map(({ path, method, op }) => operationHtml(doc, path, method, op)).join("\n")}</section>`;
    })
    .join("\n");
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(doc.info.title)} — API reference (v${escape(doc.info.version)})</title>
<link rel="stylesheet" href="${escape(cssHref)}">
</head>
<body>
<nav class="toc" aria-label="Contents">
<p class="toc-title"><a href="#top">${escape(doc.info.title)}</a></p>
<ul>
<li><a href="#auth">Authentication</a></li>
${nav}
<li><a href="#problems">Problem codes</a></li>
<li><a href="#schemas">Objects</a></li>
</ul>
</nav>
<main id="top">
<header><h1>${escape(doc.info.title)} <span class="version">API v${escape(doc.info.version)}</span></h1>
${prose(doc.info.description)}
<p>This page and <a href="/openapi.json"><code>/openapi.json</code></a> are generated from the <code>@gpupool/contract</code> package.</p></header>
<section id="auth"><h2>Authentication</h2>
<p>Every route but health, metrics and the JWKS takes <code>Authorization: Bearer &lt;credential&gt;</code>; each says which kinds. A missing or unknown credential is 401 <code>unauthorized</code>; a valid one of another kind, 403 <code>forbidden</code>.</p>
<table class="fields"><thead><tr><th>Scheme</th><th>Credential</th></tr></thead>
<tbody>
${auth}
</tbody></table></section>
${sections}
${problemsHtml(doc)}
${schemasHtml(doc)}
</main>
</body>
</html>
`;
  return { html, css: CSS };
}

const CSS = `:root {
  --fg: #1d2127; --muted: #5b6470; --line: #d9dde3; --bg: #ffffff; --panel: #f5f7f9; --accent: #0b5cad;
  --get: #0a7a3e; --post: #0b5cad; --patch: #8a5a00; --delete: #b42318;
}
* { box-sizing: border-box; }
html { font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
body { margin: 0; display: flex; align-items: flex-start; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code { font: 0.9em/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--panel); padding: 0.05em 0.3em; border-radius: 3px; }
nav.toc { position: sticky; top: 0; height: 100vh; overflow-y: auto; width: 18rem; flex: none; padding: 1rem; border-right: 1px solid var(--line); background: var(--panel); font-size: 0.85rem; }
nav.toc ul { list-style: none; margin: 0; padding: 0; }
nav.toc ul ul { margin: 0.2rem 0 0.6rem 0; }
nav.toc li { margin: 0.15rem 0; }
nav.toc .toc-title { font-weight: 600; margin-top: 0; }
main { flex: 1; min-width: 0; max-width: 72rem; padding: 1rem 2rem 4rem; }
h1 { font-size: 1.8rem; margin: 0.5rem 0; }
h1 .version { font-size: 0.9rem; color: var(--muted); font-weight: normal; }
h2 { font-size: 1.4rem; border-bottom: 2px solid var(--line); padding-bottom: 0.3rem; margin-top: 3rem; }
h3 { font-size: 1.1rem; margin: 0 0 0.3rem; }
section.operation, section.schema { border: 1px solid var(--line); border-radius: 6px; padding: 1rem 1.2rem; margin: 1.2rem 0; }
.summary { font-weight: 600; margin-top: 0; }
.auth { color: var(--muted); }
.method { display: inline-block; min-width: 3.6rem; text-align: center; font: 600 0.75rem/1.6 ui-monospace, monospace; color: #fff; border-radius: 3px; padding: 0 0.3rem; }
.method.get { background: var(--get); }
.method.post { background: var(--post); }
.method.patch { background: var(--patch); }
.method.delete { background: var(--delete); }
table { border-collapse: collapse; width: 100%; margin: 0.6rem 0 1rem; font-size: 0.9rem; }
caption { text-align: left; font-weight: 600; padding: 0.3rem 0; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid var(--line); padding: 0.35rem 0.5rem; }
th { background: var(--panel); font-weight: 600; }
td.type { min-width: 9rem; }
td, th { overflow-wrap: break-word; }
table.problems td:nth-child(-n+2), td.status { white-space: nowrap; }
.optional, .limits, .none { color: var(--muted); font-size: 0.85em; }
td.status { font-weight: 600; font-family: ui-monospace, monospace; }
td.s2xx { color: var(--get); }
td.s4xx { color: var(--patch); }
td.s5xx { color: var(--delete); }
@media (max-width: 900px) {
  body { display: block; }
  nav.toc { position: static; height: auto; width: auto; border-right: none; border-bottom: 1px solid var(--line); }
  main { padding: 1rem; }
}
`;
