import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.ts", "test/**/*.test.ts"],
    // A throwaway PostgreSQL for the suites that need one (or GPUPOOL_TEST_POSTGRES_URL); see docs/postgres.md.
    globalSetup: ["test/pg/global-setup.ts"],
    // End-to-end tests start real processes; the machines are small, so keep parallelism modest.
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
