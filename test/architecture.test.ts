import { readFileSync, readdirSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

/**
 * The shape docs/design.md describes, checked on the source so it cannot drift: dependencies run
 * one way (http and replication → use cases → engine, storage, core), routes hold no store and
 * open no transaction, one module touches ledgers, one function decides admission. Import
 * circles (type imports included) are `npm run lint`'s (madge).
 */

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const server = join(root, "packages/server/src");
const core = join(root, "packages/core/src");

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : /\.tsx?$/.test(e.name) ? [join(dir, e.name)] : [],
  );
}

/** The files a source file imports (relative imports only, type imports included), resolved. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  return [...text.matchAll(/^(?:import|export)[^;]*?from "(\.{1,2}\/[^"]+)\.js";/gms)].map((m) =>
    resolve(dirname(file), `${m[1]}.ts`),
  );
}

/** The top folder of the server's src a file is in ("http", "use-cases", …; "." for the files at the top). */
function layer(file: string): string {
  const rel = relative(server, file);
  return rel.includes("/") ? (rel.split("/")[0] as string) : ".";
}

const serverFiles = sources(server);
const text = (file: string): string => readFileSync(file, "utf8");
const rel = (file: string): string => relative(root, file);

describe("the server's shape", () => {
  it("dependencies run one way: http and replication → use cases → engine, storage, core", () => {
    // What each layer may import from the server's own folders (core and contract are packages).
    const allowed: Record<string, string[]> = {
      // The shared bits (config, clock, events, metrics, secrets): config parses the storage URL, events carry lease records.
      ".": [".", "storage"],
      storage: ["storage", "."],
      engine: ["engine", "storage", "."],
      identity: ["identity", "storage", "."],
      "use-cases": ["use-cases", "engine", "storage", "identity", "."],
      replication: ["replication", "use-cases", "engine", "storage", "."],
      http: ["http", "use-cases", "storage", "."],
      main: ["main", "http", "replication", "use-cases", "engine", "storage", "identity", "."],
    };
    const wrong: string[] = [];
    for (const file of serverFiles) {
      // The package's public surface re-exports from everywhere.
      if (rel(file) === "packages/server/src/index.ts") continue;
      const from = layer(file);
      for (const target of importsOf(file)) {
        const to = layer(target);
        if (!(allowed[from] ?? []).includes(to)) wrong.push(`${rel(file)} → ${rel(target)}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("the engine runner knows no use case (it is handed what to rebuild)", () => {
    for (const file of sources(join(server, "engine")))
      expect(
        importsOf(file).filter((t) => layer(t) !== "engine" && layer(t) !== "storage" && layer(t) !== "."),
      ).toEqual([]);
  });

  it("only the composition root (main/) knows OpenTelemetry: the use cases call their tracing port", () => {
    const knowing = serverFiles.filter((f) => /from "@opentelemetry\//.test(text(f))).map(rel);
    expect(knowing.filter((f) => !f.startsWith("packages/server/src/main/"))).toEqual([]);
    // The SDK and the edge depend on no OpenTelemetry SDK part (the edge: the API only).
    const sdkAndEdge = [...sources(join(root, "packages/sdk/src")), ...sources(join(root, "packages/edge/src"))];
    expect(sdkAndEdge.filter((f) => /from "@opentelemetry\/(?!api")/.test(text(f))).map(rel)).toEqual([]);
  });

  it("routes only parse, call a use case and serialize: no store, no transaction", () => {
    for (const file of sources(join(server, "http"))) {
      expect(text(file), rel(file)).not.toMatch(/\.transaction\(|\.stage\(|\bStore\b|\bTx\b/);
    }
  });

  it("only the accounts module loads and saves ledgers", () => {
    const touching = serverFiles.filter((f) => !f.includes("/storage/") && /\.ledgers\./.test(text(f))).map(rel);
    expect(touching).toEqual(["packages/server/src/use-cases/accounts/accounts.ts"]);
  });

  it("only the wallets seam writes wallets: grants, their transactions, billing settings", () => {
    const writing = serverFiles
      .filter((f) => !f.includes("/storage/"))
      .filter((f) => /tx\.wallets\.(putAccount|insertGrant|updateGrant|addTransactions|lock)\(/.test(text(f)))
      .map(rel);
    expect(writing).toEqual(["packages/server/src/use-cases/accounts/wallets.ts"]);
  });

  it("one function decides admission, and the pool's and the quota's refusal texts live beside it in core", () => {
    const deciders = [...serverFiles, ...sources(core)]
      .filter((f) => /\bdecideAdmission\(/.test(text(f)))
      .map(rel)
      .sort();
    expect(deciders).toEqual([
      "packages/core/src/leases/admission.ts",
      "packages/core/src/simulator/simulator.ts",
      "packages/server/src/replication/follower.ts",
      "packages/server/src/use-cases/leases/diagnose.ts",
      "packages/server/src/use-cases/leases/leader-leases.ts",
    ]);
    // Nothing but core's admission calls reserve() (the quota half of the decision).
    const reserving = [...serverFiles, ...sources(core)].filter((f) => /[^n]reserve\(\{/.test(text(f))).map(rel);
    expect(reserving).toEqual(["packages/core/src/leases/admission.ts"]);
    // Refusals for quota or the pool are written only in core.
    const writers = serverFiles
      .filter((f) =>
        /problem\("(quota_exceeded|duration_too_long|runs_exceeded)"|reason: "(queue_full|queue_disabled|no_capacity|node_not_registered)"/.test(
          text(f),
        ),
      )
      .map(rel);
    expect(writers).toEqual([]);
  });

  it("no source file is over 400 lines", () => {
    const files = [...sources(join(root, "packages"))].filter(
      (f) => f.includes("/src/") && !f.includes("/node_modules/") && !f.includes("/dist/"),
    );
    const long = files.map((f) => ({ file: rel(f), lines: text(f).split("\n").length })).filter((f) => f.lines > 400);
    expect(long).toEqual([]);
  });
});

describe("the project's documents", () => {
  it("comments, tests and docs cite the project's own docs, never the product spec's sections", () => {
    const dirs = ["packages", "test", "bench", "docs"].map((d) => join(root, d));
    const files = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
        e.name === "node_modules" || e.name === "dist"
          ? []
          : e.isDirectory()
            ? files(join(dir, e.name))
            : /\.(tsx?|js|md)$/.test(e.name)
              ? [join(dir, e.name)]
              : [],
      );
    const citing = [...dirs.flatMap(files), join(root, "README.md")].filter((f) => /\bSPEC\b/.test(text(f))).map(rel);
    expect(citing).toEqual([]);
  });
});
