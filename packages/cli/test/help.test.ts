import type { Command } from "commander";
import { describe, expect, it } from "vitest";
import { buildProgram } from "../src/program.js";

/** Every command with the whole of its --help, as a person sees it (texts added before and after included). */
function helpTexts(): { path: string; help: string }[] {
  const out: { path: string; help: string }[] = [];
  const walk = (cmd: Command, path: string): void => {
    let help = "";
    cmd.configureOutput({ writeOut: (s) => void (help += s), writeErr: (s) => void (help += s) });
    cmd.outputHelp();
    out.push({ path, help });
    for (const sub of cmd.commands) walk(sub, `${path} ${sub.name()}`);
  };
  walk(buildProgram(), "gpupool");
  return out;
}

/** The commands a help text tells people to run: example lines (`gpupool …`) and `gpupool …` in backticks. */
function namedCommands(help: string): string[] {
  const lines = help.split("\n").flatMap((l) => (/^\s*(?:npx )?gpupool \S/.test(l) ? [l.trim()] : []));
  const quoted = [...help.matchAll(/`(?:npx )?(gpupool [^`]+)`/g)].map((m) => m[1] ?? "");
  return [...lines, ...quoted].map((s) => s.replace(/^npx /, ""));
}

/** Follows `words` through the command tree; null when they name a command that does not exist. */
function resolve(program: Command, words: readonly string[]): string | null {
  let cmd = program;
  const path = ["gpupool"];
  for (const word of words) {
    if (cmd.commands.length === 0 || word.startsWith("-") || word.startsWith("<")) break;
    const sub = cmd.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (sub === undefined) return null;
    cmd = sub;
    path.push(word);
  }
  // A command with subcommands needs one (`gpupool admin` alone is not something to run).
  return cmd.commands.length > 0 && path.length > 1 ? null : path.join(" ");
}

describe("gpupool --help", () => {
  it("every command a help text names exists (e.g. `gpupool admin edges create`, not `admin edge create`)", () => {
    const program = buildProgram();
    const wrong: string[] = [];
    let checked = 0;
    for (const { path, help } of helpTexts()) {
      for (const named of namedCommands(help)) {
        const words = named.split(/\s+/).slice(1);
        if (words[0] === "<command>") continue;
        checked++;
        if (resolve(program, words) === null) wrong.push(`${path} --help names "${named}"`);
      }
    }
    expect(wrong).toEqual([]);
    // The check did look at something: the examples of the admin, edge and agent commands at least.
    expect(checked).toBeGreaterThan(10);
  });

  it("gpupool edge --help says where an edge key comes from, with the command that makes one", () => {
    const edge = helpTexts().find((h) => h.path === "gpupool edge");
    expect(edge?.help.replace(/\s+/g, " ")).toContain("`gpupool admin edges create`");
  });
});
