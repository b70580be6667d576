import { defineConfig } from "vite";
import preact from "@preact/preset-vite";

// Built into dist/ with hashed asset names; the control plane serves index.html (no-cache) and
// /assets/* (immutable). No inline script or style: the pages' CSP is `script-src 'self'; style-src 'self'`.
// Vite reads the default export.
// eslint-disable-next-line no-restricted-syntax
export default defineConfig({
  plugins: [preact({ prerender: { enabled: false } })],
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    assetsInlineLimit: 0,
    cssCodeSplit: false,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
  server: {
    proxy: { "/v1": process.env["GPUPOOL_URL"] ?? "http://127.0.0.1:8080" },
  },
});
