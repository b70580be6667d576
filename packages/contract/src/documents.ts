import * as z from "zod/mini";

/** What `GET /openapi.json` answers, as far as a client may rely on: an OpenAPI 3.1 document (this one). */
export const OpenApiDocumentObject = z.looseObject({
  openapi: z.literal("3.1.0"),
  info: z.looseObject({ title: z.string(), version: z.string() }),
  paths: z.record(z.string(), z.unknown()),
  components: z.looseObject({}),
});
