/**
 * The gateway's one connection to the engine's frame socket: connects, decodes with the shared
 * WireDecoder, reconnects with capped exponential back-off, and writes credit lines back only
 * once the engine said `hello` with the credit feature (a seed engine gets nothing written).
 */
import net from 'node:net';
import {
  describeProtocolError,
  encodeEvent,
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
      frame: handlers.frame,
      event: (event) => {
        if (event.type === 'hello') {
          this.credit = event.features.includes(FEATURE_CREDIT);
          this.next = event.features.includes(FEATURE_NEXT);
          log.info('engine said hello', { protocol: event.protocol, credit: this.credit, next: this.next });
          if (this.credit) handlers.creditsEnabled();
        } else if (event.type === 'credit') {
          this.protocolError({ kind: 'bad-event', fatal: false, reason: 'credit sent by the engine' });
        } else {
          handlers.event(event);
        }
      },
      error: (err) => this.protocolError(err),
    });
  }

  get connected(): boolean {
    return this.socket !== undefined && !this.socket.connecting;
  }

  /** Why the engine cannot be reached now; undefined while connected. */
  get downReason(): string | undefined {
    return this.connected ? undefined : `${this.lastError}; retrying`;
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
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.socket?.destroy();
    this.socket = undefined;
  }

  private connect(): void {
    if (this.closed) return;
    this.decoder.reset();
    this.credit = false;
    this.next = false;
    const socket = net.createConnection(this.socketPath);
    this.socket = socket;
    let opened = false;
    socket.on('connect', () => {
      opened = true;
      log.info(this.connectedOnce ? 'reconnected to engine' : 'connected to engine', { socket: this.socketPath });
      this.connectedOnce = true;
      this.handlers.connected();
    });
    socket.on('data', (chunk: Buffer) => {
      this.attempt = 0;
      this.lastInputAt = performance.now();
      this.decoder.push(chunk);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.lastError = whyUnreachable(err);
      if (this.attempt === 0 || this.attempt % 20 === 0) {
        log.warn('engine socket error', { code: err.code, message: err.message });
      }
    });
    socket.on('close', () => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.credit = false;
      this.next = false;
      if (opened) {
        this.lastError = 'the engine closed the connection';
        this.handlers.disconnected('engine connection lost');
      }
      this.scheduleRetry();
    });
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
