import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { relative } from "node:path";

/** One entry of an npm v3 lockfile's `packages`. */
interface LockEntry {
  version?: string;
  resolved?: string;
  integrity?: string;
  link?: boolean;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  [field: string]: unknown;
}

/** A packed workspace package: its name, its workspace folder, and the tarball `npm pack` wrote. */
export interface Packed {
  readonly name: string;
  readonly folder: string;
  readonly tarball: string;
}

/** The folder a lockfile location's dependencies are looked up from next (as Node walks up). */
function parent(location: string): string | null {
  if (location === "") return null;
  const i = location.lastIndexOf("/node_modules/");
  return i < 0 ? "" : location.slice(0, i);
}

/**
 * A package-lock.json for a fresh project that depends on the packed tarballs (and `extra` of the
 * workspace root's dependencies, e.g. @types/node): every third-party package at the exact version
 * and integrity the workspace's own lockfile installed, so `npm ci --offline` takes each tarball
 * from the npm cache `npm ci` filled and asks no registry anything. The tarballs themselves are
 * what is being tested; the lockfile only pins what they depend on.
 */
export function lockfileFor(
  workspace: string,
  projectDir: string,
  packed: readonly Packed[],
  extra: readonly string[],
): { packageJson: object; lockfile: object } {
  const lock = JSON.parse(readFileSync(`${workspace}/package-lock.json`, "utf8")) as {
    packages: Record<string, LockEntry>;
  };
  const ours = new Map(packed.map((p) => [p.name, p]));
  const out: Record<string, LockEntry> = {};
  const rootDeps: Record<string, string> = {};
  const queue: { from: string; to: string; deps: Record<string, string>; optional?: Record<string, string> }[] = [];

  for (const p of packed) {
    const manifest = JSON.parse(readFileSync(`${workspace}/${p.folder}/package.json`, "utf8")) as LockEntry;
    const spec = `file:${relative(projectDir, p.tarball)}`;
    rootDeps[p.name] = spec;
    const deps = { ...(manifest.dependencies ?? {}) };
    out[`node_modules/${p.name}`] = {
      version: manifest.version ?? "0.0.0",
      resolved: spec,
      integrity: `sha512-${createHash("sha512").update(readFileSync(p.tarball)).digest("base64")}`,
      ...(Object.keys(deps).length > 0 ? { dependencies: deps } : {}),
      // npm links a package's commands from its lockfile entry.
      ...(manifest["bin"] ? { bin: manifest["bin"] } : {}),
    };
    queue.push({ from: p.folder, to: `node_modules/${p.name}`, deps });
  }
  const root = lock.packages[""] ?? {};
  const rootSpecs = { ...(root["devDependencies"] as Record<string, string>), ...root.dependencies };
  for (const name of extra) rootDeps[name] = rootSpecs[name] ?? "*";
  queue.push({ from: "", to: "", deps: Object.fromEntries(extra.map((n) => [n, rootDeps[n]!])) });

  while (queue.length > 0) {
    const { from, to, deps, optional = {} } = queue.shift()!;
    for (const dep of [...Object.keys(deps), ...Object.keys(optional)]) {
      if (ours.has(dep)) continue;
      let base: string | null = from;
      let found: string | null = null;
      while (base !== null && found === null) {
        const at = base === "" ? `node_modules/${dep}` : `${base}/node_modules/${dep}`;
        if (lock.packages[at] !== undefined) found = at;
        base = parent(base);
      }
      if (found === null) {
        if (dep in optional) continue; // an optional dependency this platform did not install
        throw new Error(`the workspace lockfile has no ${dep} for ${to || "the app"}`);
      }
      // Where the workspace nested it under one of our packages, nest it under the installed one.
      const owner = packed.find((p) => found.startsWith(`${p.folder}/`));
      const dest = owner ? `node_modules/${owner.name}${found.slice(owner.folder.length)}` : found;
      if (out[dest] !== undefined) continue;
      // Flags about the workspace's own dev tools; here everything is the app's dependency.
      const entry = { ...lock.packages[found]! };
      for (const flag of ["dev", "devOptional", "peer"]) delete entry[flag];
      out[dest] = entry;
      // Peers are left out: none of ours needs one the packages above do not already bring.
      queue.push({ from: found, to: dest, deps: entry.dependencies ?? {}, optional: entry.optionalDependencies ?? {} });
    }
  }
  const packageJson = {
    name: "packed-install-app",
    version: "1.0.0",
    private: true,
    type: "module",
    dependencies: rootDeps,
  };
  const lockfile = {
    name: packageJson.name,
    version: packageJson.version,
    lockfileVersion: 3,
    requires: true,
    packages: { "": { name: packageJson.name, version: packageJson.version, dependencies: rootDeps }, ...out },
  };
  return { packageJson, lockfile };
}
