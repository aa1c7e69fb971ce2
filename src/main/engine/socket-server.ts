/**
 * The engine's frame socket: a Unix socket (mode 0600) that one gateway at a time connects to; a
 * newer connection replaces the older. Each connection first gets `hello` (protocol 2, credit),
 * then the scheduler's frames and events. What the gateway writes back is read with the shared
 * WireDecoder: `credit` lines feed the scheduler; a protocol error, or a frame (a gateway sends
 * none), drops the connection.
 */
import fs from 'node:fs';
import net from 'node:net';
import { describeProtocolError, encodeEvent, HELLO, WireDecoder } from '../../shared/protocol.js';
import { logger } from '../../shared/log.js';
import type { Scheduler } from './scheduler.js';

const log = logger('engine.socket');

export class SocketServer {
  private readonly server = net.createServer((socket) => this.accept(socket));
  private current: net.Socket | undefined;
  connections = 0;
  protocolErrors = 0;

  constructor(
    readonly path: string,
    private readonly scheduler: Scheduler,
    /** A natashi peer gets no `hello`: it takes no credit and expects none. */
    private readonly sayHello = true,
  ) {}

  async listen(): Promise<void> {
    await removeStaleSocket(this.path);
    // Bind under a restrictive umask, so the socket is never reachable by others, not even briefly.
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(this.path, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(umask);
    }
    fs.chmodSync(this.path, 0o600);
  }

  async close(): Promise<void> {
    this.current?.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    fs.rmSync(this.path, { force: true });
  }

  private accept(socket: net.Socket): void {
    this.connections++;
    if (this.current) {
      log.warn('a newer gateway connection replaces the current one');
      this.current.destroy();
    }
    this.current = socket;
    log.info('gateway connected');
    const drop = (why: string) => {
      log.warn('dropping gateway connection', { reason: why });
      socket.destroy();
    };
    const decoder = new WireDecoder({
      frame: () => drop('the gateway sent an audio frame'),
      event: (event) => {
        if (event.type === 'credit') this.scheduler.grant(event.session_id, event.frames);
      },
      error: (err) => {
        this.protocolErrors++;
        drop(`protocol error: ${describeProtocolError(err)}`);
      },
    });
    socket.on('data', (chunk: Buffer) => decoder.push(chunk));
    socket.on('error', (err) => log.debug('gateway socket error', { error: err.message }));
    socket.on('close', () => {
      if (this.current === socket) {
        this.current = undefined;
        log.info('gateway disconnected');
      }
      this.scheduler.detach(socket);
    });
    if (this.sayHello) socket.write(encodeEvent(HELLO));
    this.scheduler.attach(socket);
  }
}

/** Removes a socket file left by an engine that died; refuses to steal one that still answers. */
async function removeStaleSocket(path: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket()) throw new Error(`CHORUS_SOCKET ${path} exists and is not a socket`);
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new Error(`CHORUS_SOCKET ${path} is in use by a running engine`);
  fs.rmSync(path, { force: true });
}
