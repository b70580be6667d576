import { createClient } from "@gpupool/sdk";
import type { FetchLike, GpupoolClient } from "@gpupool/sdk";
import { InvalidArgumentError, Option } from "commander";
import type { Command } from "commander";

export const DEFAULT_URL = "http://127.0.0.1:7070";

/** A mistake in how the CLI was called: printed without a stack, exit code 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** An expected failure to start: the message is for a person; no stack is printed. */
export class StartError extends Error {
  override readonly name = "StartError";
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

/** Options every client command may carry (commander fills in flags, then env, then defaults). */
export interface ClientFlags {
  readonly url: string;
  readonly token?: string | undefined;
  readonly ipToken?: string | undefined;
  readonly json?: boolean | undefined;
}

export function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

export function err(line = ""): void {
  process.stderr.write(`${line}\n`);
}

export function printJson(value: unknown): void {
  out(JSON.stringify(value, null, 2));
}

export function addUrlOption(cmd: Command): Command {
  return cmd.addOption(
    new Option("--url <url>", "control plane URL").env("GPUPOOL_URL").default(DEFAULT_URL).argParser(parseUrl),
  );
}

export function addTokenOption(cmd: Command, what = "user token or app key"): Command {
  return cmd.addOption(new Option("--token <token>", what).env("GPUPOOL_TOKEN"));
}

export function addIpTokenOption(cmd: Command): Command {
  return cmd.addOption(
    new Option("--ip-token <token>", "end user's X-IP-Token (with an app key): answer for that viewer").env(
      "GPUPOOL_IP_TOKEN",
    ),
  );
}

export function addJsonOption(cmd: Command): Command {
  return cmd.option("--json", "print the server's raw JSON answer");
}

export function parseUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError(`"${value}" is not a URL; write e.g. ${DEFAULT_URL}.`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new InvalidArgumentError(`"${value}" must be an http:// or https:// URL.`);
  }
  return value;
}

export function parsePositiveInt(max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value.trim())) throw new InvalidArgumentError(`"${value}" is not a whole number.`);
    const n = Number(value);
    if (n < 1 || n > max) throw new InvalidArgumentError(`must be between 1 and ${max}.`);
    return n;
  };
}

export function parsePort(value: string): number {
  if (!/^\d+$/.test(value.trim())) throw new InvalidArgumentError(`"${value}" is not a port number (0–65535).`);
  const n = Number(value);
  if (n > 65_535) throw new InvalidArgumentError(`${n} is not a port number (0–65535).`);
  return n;
}

/** The admin token from the environment (an empty value counts as unset). */
export function adminTokenFromEnv(): string | undefined {
  const token = process.env["GPUPOOL_ADMIN_TOKEN"];
  return token === undefined || token.trim() === "" ? undefined : token.trim();
}

export function requireAdminToken(): string {
  const token = adminTokenFromEnv();
  if (token === undefined) {
    throw new UsageError("This is an admin command: set GPUPOOL_ADMIN_TOKEN to the token the server was started with.");
  }
  return token;
}

export function requireToken(flags: ClientFlags, what: string): string {
  const token = flags.token?.trim();
  if (token === undefined || token === "") {
    throw new UsageError(`${what}: pass --token <user token or app key>, or set GPUPOOL_TOKEN.`);
  }
  return token;
}

/** A client plus the raw body of the last answer, so `--json` prints exactly what the server sent. */
export interface Connection {
  readonly client: GpupoolClient;
  readonly lastBody: () => unknown;
}

export function connect(
  url: string,
  credentials: { readonly token?: string | undefined; readonly adminToken?: string | undefined },
): Connection {
  let last = "";
  // Reads each answer once, keeps the text, and hands the SDK an identical Response.
  const fetch: FetchLike = async (input, init) => {
    const response = await globalThis.fetch(input, init);
    last = await response.text();
    return new Response(last === "" ? null : last, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  };
  const client = createClient({ url, token: credentials.token, adminToken: credentials.adminToken, fetch });
  return {
    client,
    lastBody: () => {
      try {
        return JSON.parse(last) as unknown;
      } catch {
        return last;
      }
    },
  };
}
