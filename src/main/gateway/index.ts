/**
 * `chorus gateway`: the engine socket client, the session worker threads and the HTTP/WebSocket
 * API. startGateway() runs it in process (`chorus start`, benchmarks); runGateway() runs it until
 * SIGINT/SIGTERM.
 */
import type { AddressInfo } from 'node:net';
import type { Config } from '../../shared/config.js';
import { logger } from '../../shared/log.js';
import { Gateway } from './gateway.js';
import { createGatewayServer } from './http-api.js';
import { listen } from '../listen.js';
import { nextStopSignal } from '../signals.js';

const log = logger('gateway');

export interface RunningGateway {
  url: string;
  port: number;
  gateway: Gateway;
  /** Stops the engine's tracks, the threads and the server. */
  close(): Promise<void>;
}

export async function startGateway(config: Config): Promise<RunningGateway> {
  const gateway = new Gateway(config);
  const { server, closeListeners } = createGatewayServer(gateway, config);
  await listen(server, config.CHORUS_HOST, config.CHORUS_PORT, 'CHORUS_PORT', 'CHORUS_HOST').catch(async (err: Error) => {
    await gateway.close();
    throw err;
  });
  gateway.start();
  const { port } = server.address() as AddressInfo;
  const host = config.CHORUS_HOST.includes(':') ? `[${config.CHORUS_HOST}]` : config.CHORUS_HOST;
  const url = `http://${host}:${port}`;
  log.info(
    `gateway ready http=${url} engine=${config.CHORUS_ENGINE_URL} socket=${config.CHORUS_SOCKET} ` +
      `sessions_per_thread=${config.CHORUS_SESSIONS_PER_THREAD} slow_listener=${config.CHORUS_SLOW_LISTENER}`,
  );
  let closing: Promise<void> | undefined;
  const close = async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closeListeners();
    await Promise.all([closed, gateway.close()]);
  };
  return { url, port, gateway, close: () => (closing ??= close()) };
}

export async function runGateway(config: Config): Promise<void> {
  const stopSignal = nextStopSignal();
  const running = await startGateway(config);
  const reason = await stopSignal;
  log.info('stopping', { reason });
  await running.close();
  log.info('stopped');
}
