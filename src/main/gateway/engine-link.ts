/**
 * The gateway's one connection to the engine's frame socket: connects, decodes with the shared
 * WireDecoder, reconnects with capped exponential back-off, and writes credit lines back only
 * once the engine said `hello` with the credit feature (a seed engine gets nothing written).
 *
 * A connection is up once the engine admits it: its `hello`, or from an engine that says none (a
 * seed engine, natashi's) its first frame or event, or SEED_SILENCE_MS of quiet. An engine that
 * keeps another, healthy gateway answers `refused` instead: this gateway stays down, says why in
 * /health (one log line when that starts, not one per retry) and retries with its back-off, so
 * it gets the engine within a retry once the other gateway is gone. With the `alive` feature it
 * writes `alive` when it has written nothing else for ALIVE_EVERY_MS: the engine then reads its
 * silence as stuck, and lets a new gateway take over.
 */
import net from 'node:net';
import {
  ADMIT_WITHIN_MS,
  ALIVE,
  ALIVE_EVERY_MS,
  describeProtocolError,
  encodeEvent,
  FEATURE_ALIVE,
  FEATURE_CREDIT,
  FEATURE_NEXT,
  WireDecoder,
  type DecoderHandlers,
  type ProtocolError,
  type SessionEvent,
} from '../../shared/protocol.js';
import { logger } from '../../shared/log.js';

const log = logger('gateway');
const FIRST_RETRY_MS = 50;
/**
 * A chorus engine answers a connection within ADMIT_WITHIN_MS; one that has said nothing after
 * four times that is an engine without admission (a seed engine with nothing to send yet).
 */
const SEED_SILENCE_MS = 4 * ADMIT_WITHIN_MS;
const ALIVE_LINE = encodeEvent(ALIVE);

export interface EngineLinkHandlers {
  frame: DecoderHandlers['frame'];
  event(event: SessionEvent): void;
  connected(): void;
  /** The engine said hello with credits: grant every session its window from scratch. */
  creditsEnabled(): void;
  disconnected(reason: string): void;
}

export interface LinkCounters {
  reconnects: number;
  protocolErrors: number;
  badEvents: number;
}

export class EngineLink {
  private socket: net.Socket | undefined;
  private decoder: WireDecoder;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private credit = false;
  private next = false;
  private connectedOnce = false;
  /** The engine admitted the connection now open (see the top of the file). */
  private admitted = false;
  private admitTimer: NodeJS.Timeout | undefined;
  /** Writes `alive` on a quiet beat, while the engine asked for it. */
  private aliveTimer: NodeJS.Timeout | undefined;
  private wroteSinceBeat = false;
  /** Why the engine refuses this gateway, from its first `refused` until it admits it or cannot be reached. */
  private refusedBecause: string | undefined;
  /** The connection now open was refused. */
  private refusedNow = false;
  /** Why the last connection attempt failed, or the last connection ended. */
  private lastError = 'not connected yet';
  readonly counters: LinkCounters = { reconnects: 0, protocolErrors: 0, badEvents: 0 };
  /** performance.now() when the engine last sent anything (frames or events). */
  lastInputAt = 0;

  constructor(
    private readonly socketPath: string,
    private readonly reconnectMaxMs: number,
    private readonly handlers: EngineLinkHandlers,
  ) {
    this.decoder = new WireDecoder({
      frame: (buf, idStart, payloadStart, payloadEnd) => {
        if (!this.admitted) this.admit();
        handlers.frame(buf, idStart, payloadStart, payloadEnd);
      },
      event: (event) => {
        if (event.type === 'hello') {
          this.credit = event.features.includes(FEATURE_CREDIT);
          this.next = event.features.includes(FEATURE_NEXT);
          const alive = event.features.includes(FEATURE_ALIVE);
          log.info('engine said hello', { protocol: event.protocol, credit: this.credit, next: this.next, alive });
          this.admit();
          if (alive) this.startAliveBeat();
          if (this.credit) handlers.creditsEnabled();
        } else if (event.type === 'refused') {
          this.refused(event.reason);
        } else if (event.type === 'credit' || event.type === 'alive') {
          this.protocolError({ kind: 'bad-event', fatal: false, reason: `${event.type} sent by the engine` });
        } else {
          if (!this.admitted) this.admit();
          handlers.event(event);
        }
      },
      error: (err) => this.protocolError(err),
    });
  }

  get connected(): boolean {
    return this.socket !== undefined && this.admitted;
  }

  /** Why the engine cannot be reached now; undefined while connected. */
  get downReason(): string | undefined {
    return this.connected ? undefined : `${this.lastError}; retrying`;
  }

  /** Why the engine refuses this gateway (another gateway holds it), while it does. */
  get refusedReason(): string | undefined {
    return this.connected ? undefined : this.refusedBecause;
  }

  /** Credit lines may be written: the engine on this connection asked for them. */
  get creditEnabled(): boolean {
    return this.credit && this.connected;
  }

  /** The engine queues a play behind the current one (POST /session/:id/next): gapless changes. */
  get nextEnabled(): boolean {
    return this.next && this.connected;
  }

  start(): void {
    this.connect();
  }

  /** Writes credit grants, several lines in one write. */
  sendCredits(grants: { sessionId: string; frames: number }[]): void {
    if (!this.creditEnabled || grants.length === 0) return;
    const lines = grants.map((g) => encodeEvent({ type: 'credit', session_id: g.sessionId, frames: g.frames }));
    this.socket!.write(lines.length === 1 ? lines[0]! : Buffer.concat(lines));
    this.wroteSinceBeat = true;
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    clearTimeout(this.admitTimer);
    clearInterval(this.aliveTimer);
    this.socket?.destroy();
    this.socket = undefined;
  }

  private connect(): void {
    if (this.closed) return;
    this.decoder.reset();
    this.credit = false;
    this.next = false;
    this.refusedNow = false;
    const socket = net.createConnection(this.socketPath);
    this.socket = socket;
    socket.on('connect', () => {
      this.admitTimer = setTimeout(() => this.admit(), SEED_SILENCE_MS);
    });
    socket.on('data', (chunk: Buffer) => {
      this.lastInputAt = performance.now();
      this.decoder.push(chunk);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.lastError = whyUnreachable(err);
      // The engine gone or its socket unusable is news to a refused gateway: said once.
      const wasRefused = this.refusedBecause !== undefined && !this.refusedNow;
      if (wasRefused) this.refusedBecause = undefined;
      if (this.attempt === 0 || this.attempt % 20 === 0 || wasRefused) {
        log.warn('engine socket error', { code: err.code, message: err.message });
      }
    });
    socket.on('close', () => {
      if (this.socket !== socket) return;
      clearTimeout(this.admitTimer);
      clearInterval(this.aliveTimer);
      this.socket = undefined;
      this.credit = false;
      this.next = false;
      if (this.admitted) {
        this.admitted = false;
        if (!this.refusedNow) this.lastError = 'the engine closed the connection';
        this.handlers.disconnected(this.refusedNow ? 'the engine refused this gateway' : 'engine connection lost');
      }
      this.scheduleRetry();
    });
  }

  /** The engine serves this connection: the link is up. */
  private admit(): void {
    if (this.admitted || !this.socket || this.refusedNow) return;
    clearTimeout(this.admitTimer);
    this.admitted = true;
    this.attempt = 0;
    this.refusedBecause = undefined;
    log.info(this.connectedOnce ? 'reconnected to engine' : 'connected to engine', { socket: this.socketPath });
    this.connectedOnce = true;
    this.handlers.connected();
  }

  /** The engine keeps another gateway: this one stays down and retries with its back-off. */
  private refused(reason: string): void {
    if (this.refusedBecause !== reason) {
      log.warn('the engine refused this gateway; retrying until it is free', { reason, socket: this.socketPath });
    }
    this.refusedBecause = reason;
    this.refusedNow = true;
    this.lastError = `the engine refused this gateway: ${reason}`;
    this.socket?.destroy();
  }

  /**
   * Says `alive` at once, then on every beat on which nothing else was written. The first one is
   * the promise the engine goes by: a gateway that writes credit on every beat would otherwise
   * never send one, and the engine could not tell its silence (stopped, hung) from an older
   * gateway's with full rings.
   */
  private startAliveBeat(): void {
    clearInterval(this.aliveTimer);
    this.wroteSinceBeat = false;
    const socket = this.socket;
    socket?.write(ALIVE_LINE);
    this.aliveTimer = setInterval(() => {
      if (!this.wroteSinceBeat && socket && socket === this.socket) socket.write(ALIVE_LINE);
      this.wroteSinceBeat = false;
    }, ALIVE_EVERY_MS);
    this.aliveTimer.unref();
  }

  private scheduleRetry(): void {
    if (this.closed) return;
    const base = Math.min(this.reconnectMaxMs, FIRST_RETRY_MS * 2 ** Math.min(this.attempt, 16));
    const delay = Math.round(base * (0.8 + 0.4 * Math.random()));
    this.attempt++;
    this.counters.reconnects++;
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  private protocolError(err: ProtocolError): void {
    if (err.fatal) {
      this.counters.protocolErrors++;
      log.error('engine protocol error; dropping the connection', { reason: describeProtocolError(err) });
      this.socket?.destroy();
    } else {
      this.counters.badEvents++;
      if (this.counters.badEvents <= 10 || this.counters.badEvents % 1000 === 0) {
        log.warn('ignored an engine event', { reason: describeProtocolError(err), total: this.counters.badEvents });
      }
    }
  }
}

/** A connection error in words, without the socket's path (GET /health, which tells it, is open to all). */
function whyUnreachable(err: NodeJS.ErrnoException): string {
  if (err.code === 'ENOENT') return 'the engine socket does not exist (is the engine running?)';
  if (err.code === 'ECONNREFUSED') return 'nothing accepts connections on the engine socket';
  if (err.code === 'EACCES') return 'no permission to open the engine socket';
  return `engine socket error ${err.code ?? err.message}`;
}
