import type { FastifyRequest } from "fastify";

/**
 * How many times the request carried header `name` (lower case). Node keeps only the first
 * Authorization and joins repeated X- headers with ", ", so the raw list is what tells.
 */
export function copies(req: FastifyRequest, name: string): number {
  const raw = req.raw.rawHeaders;
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const h = raw[i] ?? "";
    if (h.length === name.length && h.toLowerCase() === name) n++;
  }
  return n;
}
