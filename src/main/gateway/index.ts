/**
 * `chorus gateway`: the engine socket client, the session worker threads and the HTTP/WebSocket
 * API. startGateway() runs it in process (`chorus start`, benchmarks); runGateway() runs it until
 * SIGINT/SIGTERM. With a session store (what `chorus gateway` and `chorus start` open in
 * CHORUS_DATA_DIR), stored sessions come back at start and changes are written behind.
 */
import type { AddressInfo } from 'node:net';
import type { Config } from '../../shared/config.js';
import { logger } from '../../shared/log.js';
import { Gateway } from './gateway.js';
import { SessionPersistence, type PersistentQueues } from './persistence.js';
import { SessionStore } from './store.js';
import { createGatewayServer } from './http-api.js';
import type { QueuePlayers } from './queue-player.js';
import type { QueueState } from '../../shared/queue.js';
import { gatewayMetrics } from './metrics.js';
import { listen } from '../listen.js';
import { nextStopSignal } from '../signals.js';
import { raiseFdLimit } from '../fd-limit.js';

const log = logger('gateway');

export interface RunningGateway {
  url: string;
  port: number;
  gateway: Gateway;
  /** The sessions' queues: a store restores them and hears every change (queue-player.ts). */
  queues: QueuePlayers;
  /** Present when the gateway runs with a session store. */
  persistence?: SessionPersistence;
  /** Stops the engine's tracks, the threads and the server. */
  close(): Promise<void>;
}

/** Descriptors kept aside from CHORUS_MAX_CONNECTIONS: the engine socket, worker threads, logs, files. */
const FD_HEADROOM = 256;

/** Raises the open-file limit and logs it, with a warning if CHORUS_MAX_CONNECTIONS cannot fit under it. */
function logFdLimit(maxConnections: number): void {
  const { before, after, how } = raiseFdLimit();
  if (!after) {
    log.warn('open-file limit unknown (no /proc/self/limits); keep CHORUS_MAX_CONNECTIONS below `ulimit -n`', { max_connections: maxConnections });
    return;
  }
  const fields = { max_connections: maxConnections };
  if (how === 'already' || how === 'prlimit') log.info(`open-file limit ${after.soft} (hard ${after.hard})${how === 'prlimit' ? `, raised from ${before!.soft} with prlimit` : ''}`, fields);
  else log.warn(`open-file limit ${after.soft} is below the hard limit ${after.hard}: ${how}; raise it with \`ulimit -n ${after.hard}\` before starting`, fields);
  if (maxConnections + FD_HEADROOM > after.soft) {
    log.warn(`CHORUS_MAX_CONNECTIONS=${maxConnections} leaves fewer than ${FD_HEADROOM} of ${after.soft} open files for the rest: lower it, or raise the limit (ulimit -n, LimitNOFILE=)`, fields);
  }
}

/** The session store in CHORUS_DATA_DIR; throws StoreError (one line) when it cannot be used. */
export function openStore(config: Config): SessionStore {
  return SessionStore.open(config.CHORUS_DATA_DIR);
}

/** The queues as the session store keeps them: a queue's plain state out, and back at start. */
function queueStore(queues: QueuePlayers): PersistentQueues {
  return {
    snapshot: (sessionId) => queues.snapshot(sessionId),
    restore: (sessionId, state) => {
      try {
        queues.restore(sessionId, state as QueueState);
      } catch (err) {
        log.warn('a stored queue could not be restored; the session comes back without it', { session: sessionId, reason: (err as Error).message });
      }
    },
  };
}

export async function startGateway(config: Config, store?: SessionStore): Promise<RunningGateway> {
  logFdLimit(config.CHORUS_MAX_CONNECTIONS);
  const gateway = new Gateway(config);
  gatewayMetrics(gateway);
  const { server, closeListeners, queues } = createGatewayServer(gateway, config);
  const persistence = store ? new SessionPersistence(store, gateway, queueStore(queues)) : undefined;
  if (persistence) queues.onChange = (sessionId) => persistence.queueChanged(sessionId);
  persistence?.restore();
  await listen(server, config.CHORUS_HOST, config.CHORUS_PORT, 'CHORUS_PORT', 'CHORUS_HOST').catch(async (err: Error) => {
    persistence?.close();
    await gateway.close();
    throw err;
  });
  gateway.start();
  persistence?.start();
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
    // Written before the tracks are stopped: a restart finds them where they were.
    persistence?.close();
    await Promise.all([closed, gateway.close()]);
  };
  return { url, port, gateway, queues, ...(persistence ? { persistence } : {}), close: () => (closing ??= close()) };
}

export async function runGateway(config: Config): Promise<void> {
  const stopSignal = nextStopSignal();
  const running = await startGateway(config, openStore(config));
  const reason = await stopSignal;
  log.info('stopping', { reason });
  await running.close();
  log.info('stopped');
}
