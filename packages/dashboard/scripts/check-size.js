// The dashboard's size budget: all JavaScript it ships, gzipped, at most BUDGET bytes. Run after
// `vite build`; fails the build above it. Writes dist/size.json for the tests and the report.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const BUDGET = 100 * 1024;
const dir = new URL("../dist/assets/", import.meta.url).pathname;
const files = readdirSync(dir).filter((f) => f.endsWith(".js") || f.endsWith(".css"));
let js = 0;
let css = 0;
const sizes = {};
for (const f of files) {
  const bytes = readFileSync(join(dir, f));
  const gz = gzipSync(bytes, { level: 9 }).length;
  sizes[f] = { bytes: bytes.length, gzip: gz };
  if (f.endsWith(".js")) js += gz;
  else css += gz;
}
writeFileSync(
  new URL("../dist/size.json", import.meta.url),
  JSON.stringify({ budget: BUDGET, js, css, files: sizes }, null, 2),
);
const kb = (n) => `${(n / 1024).toFixed(1)} KB`;
console.log(`dashboard: JS ${kb(js)} gzipped (budget ${kb(BUDGET)}), CSS ${kb(css)} gzipped`);
if (js > BUDGET) {
  console.error(`dashboard: the JavaScript is over its budget by ${kb(js - BUDGET)}`);
  process.exit(1);
}
