export { buildProgram, reportError, run, EXIT_FAILURE, EXIT_OK, EXIT_USAGE } from "./program.js";
export { startDemoApp } from "./demo/app.js";
export type { DemoApp } from "./demo/app.js";
export * as render from "./render.js";
