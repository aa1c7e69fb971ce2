import { defineConfig } from 'vitest/config';

// Integration tests run real ffmpeg, real threads and real sockets, and some measure cadence:
// files run one at a time so that one file's load does not skew another's timing.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
