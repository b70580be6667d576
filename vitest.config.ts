import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.ts", "test/**/*.test.ts"],
    // A throwaway PostgreSQL for the suites that need one (or GPUPOOL_TEST_POSTGRES_URL); see docs/postgres.md.
    globalSetup: ["test/pg/global-setup.ts"],
    // End-to-end tests start real processes; the machines are small, so keep parallelism modest.
    maxWorkers: 2,
    // Generous: a test that starts Node processes (the CLI, the demo, servers) took over 30 s on a
    // loaded 2-core CI machine. Time limits here only catch hangs; no test asserts on speed.
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
