/**
 * `chorus start`: everything a new user needs to hear audio. The engine runs as a child process
 * (its own ffmpeg children stay out of the gateway's process), the gateway in this one, joined by
 * a socket in a fresh temp dir. Ctrl-C or SIGTERM stops both, leaves no ffmpeg running and
 * removes the socket's directory; so does a start that fails half-way, and so does the engine on
 * its own when this process dies (it watches its IPC channel).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../shared/config.js';
import { logger } from '../shared/log.js';
import type { EngineReadyMessage } from './engine/index.js';
import { prepareMediaRoot } from './engine/source.js';
import { openStore, startGateway, type RunningGateway } from './gateway/index.js';
import { nextStopSignal } from './signals.js';

const log = logger('start');
const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));
const ENGINE_START_TIMEOUT_MS = 30_000;
const ENGINE_STOP_GRACE_MS = 5000;
/** The session the start banner's two lines (a page to open, a play to send) share. */
const DEMO_SESSION = 'demo';

export async function runStart(config: Config): Promise<void> {
  const stopSignal = nextStopSignal();
  // Checked here too, so a wrong media root is one line before anything is started.
  const mediaRoot = prepareMediaRoot(config.CHORUS_MEDIA_ROOT);
  const store = openStore(config);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'chorus-'));
  const socket = process.env.CHORUS_SOCKET ? config.CHORUS_SOCKET : path.join(dir, 'engine.sock');
  const engineEnv: NodeJS.ProcessEnv = { ...process.env, CHORUS_SOCKET: socket, CHORUS_MEDIA_ROOT: mediaRoot };
  // The engine picks a free port unless one was asked for, so `npm start` never collides.
  if (!process.env.CHORUS_ENGINE_PORT) engineEnv.CHORUS_ENGINE_PORT = '0';
  const engine = spawn(process.execPath, [CLI, 'engine'], { env: engineEnv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const engineExit = new Promise<string>((resolve) =>
    engine.once('exit', (code, signal) => resolve(`the engine exited (code ${code}, signal ${signal})`)),
  );

  /** Stops whatever has been started so far; used by a failed start and by a normal stop. */
  const stopAll = async (gateway?: RunningGateway) => {
    await gateway?.close();
    await stopEngine(engine, engineExit);
    rmSync(dir, { recursive: true, force: true });
  };

  let engineUrl: string;
  let gateway: RunningGateway;
  try {
    engineUrl = await engineReady(engine, engineExit);
    gateway = await startGateway({ ...config, CHORUS_SOCKET: socket, CHORUS_ENGINE_URL: engineUrl }, store);
  } catch (err) {
    store.close();
    await stopAll();
    throw err;
  }
  log.info(`start ready http=${gateway.url} engine=${engineUrl} socket=${socket} media_root=${mediaRoot}`);
  process.stdout.write(banner(gateway.url, engineUrl, socket, mediaRoot, config.CHORUS_TOKEN !== undefined));

  const reason = await Promise.race([stopSignal, engineExit]);
  log.info('stopping', { reason });
  await stopAll(gateway);
  log.info('stopped');
  if (reason.startsWith('the engine')) process.exitCode = 1;
}

/** Resolves with the engine's URL once it says it is ready; rejects if it exits or hangs. */
function engineReady(engine: ChildProcess, exit: Promise<string>): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the engine did not start within 30 s')), ENGINE_START_TIMEOUT_MS);
    engine.on('message', (message: EngineReadyMessage) => {
      if (message.type !== 'engine-ready') return;
      clearTimeout(timer);
      resolve(message.httpUrl);
    });
    void exit.then((why) => {
      clearTimeout(timer);
      reject(new Error(`${why} before it was ready`));
    });
  });
}

/** SIGTERM, then SIGKILL after a grace period; resolves once the engine has exited. */
async function stopEngine(engine: ChildProcess, exit: Promise<string>): Promise<void> {
  if (engine.exitCode === null && engine.signalCode === null) {
    engine.kill('SIGTERM');
    const timer = setTimeout(() => engine.kill('SIGKILL'), ENGINE_STOP_GRACE_MS);
    await exit;
    clearTimeout(timer);
  }
}

/** What a user needs next: a page to open and a play to send, which meet in one session. */
function banner(gatewayUrl: string, engineUrl: string, socket: string, mediaRoot: string, token: boolean): string {
  const auth = token ? ` -H "Authorization: Bearer $CHORUS_TOKEN"` : '';
  const pageToken = token ? '&token=<CHORUS_TOKEN>' : '';
  return [
    '',
    'chorus is running.',
    `  listen:  open ${gatewayUrl}/?session=${DEMO_SESSION}${pageToken} in a browser and click once on the page`,
    `  play:    curl -X POST${auth} ${gatewayUrl}/sessions/${DEMO_SESSION}/play -d '{"url":"tone:440?seconds=30"}'`,
    `  gateway: ${gatewayUrl}   engine: ${engineUrl}   socket: ${socket}`,
    `  media:   ${mediaRoot} (files in it play by their path in it)`,
    `  stop:    Ctrl-C, or SIGTERM to pid ${process.pid}`,
    '',
    '',
  ].join('\n');
}
