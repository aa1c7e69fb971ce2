/**
 * `npm run fuzz`: the fast-check properties of the shared decoders (test/shared/properties.ts)
 * and of the gateway's HTTP and WebSocket inputs (test/main/gateway/properties.ts, against a
 * gateway in this process and a stand-in engine, a fresh pair per batch), which the normal test
 * run checks with 10 000 cases each, run for minutes with fresh seeds.
 *
 *   npm run fuzz                              5 minutes over every property
 *   npm run fuzz -- --minutes 30              longer
 *   npm run fuzz -- --property decoder        only the properties whose name contains "decoder"
 *   npm run fuzz -- --property "decoder: hostile input" --seed=42 --path "3:1:0"
 *                                             replay one reported failure
 *
 * Prints a progress line per batch; on a failure prints the counterexample and the command that
 * replays it, and exits 1.
 */
import fc from 'fast-check';
import { startGateway } from '../src/main/gateway/index.js';
import { setLogLevel } from '../src/shared/log.js';
import { checkServing, httpInputProperty, startFuzzTarget, WsFuzzClients, wsInputProperty, type FuzzTarget } from '../test/main/gateway/properties.js';
import { PROPERTIES as SHARED_PROPERTIES } from '../test/shared/properties.js';
import { defineCommand, numberFlag, parseCommandLine, UsageError } from './lib/cli.js';

const BATCH_RUNS = 10_000;

type Check = (params: fc.Parameters<unknown>) => Promise<fc.RunDetails<unknown>>;

/** A batch of a gateway property: a fresh gateway, the cases, a check that it still serves. */
function gatewayCheck<T extends [unknown]>(make: (target: FuzzTarget) => { property: fc.IAsyncPropertyWithHooks<T>; done(): void }): Check {
  return async (params) => {
    const target = await startFuzzTarget(startGateway);
    const { property, done } = make(target);
    try {
      const details = await fc.check(property, params as fc.Parameters<T>);
      if (!details.failed) await checkServing(target);
      return details as fc.RunDetails<unknown>;
    } finally {
      done();
      await target.close();
    }
  };
}

/** Every property, by name. */
const PROPERTIES: Record<string, Check> = {
  ...Object.fromEntries(
    Object.entries(SHARED_PROPERTIES).map(([name, make]) => [name, async (params: fc.Parameters<unknown>) => fc.check(make() as unknown as fc.IProperty<unknown>, params)]),
  ),
  'gateway: HTTP inputs': gatewayCheck((t) => ({ property: httpInputProperty(t), done: () => undefined })),
  'gateway: WebSocket messages': gatewayCheck((t) => {
    const clients = new WsFuzzClients(t);
    return { property: wsInputProperty(clients), done: () => clients.close() };
  }),
};

interface Options {
  minutes: number;
  property?: string;
  seed?: number;
  path?: string;
}

const COMMAND = defineCommand({
  name: 'fuzz',
  usage: 'npm run fuzz -- [--minutes N] [--property NAME] [--seed S --path P]',
  flags: {
    minutes: { type: 'string', value: 'N', help: 'how long to run, in minutes (5)' },
    property: { type: 'string', value: 'NAME', help: 'only the properties whose name contains NAME' },
    seed: { type: 'string', value: 'S', help: 'replay: the seed of a reported failure (a negative one as --seed=-S)' },
    path: { type: 'string', value: 'P', help: "replay: the failure's path, with --seed" },
  },
  notes: `properties:\n${Object.keys(PROPERTIES)
    .map((n) => `  ${n}`)
    .join('\n')}`,
});

function positive(minutes: string): number {
  const m = Number(minutes);
  if (!(m > 0)) throw new UsageError('--minutes must be a positive number');
  return m;
}

function readArgs(): Options {
  return parseCommandLine(COMMAND, (v) => ({
    minutes: v.minutes === undefined ? 5 : positive(v.minutes),
    ...(v.property !== undefined ? { property: v.property } : {}),
    ...(v.seed !== undefined ? { seed: numberFlag('seed', v.seed, -(2 ** 31), 2 ** 31 - 1, true) } : {}),
    ...(v.path !== undefined ? { path: v.path } : {}),
  }));
}

function clock(ms: number): string {
  const s = Math.floor(ms / 1000);
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

async function main(): Promise<void> {
  const opts = readArgs();
  // The gateway under fuzz logs every refusal: only its errors (a 5xx, a crash) are news here.
  setLogLevel('error');
  const names = Object.keys(PROPERTIES).filter(
    (n) => opts.property === undefined || n.includes(opts.property),
  );
  if (names.length === 0) {
    process.stderr.write(`fuzz: no property matches ${JSON.stringify(opts.property)}\n${COMMAND.notes}\n`);
    process.exit(2);
  }

  if (opts.seed !== undefined) {
    // replay: one property, the reported seed and path
    for (const name of names) {
      const details = await PROPERTIES[name]!({
        seed: opts.seed,
        path: opts.path,
        numRuns: BATCH_RUNS,
      });
      process.stdout.write(`${name}: ${details.failed ? 'FAILED' : 'passed'}\n`);
      if (details.failed) {
        process.stdout.write(fc.defaultReportMessage(details) + '\n');
        if (details.errorInstance !== undefined) process.stdout.write(`cause: ${String((details.errorInstance as Error)?.message ?? details.errorInstance)}\n`);
        process.exit(1);
      }
    }
    return;
  }

  const started = Date.now();
  const deadline = started + opts.minutes * 60_000;
  const runs = new Map<string, number>(names.map((n) => [n, 0]));
  let seed = Date.now() ^ (process.pid << 8);
  process.stdout.write(`fuzz: ${names.length} properties for ${opts.minutes} min, ${BATCH_RUNS} cases per batch\n`);
  while (Date.now() < deadline) {
    for (const name of names) {
      seed = (seed + 0x9e3779b9) | 0;
      const batchStart = Date.now();
      const details = await PROPERTIES[name]!({ seed, numRuns: BATCH_RUNS });
      const total = runs.get(name)! + details.numRuns;
      runs.set(name, total);
      if (details.failed) {
        process.stdout.write(`\n[${clock(Date.now() - started)}] ${name}: FAILED after ${total} cases\n`);
        process.stdout.write(fc.defaultReportMessage(details) + '\n');
        if (details.errorInstance !== undefined) process.stdout.write(`cause: ${String((details.errorInstance as Error)?.message ?? details.errorInstance)}\n`);
        process.stdout.write(
          `replay: npm run fuzz -- --property ${JSON.stringify(name)} --seed=${details.seed}` +
            (details.counterexamplePath ? ` --path ${JSON.stringify(details.counterexamplePath)}` : '') +
            '\n',
        );
        process.exit(1);
      }
      const all = [...runs.values()].reduce((a, b) => a + b, 0);
      process.stdout.write(
        `[${clock(Date.now() - started)}] ${name.padEnd(34)} ${String(total).padStart(10)} cases ok ` +
          `(batch ${Date.now() - batchStart} ms, seed ${seed}) · ${all} in all\n`,
      );
      if (Date.now() >= deadline) break;
    }
  }
  process.stdout.write(`fuzz: done, ${[...runs.values()].reduce((a, b) => a + b, 0)} cases, no failure\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`fuzz: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
