/**
 * A WebSocket listener and how far behind it is.
 *
 * "Behind" is measured as lag, not only as bytes: every listener is pinged once a second, and a
 * pong comes back only after the client has read everything queued ahead of the ping. A pong
 * overdue by more than LAG_LIMIT_MS means the listener is that far behind, however much the
 * kernel's socket buffers (megabytes on loopback) absorb meanwhile. Bytes queued in user space
 * (ws.bufferedAmount) above HIGH_WATER_BYTES also count as behind. Only the pong that answers our
 * own ping (its random payload matched) counts: a client that sends pongs of its own without reading
 * would otherwise never look behind, and hold its session for everyone.
 *
 * Whatever a client does, what the gateway keeps for it is bounded: past MAX_QUEUED_BYTES queued
 * (replies to a client that sends but never reads) it is closed with 1008, and its messages are
 * limited to CHORUS_WS_MESSAGE_RATE a second (past it: 1008). A closed listener is no longer
 * read from at all, and is cut off CLOSE_GRACE_MS later if it does not go.
 *
 * What a session does with a listener that is behind is CHORUS_SLOW_LISTENER, a typed policy
 * like @discordjs/voice's NoSubscriberBehavior:
 *   wait  the session holds (its worker stops taking frames, its ring fills, credit stops, the
 *         engine's ffmpeg blocks) until the listener has caught up: nothing is lost.
 *   drop  the listener is skipped while behind and gets live frames once caught up (a gap in
 *         seq shows it); the skips are counted. The session plays on for the others.
 */
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { TokenBucket } from './limits.js';

export type SlowListenerPolicy = 'wait' | 'drop';

export const PING_EVERY_MS = 1000;
/** A pong this overdue means the listener is behind. */
export const LAG_LIMIT_MS = 1500;
/** A listener silent this long is gone (a dead peer must not hold a session for ever). */
export const DEAD_AFTER_MS = 30_000;
/** More than this queued in user space is behind… */
export const HIGH_WATER_BYTES = 256 * 1024;
/** …and it has caught up once a pong came and less than this is queued. */
export const LOW_WATER_BYTES = 64 * 1024;
/** More than this queued for one listener closes it (1008): the bound on what a client can make us keep. */
export const MAX_QUEUED_BYTES = 1024 * 1024;
/** A listener closed by us is cut off this long after, answered or not (time for its close frame to reach it). */
export const CLOSE_GRACE_MS = 3000;
/** WebSocket close code: policy violation (RFC 6455). */
export const CLOSE_POLICY = 1008;

export class Listener {
  /** When the outstanding ping was sent (0: none outstanding), and the payload its pong must echo. */
  private pingSentAt = 0;
  private pingPayload: Buffer | undefined;
  private lastPingAt = 0;
  private lastHeardAt: number;
  private readonly messages: TokenBucket;
  /** Closed by the gateway: nothing more is read from it or sent to it. */
  closed = false;
  behind = false;

  constructor(
    readonly ws: WebSocket,
    /** The socket under it, so that a close can be flushed and ended without reading on. */
    private readonly socket: Duplex,
    now: number,
    /** CHORUS_WS_MESSAGE_RATE: messages a second, in bursts of twice as many. */
    private readonly messageRate: number,
  ) {
    this.lastHeardAt = now;
    this.messages = new TokenBucket(2 * messageRate, messageRate, performance.now());
    ws.on('pong', (data: Buffer) => {
      if (this.pingPayload === undefined || !data.equals(this.pingPayload)) return;
      this.pingPayload = undefined;
      this.pingSentAt = 0;
      this.lastHeardAt = Date.now();
    });
  }

  /** Pings when due; drops the listener when dead. Returns whether it is behind now. */
  check(now: number): boolean {
    if (now - this.lastHeardAt > DEAD_AFTER_MS) {
      this.ws.terminate();
      return false;
    }
    if (this.pingSentAt === 0 && now - this.lastPingAt >= PING_EVERY_MS && !this.closed) {
      this.pingSentAt = now;
      this.lastPingAt = now;
      // Random, so that a client cannot answer a ping it has not read.
      this.pingPayload = randomBytes(8);
      this.ws.ping(this.pingPayload);
    }
    return this.update(now);
  }

  /** Re-evaluates `behind` with hysteresis; cheap enough for every frame. */
  update(now: number): boolean {
    const queued = this.ws.bufferedAmount;
    const lagging = this.pingSentAt !== 0 && now - this.pingSentAt > LAG_LIMIT_MS;
    if (this.behind) this.behind = lagging || queued > LOW_WATER_BYTES;
    else this.behind = lagging || queued > HIGH_WATER_BYTES;
    return this.behind;
  }

  /** Sends a frame or an event, unless the listener has more queued than it may: then it is closed. */
  send(data: Buffer | string): void {
    if (this.closed) return;
    if (this.ws.bufferedAmount > MAX_QUEUED_BYTES) {
      this.close(CLOSE_POLICY, `not reading: more than ${MAX_QUEUED_BYTES} bytes queued`);
      return;
    }
    this.ws.send(data);
  }

  /** Takes one message from the client; false (and the listener closed) past CHORUS_WS_MESSAGE_RATE. */
  takeMessage(): boolean {
    if (this.closed) return false;
    if (this.messages.take(performance.now()) === 0) return true;
    this.close(CLOSE_POLICY, `more than ${this.messageRate} messages a second (CHORUS_WS_MESSAGE_RATE)`);
    return false;
  }

  /**
   * Closes with `code` and stops reading at once: the close frame goes out followed by the end of
   * our side of the stream (a client that reads sees both), and the socket is cut off
   * CLOSE_GRACE_MS later — its answer is never read, as nothing more from it is.
   */
  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.ws.close(code, reason);
    this.ws.pause();
    this.socket.end();
    setTimeout(() => this.ws.terminate(), CLOSE_GRACE_MS).unref();
  }
}
