#!/usr/bin/env node
// npm run bench -- <name> [options]: runs one benchmark; each prints its figures and, as its
// last line, one JSON object {"bench": "<name>", ...}.
const [name = "admission", ...rest] = process.argv.slice(2);
const benches = { admission: "./admission.js", scheduler: "./scheduler.js", edge: "./edge.js" };
if (!benches[name]) {
  console.error(`unknown benchmark "${name}"; available: ${Object.keys(benches).join(", ")}`);
  process.exit(2);
}
const mod = await import(benches[name]);
await mod.main(rest);
