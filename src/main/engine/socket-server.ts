/**
 * The engine's frame socket: a Unix socket (mode 0600) that one gateway at a time connects to; a
 * newer connection replaces the older. Each connection first gets `hello` (protocol 2, credit),
 * then the scheduler's frames and events. What the gateway writes back is read with the shared
 * WireDecoder: `credit` lines feed the scheduler; a protocol error, or a frame (a gateway sends
 * none), drops the connection.
 *
 * The socket file is the engine's only while it is the one it bound:
 * - At start, a file at the path is removed only when it is a stale socket (a connect fails with
 *   ECONNREFUSED); a live socket, a regular file or any other answer stops the start, and a start
 *   that fails removes nothing it did not create.
 * - A new connection takes over at once when there is no current gateway (or it has just closed);
 *   from a live current gateway only once it speaks (a credit line) or has stayed open SETTLE_MS,
 *   or when the current one closes: another engine's liveness probe (connect, then close) must
 *   not cost the running gateway its connection, nor take frames meant for it.
 * - Every PATH_CHECK_MS the engine checks that the path is still its socket: removed, it binds
 *   it again (connections already open are kept); taken by something else, it leaves it alone.
 */
import fs from 'node:fs';
import net from 'node:net';
import { describeProtocolError, encodeEvent, HELLO, WireDecoder } from '../../shared/protocol.js';
import { logger } from '../../shared/log.js';
import type { FrameScheduler } from './scheduler.js';

const log = logger('engine.socket');

/** How long a silent new connection waits before it replaces the current gateway. */
export const SETTLE_MS = 250;
/** How often the engine checks that its socket file is still there. */
export const PATH_CHECK_MS = 1000;

export class SocketServer {
  private server: net.Server | undefined;
  /** The socket file this engine bound (device and inode), the only one it may remove. */
  private bound: { dev: number; ino: number } | undefined;
  private pathCheck: NodeJS.Timeout | undefined;
  private rebinding = false;
  private pathTakenLogged = false;
  private current: net.Socket | undefined;
  private readonly pending = new Set<net.Socket>();
  connections = 0;
  protocolErrors = 0;
  rebinds = 0;

  constructor(
    readonly path: string,
    private readonly scheduler: FrameScheduler,
    /** A natashi peer gets no `hello`: it takes no credit and expects none. */
    private readonly sayHello = true,
  ) {}

  async listen(): Promise<void> {
    await removeStaleSocket(this.path);
    await this.bind();
    this.pathCheck = setInterval(() => void this.checkPath(), PATH_CHECK_MS);
    this.pathCheck.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.pathCheck);
    this.current?.destroy();
    for (const socket of this.pending) socket.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    if (this.isOurs()) fs.rmSync(this.path, { force: true });
    this.bound = undefined;
  }

  private async bind(): Promise<void> {
    const server = net.createServer((socket) => this.accept(socket));
    // Bind under a restrictive umask, so the socket is never reachable by others, not even briefly.
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.path, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(umask);
    }
    const stat = fs.lstatSync(this.path);
    this.bound = { dev: stat.dev, ino: stat.ino };
    this.server = server;
    fs.chmodSync(this.path, 0o600);
  }

  private isOurs(): boolean {
    if (!this.bound) return false;
    try {
      const stat = fs.lstatSync(this.path);
      return stat.dev === this.bound.dev && stat.ino === this.bound.ino;
    } catch {
      return false;
    }
  }

  private async checkPath(): Promise<void> {
    if (this.rebinding || !this.server || this.isOurs()) return;
    if (fs.existsSync(this.path)) {
      if (!this.pathTakenLogged) log.error(`CHORUS_SOCKET ${this.path} was replaced by another file; leaving it alone (no new gateway can connect)`);
      this.pathTakenLogged = true;
      return;
    }
    this.rebinding = true;
    log.warn(`CHORUS_SOCKET ${this.path} was removed; binding it again`);
    const old = this.server;
    // Stops listening on the unlinked file; the connections it accepted stay open.
    old.close();
    try {
      await this.bind();
      this.rebinds++;
      this.pathTakenLogged = false;
    } catch (err) {
      this.server = old;
      log.error('cannot bind the socket again; trying again shortly', { error: (err as Error).message });
    } finally {
      this.rebinding = false;
    }
  }

  private accept(socket: net.Socket): void {
    this.connections++;
    this.pending.add(socket);
    const settle = setTimeout(() => this.promote(socket), SETTLE_MS);
    // After this turn's I/O, so a current gateway that has just hung up is seen as gone.
    setImmediate(() => {
      if (!socket.readableEnded && (!this.current || this.current.readableEnded)) this.promote(socket);
    });
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
    socket.on('data', (chunk: Buffer) => {
      // A connection that speaks is a gateway: it takes over now, before its credit counts.
      this.promote(socket);
      decoder.push(chunk);
    });
    socket.on('error', (err) => log.debug('gateway socket error', { error: err.message }));
    socket.on('close', () => {
      clearTimeout(settle);
      this.pending.delete(socket);
      this.scheduler.detach(socket);
      if (this.current === socket) {
        this.current = undefined;
        log.info('gateway disconnected');
        // A connection waiting for it to go (a gateway that reconnected early) takes over.
        const waiting = [...this.pending].at(-1);
        if (waiting) this.promote(waiting);
      }
    });
    if (this.sayHello) socket.write(encodeEvent(HELLO));
  }

  /** A new connection becomes the gateway: the older one, if any, is dropped. */
  private promote(socket: net.Socket): void {
    if (!this.pending.delete(socket) || socket.destroyed) return;
    if (this.current) {
      log.warn('a newer gateway connection replaces the current one');
      this.current.destroy();
    }
    this.current = socket;
    log.info('gateway connected');
    this.scheduler.attach(socket);
  }
}

/**
 * Clears the way for binding `path`: nothing there, or a stale socket (removed). Anything else
 * stops the start: a socket that accepts a connection (a running engine), one whose connect
 * fails otherwise than ECONNREFUSED, or a file that is not a socket.
 */
async function removeStaleSocket(path: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(path);
  } catch {
    return;
  }
  if (!stat.isSocket()) throw new Error(`CHORUS_SOCKET ${path} exists and is not a socket; not touching it`);
  const refusedWith = await new Promise<string | undefined>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(undefined);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
  if (refusedWith === undefined) throw new Error(`CHORUS_SOCKET ${path} is in use by a running engine`);
  if (refusedWith !== 'ECONNREFUSED') throw new Error(`CHORUS_SOCKET ${path} exists and cannot be checked (${refusedWith}); not touching it`);
  log.info(`removing stale socket ${path} (connect refused: no engine listens on it)`);
  fs.rmSync(path, { force: true });
}
