#!/usr/bin/env node
// `npm run docs`: rewrites docs/wire.md from the contract (a test fails while they differ).
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { openApiDocument, renderWireDoc } from "../dist/openapi/index.js";

const target = fileURLToPath(new URL("../../../docs/wire.md", import.meta.url));
writeFileSync(target, renderWireDoc(openApiDocument()));
console.log(`wrote ${target}`);
