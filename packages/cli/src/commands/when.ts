import { parseDurationMs } from "@gpupool/core";
import { InvalidArgumentError } from "commander";

/**
 * An instant on the command line: a duration counted from now ("7d", "12h", "30m": `ago` for
 * --since, ahead for --expires), a day ("2027-01-01", midnight UTC) or an ISO 8601 time.
 */
export function parseInstant(direction: "ago" | "ahead", now: () => Date = () => new Date()) {
  return (value: string): Date => {
    const text = value.trim();
    if (/^\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)$/.test(text)) {
      const parsed = parseDurationMs(text);
      if (parsed.ok) return new Date(now().getTime() + (direction === "ago" ? -1 : 1) * parsed.ms);
    }
    const day = /^\d{4}-\d{2}-\d{2}$/.test(text) ? `${text}T00:00:00Z` : text;
    const at = /^\d{4}-\d{2}-\d{2}T/.test(day) ? new Date(day) : new Date(Number.NaN);
    if (Number.isNaN(at.getTime())) {
      const example = direction === "ago" ? "7d, 12h, 2025-01-01 or 2025-01-01T12:00:00Z" : "30d, 2027-01-01";
      throw new InvalidArgumentError(`"${value}" is not a time: write e.g. ${example}.`);
    }
    return at;
  };
}
