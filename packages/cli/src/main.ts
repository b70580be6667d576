// Entry point of the `gpupool` executable (bin/gpupool.js imports this file).
import { run } from "./program.js";

process.exitCode = await run(process.argv);
