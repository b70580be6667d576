import { GpupoolError, ServerUnavailableError, normalizeProblem, sdkProblem } from "./errors.js";
import { problemToError } from "./problem-errors.js";
import { isRecord, num, strOrNull } from "./json.js";

// How a node agent's device API answers are read (the agent client's half that decodes).

/** A GPU granted through the agent. */
export interface AgentGrant {
  readonly allowToken: string;
  readonly leaseId: string | null;
  /** The device's index on its node. */
  readonly index: number;
  readonly uuid: string;
  readonly name: string | null;
  readonly node: string | null;
  /** The device still runs this caller's previous worker (`spaces` reuse); false for SDK calls. */
  readonly idle: boolean;
  readonly deadline: Date | null;
}

export function decodeGrant(v: unknown): AgentGrant {
  if (!isRecord(v) || typeof v["allowToken"] !== "string" || typeof v["nvidiaUUID"] !== "string")
    throw invalid("a grant without allowToken or nvidiaUUID");
  const deadline = typeof v["deadline"] === "string" ? new Date(v["deadline"]) : null;
  return {
    allowToken: v["allowToken"],
    leaseId: strOrNull(v["leaseId"]),
    index: num(v["nvidiaIndex"]),
    uuid: v["nvidiaUUID"],
    name: strOrNull(v["name"]),
    node: strOrNull(v["node"]),
    idle: v["idle"] === true,
    deadline: deadline !== null && !Number.isNaN(deadline.getTime()) ? deadline : null,
  };
}

/**
 * A refusal as a typed error. The agent's answers carry the pool's problem; a bare 429 from
 * another device API (`{left, wait}` only) is read the way the `spaces` client reads it.
 */
export async function errorOf(method: string, url: string, response: Response): Promise<GpupoolError> {
  const text = await response.text().catch(() => "");
  let body: unknown = null;
  try {
    body = text === "" ? null : (JSON.parse(text) as unknown);
  } catch {
    // not JSON: described from the status below
  }
  const record = isRecord(body) ? body : {};
  if (response.status === 429 && typeof record["code"] !== "string") {
    const wait = num(record["wait"]);
    const code = wait < 0 ? "duration_too_long" : wait === 0 ? "runs_exceeded" : "quota_exceeded";
    body = {
      ...record,
      code,
      detail:
        code === "quota_exceeded"
          ? `GPU quota exceeded: ${num(record["left"])}s left; try again in ${wait}s.`
          : `Refused (${code}).`,
    };
  }
  const fallback = response.headers.get("x-gpupool-detail") ?? `${method} ${url} answered ${response.status}.`;
  const problem = normalizeProblem(body, response.status, fallback);
  if (response.status >= 500 && problem.code !== "no_gpu_available") {
    return new ServerUnavailableError(problem, {
      url,
      message: `The gpupool agent at ${url} could not serve the request (${response.status}): ${problem.detail}`,
    });
  }
  return problemToError(problem);
}

export function invalid(what: string): GpupoolError {
  return new GpupoolError(
    sdkProblem(
      "invalid_response",
      "Invalid response",
      0,
      `The gpupool agent sent ${what}; is the URL a gpupool agent's device API (http://127.0.0.1:7071/apps/<app-key>)?`,
    ),
  );
}

export function reasonOf(error: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    const text = e.message === "fetch failed" ? (typeof code === "string" ? code : "") : e.message;
    if (text !== "" && !parts.includes(text)) parts.push(text);
  }
  return parts.join("; ") || String(error);
}
