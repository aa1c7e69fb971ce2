/**
 * The baseline (scripts/lib/baseline-gateway.ts) as a process, so a load test reads its RSS and
 * CPU from /proc exactly as it reads chorus's:
 *
 *   node dist-scripts/scripts/lib/baseline-gateway-main.js --socket PATH --engine-url URL [--port N]
 *
 * Prints `baseline ready http=URL`; stops on SIGTERM/SIGINT.
 */
import { startBaselineGateway } from './baseline-gateway.js';
import { defineCommand, numberFlag, parseCommandLine, UsageError } from './cli.js';

const COMMAND = defineCommand({
  name: 'baseline',
  usage: 'node dist-scripts/scripts/lib/baseline-gateway-main.js --socket PATH --engine-url URL [--port N]',
  flags: {
    socket: { type: 'string', value: 'PATH', help: "the engine's Unix socket (required)" },
    'engine-url': { type: 'string', value: 'URL', help: "the engine's HTTP API (required)" },
    port: { type: 'string', value: 'N', help: 'HTTP port (0: any free one)' },
  },
});

async function main(): Promise<void> {
  const { socketPath, engineUrl, port } = parseCommandLine(COMMAND, (v) => {
    if (!v.socket || !v['engine-url']) throw new UsageError('--socket PATH and --engine-url URL are required');
    return { socketPath: v.socket, engineUrl: v['engine-url'], port: numberFlag('port', v.port ?? '0', 0, 65535, true) };
  });
  const running = await startBaselineGateway({ socketPath, engineUrl, port });
  process.stdout.write(`baseline ready http=${running.url}\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await running.close();
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`baseline: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
