/**
 * The synthetic engine as a process (so a load test can kill -9 it and start it again):
 *
 *   node dist-scripts/scripts/lib/synthetic-engine-main.js --socket PATH [--port N] [--host H]
 *        [--seed] [--prepare N]
 *
 * --prepare N encodes (or reads from the cache) the loops of tones 0…N-1 before it listens, so
 * no play waits for an encoder. Prints `synthetic-engine ready http=URL socket=PATH` when it
 * serves, and stops on SIGTERM/SIGINT.
 */
import { startSyntheticEngine } from './synthetic-engine.js';
import { ToneBank, toneHz } from './tones.js';
import { defineCommand, numberFlag, parseCommandLine, UsageError } from './cli.js';

const COMMAND = defineCommand({
  name: 'synthetic-engine',
  usage: 'node dist-scripts/scripts/lib/synthetic-engine-main.js --socket PATH [flags]',
  flags: {
    socket: { type: 'string', value: 'PATH', help: 'the Unix socket it serves the gateway on (required)' },
    port: { type: 'string', value: 'N', help: 'HTTP port (0: any free one)' },
    host: { type: 'string', value: 'H', help: 'HTTP host (127.0.0.1)' },
    seed: { type: 'boolean', help: 'like the seed engine: no hello, real-time pacing only (for the baseline)' },
    prepare: { type: 'string', value: 'N', help: 'encode (or read from the cache) the loops of tones 0…N-1 first (0)' },
  },
});

async function main(): Promise<void> {
  const args = parseCommandLine(COMMAND, (v) => {
    if (!v.socket) throw new UsageError('--socket PATH is required');
    return {
      socketPath: v.socket,
      port: numberFlag('port', v.port ?? '0', 0, 65535, true),
      host: v.host ?? '127.0.0.1',
      seed: v.seed ?? false,
      prepare: numberFlag('prepare', v.prepare ?? '0', 0, 100_000, true),
    };
  });
  const bank = new ToneBank();
  const prepare = args.prepare;
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
    socketPath: args.socketPath,
    httpPort: args.port,
    httpHost: args.host,
    seed: args.seed,
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
