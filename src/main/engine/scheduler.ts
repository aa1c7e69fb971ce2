/**
 * One scheduler for every session's outbox onto the gateway connection.
 *
 * - Paced (until the peer sends its first `credit` on this connection): each session gets one
 *   frame per 20 ms on its own drift-free deadline (next = previous + 20 ms, not now + 20 ms),
 *   all served by one timer set to the earliest deadline — no timer per session or per frame.
 * - Credit (from the first `credit` line on): each session sends at most the frames it was
 *   granted, as fast as the socket takes them.
 * - Events go out as soon as the frames before them have: they need neither time nor credit.
 * - When the socket's buffer is full (write() returned false) nothing more is written until
 *   'drain'; each session keeps its own credit and deadline meanwhile, and sessions are served
 *   round-robin, one frame each per round, from a rotating start, so no session starves others.
 */
import type { Socket } from 'node:net';
import { FRAME_MS } from '../../shared/audio.js';
import type { Session } from './session.js';

/** A session that fell further behind than this (starved source, a stall) restarts its clock. */
const MAX_LATE_MS = 100;
/** Timers fire up to about a millisecond early. */
const EARLY_MS = 1;

export class FrameScheduler {
  private socket: Socket | undefined;
  private creditMode = false;
  /** performance.now() when the connection's buffer filled and writes began to wait for 'drain'; undefined while it drains. */
  private fullSince: number | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private timer: NodeJS.Timeout | undefined;
  private rotation = 0;
  framesSent = 0;
  eventsSent = 0;
  drainWaits = 0;
  /** performance.now() ms since when no gateway is connected (engine start or the last disconnect). */
  noGatewaySince: number | undefined = performance.now();

  constructor(private readonly sessions: ReadonlyMap<string, Session>) {}

  get connected(): boolean {
    return this.socket !== undefined;
  }

  /** The gateway connection frames go to, if any. */
  get connection(): Socket | undefined {
    return this.socket;
  }

  get mode(): 'paced' | 'credit' {
    return this.creditMode ? 'credit' : 'paced';
  }

  /** How long the connection has not taken what was written to it (0 while it drains). */
  writeStalledMs(now: number): number {
    return this.fullSince === undefined ? 0 : now - this.fullSince;
  }

  /** A new gateway connection: paced until it grants credit; every window starts at 0. */
  attach(socket: Socket): void {
    this.socket = socket;
    this.noGatewaySince = undefined;
    this.creditMode = false;
    this.fullSince = undefined;
    for (const s of this.sessions.values()) {
      s.credit = 0;
      s.nextDue = Number.NaN;
    }
    this.kick();
  }

  detach(socket: Socket): void {
    if (this.socket !== socket) return;
    this.socket = undefined;
    this.noGatewaySince = performance.now();
    clearTimeout(this.timer);
  }

  /** A `credit` line: adds to that session's window (unknown ids are ignored). */
  grant(sessionId: string, frames: number): void {
    this.creditMode = true;
    clearTimeout(this.timer);
    const session = this.sessions.get(sessionId);
    if (!session) return;
    session.credit = Math.min(session.credit + frames, Number.MAX_SAFE_INTEGER);
    this.kick();
  }

  /** Something may be sendable: run once, soon, however many times this is called. */
  kick(): void {
    this.immediate ??= setImmediate(() => {
      this.immediate = undefined;
      this.run();
    });
  }

  close(): void {
    clearImmediate(this.immediate);
    clearTimeout(this.timer);
    this.socket = undefined;
  }

  private run(): void {
    const socket = this.socket;
    if (!socket || this.fullSince !== undefined) return;
    const now = performance.now();
    let active: Session[] = [];
    for (const s of this.sessions.values()) if (s.sendable) active.push(s);
    if (active.length === 0) return;
    const start = this.rotation++ % active.length;
    active = active.slice(start).concat(active.slice(0, start));

    let wake = Infinity;
    let full = false;
    socket.cork();
    while (active.length > 0 && !full) {
      const again: Session[] = [];
      for (const s of active) {
        while (s.sendable && s.outbox.peekIsEvent && !full) {
          full = !socket.write(s.outbox.shift());
          this.eventsSent++;
          s.sent(false, now);
        }
        if (full) break;
        if (!s.sendable) continue;
        if (this.creditMode) {
          if (s.credit <= 0) continue;
          s.credit--;
        } else {
          if (Number.isNaN(s.nextDue) || now - s.nextDue > MAX_LATE_MS) s.nextDue = now;
          if (s.nextDue > now + EARLY_MS) {
            wake = Math.min(wake, s.nextDue);
            continue;
          }
          s.nextDue += FRAME_MS;
        }
        full = !socket.write(s.outbox.shift());
        this.framesSent++;
        s.sent(true, now);
        if (full) break;
        if (s.sendable) again.push(s);
      }
      active = again;
    }
    socket.uncork();

    if (full) {
      this.fullSince = now;
      this.drainWaits++;
      socket.once('drain', () => {
        if (socket !== this.socket) return;
        this.fullSince = undefined;
        this.kick();
      });
      return;
    }
    if (!this.creditMode && wake !== Infinity) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.run(), Math.max(0, wake - performance.now()));
    }
  }
}
