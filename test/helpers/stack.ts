/**
 * A real engine and gateway (built CLI) on one socket in a fresh temp dir with a `media` folder
 * as the engine's media root, for tests that attack them as a client would.
 *
 *   const stack = await startStack({ CHORUS_TOKEN: t }, engineEnv, gatewayEnv);
 *   …
 *   await stopStack(stack);
 */
import fs from 'node:fs';
import path from 'node:path';
import { startChorus, tempDir, type ChorusProcess } from './chorus-process.js';
import { waitForHealth } from './http.js';

export interface Stack {
  dir: string;
  engine: ChorusProcess;
  gateway: ChorusProcess;
  url: string;
  /** The engine's variables, to start it again on the same socket. */
  engineEnv: Record<string, string>;
}

export async function startStack(shared: Record<string, string>, engineEnv: Record<string, string>, gatewayEnv: Record<string, string>): Promise<Stack> {
  const dir = tempDir('chorus-security-');
  const socket = path.join(dir, 'engine.sock');
  fs.mkdirSync(path.join(dir, 'media'));
  const engineVars = { CHORUS_ENGINE_PORT: '0', CHORUS_SOCKET: socket, CHORUS_MEDIA_ROOT: path.join(dir, 'media'), ...shared, ...engineEnv };
  const engine = await startChorus('engine', engineVars);
  let gateway: ChorusProcess;
  try {
    gateway = await startChorus('gateway', {
      CHORUS_PORT: '0',
      CHORUS_SOCKET: socket,
      CHORUS_ENGINE_URL: engine.httpUrl,
      CHORUS_RECONNECT_MAX_MS: '200',
      CHORUS_MEDIA_ROOT: path.join(dir, 'media'),
      ...shared,
      ...gatewayEnv,
    });
  } catch (err) {
    // A gateway that refused to start must not leave its engine running.
    await engine.stop();
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  await waitForHealth(gateway.httpUrl, "the engine's hello", (h) => h.engine_flow === 'credit');
  return { dir, engine, gateway, url: gateway.httpUrl, engineEnv: engineVars };
}

export async function stopStack(stack: Stack | undefined): Promise<void> {
  if (!stack) return;
  await Promise.allSettled([stack.gateway.stop(), stack.engine.stop()]);
  fs.rmSync(stack.dir, { recursive: true, force: true });
}
