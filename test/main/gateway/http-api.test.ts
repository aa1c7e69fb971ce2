/**
 * The gateway's HTTP and WebSocket inputs under fast-check (test/main/gateway/properties.ts):
 * a real gateway in this process — the compiled one, whose worker file resolves next to it —
 * against a stand-in engine, FUZZ_RUNS cases per property.
 */
import fc from 'fast-check';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../helpers/chorus-process.js';
import { checkServing, FUZZ_RUNS, httpInputProperty, startFuzzTarget, type FuzzTarget, type StartGateway, WsFuzzClients, wsInputProperty } from './properties.js';

let startGateway: StartGateway;

beforeAll(async () => {
  const dist = (p: string) => path.join(REPO_ROOT, 'dist', p);
  ({ startGateway } = (await import(dist('main/gateway/index.js'))) as { startGateway: StartGateway });
  const { setLogLevel } = (await import(dist('shared/log.js'))) as typeof import('../../../src/shared/log.js');
  setLogLevel('error');
});

describe('gateway inputs under fuzz', () => {
  // Each property gets a gateway of its own: one's sessions must not fill the other's limit.
  let target: FuzzTarget | undefined;
  afterEach(async () => {
    await target?.close();
    target = undefined;
  });

  it(`any HTTP request or upgrade gets a 4xx with a JSON reason or an answer, never a 5xx, never past the token (${FUZZ_RUNS} cases)`, async () => {
    const t = (target = await startFuzzTarget(startGateway));
    const statuses = new Map<string, number>();
    await fc.assert(httpInputProperty(t, statuses), { numRuns: FUZZ_RUNS });
    await checkServing(t);
    // Not vacuous: the cases got past the token and the parsers to every kind of answer.
    console.log(JSON.stringify(Object.fromEntries([...statuses].sort())));
    expect(t.enginePlays).toBeGreaterThan(0);
    for (const key of ['client 200', 'client 400', 'client 401', 'client 403', 'client 404', 'client 405', 'client 409', 'client 413', 'client 429', 'raw 400', 'upgrade 101', 'upgrade 401']) {
      expect(statuses.get(key) ?? 0, key).toBeGreaterThan(0);
    }
  }, 180_000);

  it(`any WebSocket message gets its error event or runs, and only an oversized one closes (${FUZZ_RUNS} cases)`, async () => {
    const t = (target = await startFuzzTarget(startGateway));
    const clients = new WsFuzzClients(t);
    try {
      await fc.assert(wsInputProperty(clients), { numRuns: FUZZ_RUNS });
    } finally {
      clients.close();
    }
    await checkServing(t);
    expect(t.enginePlays).toBeGreaterThan(0);
  }, 180_000);
});
