/**
 * `chorus engine`: the HTTP control API, the session manager with one ffmpeg → Opus pipeline per
 * session, the encoder threads, and the frame socket the gateway reads. startEngine() runs it in
 * process (tests, benchmarks); runEngine() runs it until SIGINT/SIGTERM.
 */
import type { AddressInfo } from 'node:net';
import type { Config } from '../../shared/config.js';
import { resolveFfmpeg, type FfmpegBinary } from '../../shared/ffmpeg.js';
import { logger } from '../../shared/log.js';
import { EncoderPool } from './encoder-pool.js';
import { PassthroughCounters, pipelineSource } from './pipeline.js';
import { createHttpApi } from './http-api.js';
import { SessionManager } from './manager.js';
import { engineMetrics } from './metrics.js';
import { FrameScheduler } from './scheduler.js';
import type { Session } from './session.js';
import { SocketServer } from './socket-server.js';
import { EgressProxy } from './egress-proxy.js';
import { prepareMediaRoot, remoteGuard, sourceResolver } from './source.js';
import { listen } from '../listen.js';
import { nextStopSignal } from '../signals.js';

const log = logger('engine');

/** What `chorus engine` sends its parent over IPC once it serves (see start.ts). */
export interface EngineReadyMessage {
  type: 'engine-ready';
  httpUrl: string;
}

export interface RunningEngine {
  httpUrl: string;
  httpPort: number;
  socketPath: string;
  ffmpeg: FfmpegBinary;
  /** Stops every session (and its ffmpeg), the threads and the servers; removes the socket. */
  close(): Promise<void>;
}

export async function startEngine(config: Config): Promise<RunningEngine> {
  const mediaRoot = prepareMediaRoot(config.CHORUS_MEDIA_ROOT);
  const ffmpeg = resolveFfmpeg(config.CHORUS_FFMPEG);
  log.info('using ffmpeg', { source: ffmpeg.source, path: ffmpeg.path });
  const policy = { mediaRoot, remoteAllow: config.CHORUS_REMOTE_ALLOW };
  const egress = new EgressProxy(remoteGuard(policy));
  const proxyUrl = await egress.listen();
  const sessions = new Map<string, Session>();
  const scheduler = new FrameScheduler(sessions);
  const pool = new EncoderPool(config.CHORUS_ENCODER_THREADS);
  const passthrough = new PassthroughCounters();
  const manager = new SessionManager(sessions, {
    config,
    scheduler,
    resolve: sourceResolver(policy),
    startSource: pipelineSource(config, ffmpeg.path, pool, proxyUrl, passthrough),
  });
  const socket = new SocketServer(config.CHORUS_SOCKET, scheduler, config.CHORUS_ENGINE_DIALECT === 'chorus');
  log.info('engine socket dialect', { dialect: config.CHORUS_ENGINE_DIALECT });
  const started = performance.now();
  const metrics = engineMetrics({ manager, scheduler, socket, pool, egress, passthrough });
  const http = createHttpApi({
    manager,
    health: () => ({
      // Without a gateway the engine still takes plays (and buffers them): that is not a fault.
      status: 'ok',
      sessions: manager.live,
      max_sessions: config.CHORUS_MAX_SESSIONS,
      gateway_connected: scheduler.connected,
      flow: scheduler.mode,
      encoder_threads: pool.size,
      ffmpeg: ffmpeg.source,
      uptime_s: Math.round((performance.now() - started) / 1000),
    }),
    metrics,
    token: config.CHORUS_TOKEN,
    bindHost: config.CHORUS_ENGINE_HOST,
  });

  const closeAll = async () => {
    manager.stopAll('engine shutting down');
    scheduler.close();
    http.closeAllConnections();
    await Promise.all([
      new Promise<void>((resolve) => http.close(() => resolve())),
      socket.close().catch(() => undefined),
      pool.destroy(),
      egress.close(),
    ]);
  };
  try {
    // HTTP first: a gateway that can connect to the socket may call the API at once.
    await listen(http, config.CHORUS_ENGINE_HOST, config.CHORUS_ENGINE_PORT, 'CHORUS_ENGINE_PORT', 'CHORUS_ENGINE_HOST');
    await socket.listen();
  } catch (err) {
    await closeAll();
    throw err;
  }

  const { port } = http.address() as AddressInfo;
  const host = config.CHORUS_ENGINE_HOST.includes(':') ? `[${config.CHORUS_ENGINE_HOST}]` : config.CHORUS_ENGINE_HOST;
  const httpUrl = `http://${host}:${port}`;
  log.info(`engine ready http=${httpUrl} socket=${config.CHORUS_SOCKET} ffmpeg=${ffmpeg.source} media_root=${mediaRoot}`);
  let closing: Promise<void> | undefined;
  return {
    httpUrl,
    httpPort: port,
    socketPath: config.CHORUS_SOCKET,
    ffmpeg,
    close: () => (closing ??= closeAll()),
  };
}

export async function runEngine(config: Config): Promise<void> {
  const stopSignal = nextStopSignal();
  const engine = await startEngine(config);
  // Under `chorus start`, which learns the engine's URL from this message, not from the log.
  process.send?.({ type: 'engine-ready', httpUrl: engine.httpUrl } satisfies EngineReadyMessage);
  const reason = await stopSignal;
  log.info('stopping', { reason });
  await engine.close();
  log.info('stopped');
}
