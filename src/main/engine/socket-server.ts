/**
 * The engine's frame socket: a Unix socket (mode 0600) that one gateway at a time is served on.
 * An admitted connection first gets `hello` (protocol 2, credit, next, alive), then the
 * scheduler's frames and events. What the gateway writes back is read with the shared
 * WireDecoder: `credit` lines feed the scheduler; a protocol error, or a frame (a gateway sends
 * none), drops the connection.
 *
 * Which connection is served:
 * - A new connection is admitted at once when there is no current gateway (or it has just
 *   closed). Facing a current one, it is held until it speaks or ADMIT_WITHIN_MS passes, or the
 *   current one closes (a gateway that reconnected before its old connection was seen gone), so
 *   that another engine's liveness probe (connect, then close) costs the current gateway nothing.
 * - Then it takes over only from a current gateway that is not healthy (`unhealthyBecause`): it
 *   has not taken what it was sent for STALLED_WRITE_MS, or it has said nothing for SILENT_MS
 *   although it promised to speak (`alive`) or never said anything at all. Otherwise it is
 *   refused: `{"type":"refused","reason":…}`, one log line, and closed. Two live gateways on one
 *   engine thus do not take it from each other for ever, and a stray connection cannot take it
 *   from a healthy gateway; a refused gateway retries, and gets the engine once the first is gone.
 *
 * The socket file is the engine's only while it is the one it bound:
 * - At start, a file at the path is removed only when it is a stale socket (a connect fails with
 *   ECONNREFUSED); a live socket, a regular file or any other answer stops the start, and a start
 *   that fails removes nothing it did not create.
 * - Every PATH_CHECK_MS the engine checks that the path is still its socket: removed, it binds
 *   it again (connections already open are kept); taken by something else, it leaves it alone.
 */
import fs from 'node:fs';
import net from 'node:net';
import {
  ADMIT_WITHIN_MS,
  ALIVE_EVERY_MS,
  describeProtocolError,
  encodeEvent,
  HELLO,
  REFUSED_HEALTHY_GATEWAY,
  WireDecoder,
} from '../../shared/protocol.js';
import { logger } from '../../shared/log.js';
import type { FrameScheduler } from './scheduler.js';

const log = logger('engine.socket');

/** How long a silent new connection is held before the engine decides on it (current gateway kept or not). */
export const SETTLE_MS = ADMIT_WITHIN_MS;
/**
 * A current gateway whose writes have waited for 'drain' this long is not reading its socket: a
 * live gateway reads on every turn of its event loop, and no GC pause or load spike lasts seconds.
 */
export const STALLED_WRITE_MS = 2000;
/**
 * A current gateway that promised `alive` (or never said anything) and has been silent this long
 * is stopped or hung: six missed ALIVE_EVERY_MS beats, far beyond a late timer on a loaded machine.
 */
export const SILENT_MS = 6 * ALIVE_EVERY_MS;
/** A refused connection that does not close its end after being told is closed by the engine. */
const REFUSED_CLOSE_MS = 1000;
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
  /** What the current gateway has said: when last, whether it promised `alive`, whether ever. */
  private heard = { at: 0, alive: false, ever: false };
  private readonly pending = new Set<net.Socket>();
  connections = 0;
  protocolErrors = 0;
  rebinds = 0;
  /** Connections refused because the current gateway was healthy. */
  refusals = 0;
  /** Connections that took over from a current gateway that was not healthy. */
  takeovers = 0;

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
    const settle = setTimeout(() => this.decide(socket), SETTLE_MS);
    // After this turn's I/O, so a current gateway that has just hung up is seen as gone.
    setImmediate(() => {
      if (!socket.readableEnded && !this.currentOpen) this.decide(socket);
    });
    const drop = (why: string) => {
      log.warn('dropping gateway connection', { reason: why });
      socket.destroy();
    };
    const decoder = new WireDecoder({
      frame: () => drop('the gateway sent an audio frame'),
      event: (event) => {
        if (event.type === 'credit') this.scheduler.grant(event.session_id, event.frames);
        else if (event.type === 'alive') this.heard.alive = true;
      },
      error: (err) => {
        this.protocolErrors++;
        drop(`protocol error: ${describeProtocolError(err)}`);
      },
    });
    socket.on('data', (chunk: Buffer) => {
      // A connection that speaks is decided on now, before what it says can count.
      this.decide(socket);
      if (this.current !== socket) return;
      this.heard.at = performance.now();
      this.heard.ever = true;
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
        if (waiting) this.decide(waiting);
      }
    });
  }

  private get currentOpen(): boolean {
    return this.current !== undefined && !this.current.readableEnded && !this.current.destroyed;
  }

  /**
   * Why the current gateway is not healthy, or undefined when it is. Silence counts only from a
   * gateway that promised `alive` or never spoke: one that grants credit without `alive` (an
   * older gateway) rightly says nothing while every ring it has is full (paused sessions).
   */
  private unhealthyBecause(now: number): string | undefined {
    const stalled = this.scheduler.writeStalledMs(now);
    if (stalled >= STALLED_WRITE_MS) return `it has not read what it was sent for ${Math.round(stalled)} ms`;
    const silent = now - this.heard.at;
    if ((this.heard.alive || !this.heard.ever) && silent >= SILENT_MS) return `it has said nothing for ${Math.round(silent)} ms`;
    return undefined;
  }

  /** A held connection is admitted (taking over if the current gateway is gone or not healthy) or refused. */
  private decide(socket: net.Socket): void {
    if (!this.pending.delete(socket) || socket.destroyed) return;
    if (this.currentOpen) {
      const why = this.unhealthyBecause(performance.now());
      if (why === undefined) return this.refuse(socket);
      this.takeovers++;
      log.warn('a new gateway connection takes over from the current one, which is not healthy', { reason: why });
      this.current!.destroy();
    } else if (this.current) {
      this.current.destroy();
    }
    this.current = socket;
    this.heard = { at: performance.now(), alive: false, ever: false };
    log.info('gateway connected');
    if (this.sayHello) socket.write(encodeEvent(HELLO));
    this.scheduler.attach(socket);
  }

  private refuse(socket: net.Socket): void {
    this.refusals++;
    log.warn(`refused a gateway connection: ${REFUSED_HEALTHY_GATEWAY}`, { refused: this.refusals });
    // natashi's peers know no `refused`: they are closed without a word.
    if (!this.sayHello) {
      socket.destroy();
      return;
    }
    socket.end(encodeEvent({ type: 'refused', reason: REFUSED_HEALTHY_GATEWAY }));
    setTimeout(() => socket.destroy(), REFUSED_CLOSE_MS).unref();
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
