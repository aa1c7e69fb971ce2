/**
 * `chorus start`: everything a new user needs to hear audio. The engine runs as a child process
 * (its own ffmpeg children stay out of the gateway's process), the gateway in this one, joined by
 * a socket in a fresh temp dir. Ctrl-C or SIGTERM stops both, leaves no ffmpeg running and
 * removes the socket's directory.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../shared/config.js';
import { logger } from '../shared/log.js';
import { startGateway } from './gateway/index.js';
import { nextStopSignal } from './signals.js';

const log = logger('start');
const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));
const ENGINE_START_TIMEOUT_MS = 30_000;

export async function runStart(config: Config): Promise<void> {
  const stopSignal = nextStopSignal();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'chorus-'));
  const socket = process.env.CHORUS_SOCKET ? config.CHORUS_SOCKET : path.join(dir, 'engine.sock');
  const engineEnv: NodeJS.ProcessEnv = { ...process.env, CHORUS_SOCKET: socket };
  // The engine picks a free port unless one was asked for, so `npm start` never collides.
  if (!process.env.CHORUS_ENGINE_PORT) engineEnv.CHORUS_ENGINE_PORT = '0';
  const engine = spawn(process.execPath, [CLI, 'engine'], { env: engineEnv, stdio: ['ignore', 'inherit', 'pipe'] });

  let engineExited = false;
  const engineUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the engine did not start within 30 s')), ENGINE_START_TIMEOUT_MS);
    let pending = '';
    engine.stderr.on('data', (chunk: Buffer) => {
      process.stderr.write(chunk);
      pending += chunk.toString();
      const match = /engine ready http=(\S+)/.exec(pending);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
      if (pending.length > 65536) pending = pending.slice(-4096);
    });
    engine.once('exit', (code, signal) => {
      engineExited = true;
      clearTimeout(timer);
      reject(new Error(`the engine exited before it was ready (code ${code}, signal ${signal})`));
    });
  }).catch((err: Error) => {
    engine.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  });
  // From here on the engine's log passes straight through.
  engine.stderr.removeAllListeners('data');
  engine.stderr.pipe(process.stderr);

  const gateway = await startGateway({ ...config, CHORUS_SOCKET: socket, CHORUS_ENGINE_URL: engineUrl });
  log.info(`start ready http=${gateway.url} engine=${engineUrl} socket=${socket}`);
  process.stdout.write(`\nchorus is running: open ${gateway.url}/ in a browser\n\n`);

  const stopEngine = () =>
    new Promise<void>((resolve) => {
      if (engineExited) return resolve();
      engine.once('exit', () => resolve());
      engine.kill('SIGTERM');
      setTimeout(() => engine.kill('SIGKILL'), 5000).unref();
    });

  const reason = await new Promise<string>((resolve) => {
    void stopSignal.then(resolve);
    engine.once('exit', (code, signal) => {
      engineExited = true;
      resolve(`the engine exited (code ${code}, signal ${signal})`);
    });
  });
  log.info('stopping', { reason });
  await gateway.close();
  await stopEngine();
  rmSync(dir, { recursive: true, force: true });
  log.info('stopped');
  if (!reason.startsWith('SIG')) process.exitCode = 1;
}
