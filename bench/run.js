#!/usr/bin/env node
// npm run bench -- <name> [options]: runs one benchmark; each prints its figures and, as its
// last line, one JSON object {"bench": "<name>", ...}.
//   npm run bench -- admission --storage postgres   the admission benchmark on PostgreSQL
//   npm run bench -- admission --baseline ../old     also measures another built checkout, same rounds
//   npm run bench -- admission --tracing            also the HTTP API with every request traced (OTLP to a local sink)
//   npm run bench -- dashboard --baseline ../old     the live streams at 10k queued, 1,000 watchers
const [name = "admission", ...rest] = process.argv.slice(2);
const benches = {
  admission: "./admission.js",
  scheduler: "./scheduler.js",
  edge: "./edge.js",
  retention: "./retention.js",
  dashboard: "./dashboard.js",
};
if (!benches[name]) {
  console.error(`unknown benchmark "${name}"; available: ${Object.keys(benches).join(", ")}`);
  process.exit(2);
}
let file = benches[name];
const storageAt = rest.findIndex((a) => a === "--storage" || a.startsWith("--storage="));
if (storageAt >= 0) {
  const arg = rest[storageAt];
  const storage = arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : rest[storageAt + 1];
  rest.splice(storageAt, arg.includes("=") ? 1 : 2);
  const byStorage = {
    sqlite: file,
    postgres: name === "admission" ? "./admission-postgres.js" : name === "retention" ? file : null,
  };
  if (!byStorage[storage]) {
    console.error(
      `--storage ${storage ?? "(missing)"}: the ${name} benchmark runs on ${Object.keys(byStorage)
        .filter((k) => byStorage[k])
        .join(", ")}`,
    );
    process.exit(2);
  }
  file = byStorage[storage];
  if (name === "retention") rest.push("--storage", storage);
}
const mod = await import(file);
await mod.main(rest);
