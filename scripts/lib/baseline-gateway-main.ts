/**
 * The baseline (scripts/lib/baseline-gateway.ts) as a process, so a load test reads its RSS and
 * CPU from /proc exactly as it reads chorus's:
 *
 *   node dist-scripts/scripts/lib/baseline-gateway-main.js --socket PATH --engine-url URL [--port N]
 *
 * Prints `baseline ready http=URL`; stops on SIGTERM/SIGINT.
 */
import { startBaselineGateway } from './baseline-gateway.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const socketPath = arg('--socket');
  const engineUrl = arg('--engine-url');
  if (!socketPath || !engineUrl) throw new Error('--socket PATH and --engine-url URL are required');
  const running = await startBaselineGateway({ socketPath, engineUrl, port: Number(arg('--port') ?? 0) });
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
