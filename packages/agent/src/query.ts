import { fail } from "@gpupool/core";

/** Query parameters as Fastify parses them: a repeated name becomes an array. */
export type RawQuery = Readonly<Record<string, string | string[] | undefined>>;

export interface ScheduleQuery {
  readonly cgroupPath: string | undefined;
  readonly taskId: string | undefined;
  readonly enableQueue: boolean;
  readonly durationS: number | undefined;
  readonly gpuSize: string | undefined;
  readonly token: string | undefined;
}

export const MIN_DURATION_S = 1;
export const MAX_DURATION_S = 86_400;

/** One parameter, at most `max` characters; given twice is an error (which one would win?). */
export function param(query: RawQuery, name: string, max: number): string | undefined {
  const v = query[name];
  if (Array.isArray(v))
    fail("invalid_request", `The query parameter ${name} is given ${v.length} times; give it once.`, {
      errors: [{ field: name, message: "is repeated" }],
    });
  if (v === undefined) return undefined;
  if (v.length > max)
    fail("invalid_request", `The query parameter ${name} is longer than ${max} characters.`, {
      errors: [{ field: name, message: `is longer than ${max} characters` }],
    });
  return v;
}

export function requiredParam(query: RawQuery, name: string, max: number): string {
  const v = param(query, name, max);
  if (v === undefined || v === "")
    fail("invalid_request", `The query parameter ${name} is missing.`, {
      errors: [{ field: name, message: "is required" }],
    });
  return v;
}

/** httpx writes booleans as "true"/"false"; Python's str() as "True"/"False". */
export function boolParam(query: RawQuery, name: string, fallback: boolean): boolean {
  const v = param(query, name, 8);
  if (v === undefined || v === "") return fallback;
  if (/^(true|1)$/i.test(v)) return true;
  if (/^(false|0)$/i.test(v)) return false;
  return fail("invalid_request", `The query parameter ${name} must be true or false, not "${v}".`, {
    errors: [{ field: name, message: "must be true or false" }],
  });
}

export function parseScheduleQuery(query: RawQuery): ScheduleQuery {
  const errors: { field: string; message: string }[] = [];
  const durationText = param(query, "durationSeconds", 32);
  let durationS: number | undefined;
  if (durationText !== undefined && durationText !== "") {
    durationS = /^\d+(\.\d+)?$/.test(durationText) ? Number(durationText) : NaN;
    // At least a second: the pool charges whole seconds, and the `spaces` client sends whole seconds.
    if (!(durationS >= MIN_DURATION_S && durationS <= MAX_DURATION_S))
      errors.push({
        field: "durationSeconds",
        message: `must be a number of seconds from ${MIN_DURATION_S} to ${MAX_DURATION_S}`,
      });
  }
  const gpuSize = param(query, "gpuSize", 32);
  if (gpuSize !== undefined && !/^[a-z][a-z0-9_-]{0,31}$/.test(gpuSize))
    errors.push({ field: "gpuSize", message: "must be a size name such as large or xlarge" });
  const taskId = param(query, "taskId", 64);
  if (taskId !== undefined && !/^[A-Za-z0-9_.:-]{1,64}$/.test(taskId))
    errors.push({ field: "taskId", message: "must be an identifier (letters, digits, _ . : -)" });
  const tokenVersion = param(query, "tokenVersion", 8);
  if (tokenVersion !== undefined && tokenVersion !== "" && !/^\d{1,3}$/.test(tokenVersion))
    errors.push({ field: "tokenVersion", message: "must be a small whole number" });
  const token = param(query, "token", 8192);
  const cgroupPath = param(query, "cgroupPath", 4096);
  const enableQueue = boolParam(query, "enableQueue", true);
  if (errors.length > 0) {
    fail(
      "invalid_request",
      `The /schedule query is invalid: ${errors.map((e) => `${e.field} ${e.message}`).join("; ")}. Nothing was requested.`,
      { errors },
    );
  }
  return {
    cgroupPath,
    taskId,
    enableQueue,
    durationS,
    gpuSize: gpuSize === "" ? undefined : gpuSize,
    token: token === "" ? undefined : token,
  };
}
