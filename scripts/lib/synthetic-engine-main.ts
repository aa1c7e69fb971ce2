/**
 * The synthetic engine as a process (so a load test can kill -9 it and start it again):
 *
 *   node dist-scripts/scripts/lib/synthetic-engine-main.js --socket PATH [--port N] [--host H]
 *        [--seed] [--flood] [--tick-ms N] [--prepare N]
 *
 * --prepare N encodes (or reads from the cache) the loops of tones 0…N-1 before it listens, so
 * no play waits for an encoder. Prints `synthetic-engine ready http=URL socket=PATH` when it
 * serves, and stops on SIGTERM/SIGINT.
 */
import { startSyntheticEngine } from './synthetic-engine.js';
import { ToneBank, toneHz } from './tones.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const socketPath = arg('--socket');
  if (!socketPath) throw new Error('--socket PATH is required');
  const bank = new ToneBank();
  const prepare = Number(arg('--prepare') ?? 0);
  if (prepare > 0) {
    const started = performance.now();
    bank.prepare(Array.from({ length: prepare }, (_, i) => toneHz(i)));
    if (bank.encoded > 0) {
      process.stderr.write(
        `synthetic-engine: encoded ${bank.encoded} tone loops in ${Math.round(performance.now() - started)} ms (cached for next time)\n`,
      );
    }
  }
  const engine = await startSyntheticEngine({
    socketPath,
    httpPort: Number(arg('--port') ?? 0),
    httpHost: arg('--host') ?? '127.0.0.1',
    seed: process.argv.includes('--seed'),
    pacing: process.argv.includes('--flood') ? 'flood' : 'engine',
    tickMs: Number(arg('--tick-ms') ?? 1),
    bank,
  });
  process.stdout.write(`synthetic-engine ready http=${engine.httpUrl} socket=${engine.socketPath} mode=${engine.mode}\n`);
  const signal = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  await engine.close();
  process.stdout.write(`synthetic-engine stopped (${signal})\n`);
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`synthetic-engine: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
