#!/usr/bin/env node
// Committed shim so that the `gpupool` bin link exists before the first build.
// The CLI itself is compiled to dist/main.js (`npm run build` in the repository root).
import("../dist/main.js").catch((error) => {
  const missing =
    error !== null &&
    typeof error === "object" &&
    error.code === "ERR_MODULE_NOT_FOUND" &&
    String(error.message).includes("dist/main.js");
  process.stderr.write(
    missing
      ? "gpupool: the CLI is not built yet; run `npm run build` in the repository root first.\n"
      : `gpupool: failed to start: ${error && error.stack ? error.stack : String(error)}\n`,
  );
  process.exit(1);
});
