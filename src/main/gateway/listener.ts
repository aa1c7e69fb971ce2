/**
 * A WebSocket listener and how far behind it is.
 *
 * "Behind" is measured as lag, not only as bytes: every listener is pinged once a second, and a
 * pong comes back only after the client has read everything queued ahead of the ping. A pong
 * overdue by more than LAG_LIMIT_MS means the listener is that far behind, however much the
 * kernel's socket buffers (megabytes on loopback) absorb meanwhile. Bytes queued in user space
 * (ws.bufferedAmount) above HIGH_WATER_BYTES also count as behind: that bounds gateway memory.
 *
 * What a session does with a listener that is behind is CHORUS_SLOW_LISTENER, a typed policy
 * like @discordjs/voice's NoSubscriberBehavior:
 *   wait  the session holds (its worker stops taking frames, its ring fills, credit stops, the
 *         engine's ffmpeg blocks) until the listener has caught up: nothing is lost.
 *   drop  the listener is skipped while behind and gets live frames once caught up (a gap in
 *         seq shows it); the skips are counted. The session plays on for the others.
 */
import type { WebSocket } from 'ws';

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

export class Listener {
  /** When the outstanding ping was sent (0: none outstanding). */
  private pingSentAt = 0;
  private lastPingAt = 0;
  private lastHeardAt: number;
  behind = false;

  constructor(
    readonly ws: WebSocket,
    now: number,
  ) {
    this.lastHeardAt = now;
    ws.on('pong', () => {
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
    if (this.pingSentAt === 0 && now - this.lastPingAt >= PING_EVERY_MS) {
      this.pingSentAt = now;
      this.lastPingAt = now;
      this.ws.ping();
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
}
