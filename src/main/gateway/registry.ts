/**
 * Every session the gateway knows, by the three keys that name one: its id (clients and the
 * engine's events), its frame id bytes (the demux, without a string per frame), and its egress
 * id (the number the workers' egress entries carry). Creates sessions within
 * CHORUS_MAX_SESSIONS, and forgets ended ones nobody listens to.
 */
import type { Config } from '../../shared/config.js';
import { FrameIdTable, sessionIdError } from '../../shared/protocol.js';
import { isEnded } from '../../shared/session-state.js';
import type { Redactor } from '../../shared/redact.js';
import { HttpError } from '../http-kit.js';
import { RefusedError } from './limits.js';
import { GatewaySession, type DemuxCounters } from './session.js';

/** An ended session with no listener is forgotten after this long. */
const LINGER_MS = 30_000;

/** What the sweep asks of the gateway. */
export interface SweepActions {
  stop(session: GatewaySession, reason: string): void;
  /** Gives back a long-paused track's engine play and worker, keeping its position. */
  release(session: GatewaySession): void;
}

export class SessionRegistry {
  private readonly byId = new Map<string, GatewaySession>();
  /** The demux's index: a frame's id bytes to its session, with no string per frame. */
  readonly byFrameId = new FrameIdTable<GatewaySession>();
  private readonly byEgressId = new Map<number, GatewaySession>();
  private nextEgressId = 1;

  constructor(
    private readonly config: Config,
    private readonly counters: DemuxCounters,
    private readonly redactor: Redactor,
  ) {}

  get size(): number {
    return this.byId.size;
  }

  values(): IterableIterator<GatewaySession> {
    return this.byId.values();
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  /** The session whose worker posted under `sid`. */
  withEgressId(egressId: number): GatewaySession | undefined {
    return this.byEgressId.get(egressId);
  }

  /** The session named `id` by a client or an engine event, if any. */
  find(id: string): GatewaySession | undefined {
    return this.byId.get(id);
  }

  /** The session for `id`, created (idle) when asked and allowed. */
  get(id: string, create: boolean): GatewaySession {
    const bad = sessionIdError(id);
    if (bad) throw new HttpError(400, bad);
    let session = this.byId.get(id);
    if (session) return session;
    if (!create) throw new HttpError(404, `no session ${JSON.stringify(id)}`);
    // Ended sessions are kept a while only to show how they ended: they give way to new ones.
    if (this.byId.size >= this.config.CHORUS_MAX_SESSIONS) this.forgetEnded();
    if (this.byId.size >= this.config.CHORUS_MAX_SESSIONS) {
      throw new RefusedError('sessions', 429, `session limit reached (CHORUS_MAX_SESSIONS=${this.config.CHORUS_MAX_SESSIONS})`);
    }
    session = new GatewaySession(
      id,
      this.nextEgressId++,
      this.config.CHORUS_RING_MS,
      this.config.CHORUS_SLOW_LISTENER,
      this.counters,
      this.redactor,
      this.config.CHORUS_WS_MESSAGE_RATE,
    );
    this.byId.set(id, session);
    this.byFrameId.set(id, session);
    this.byEgressId.set(session.egressId, session);
    return session;
  }

  /**
   * Housekeeping: a session paused on request past CHORUS_PAUSE_RELEASE_S is released (by
   * `release`), one otherwise paused past CHORUS_IDLE_TIMEOUT_S is stopped (by `stop`), and one
   * with nothing under way (nor looked up for its queue), no voice and no listener is forgotten
   * after LINGER_MS. A released session costs nothing: it waits for its resume however long.
   */
  sweep(now: number, act: SweepActions): void {
    const idleMs = this.config.CHORUS_IDLE_TIMEOUT_S * 1000;
    const releaseMs = this.config.CHORUS_PAUSE_RELEASE_S * 1000;
    for (const session of this.byId.values()) {
      const state = session.state;
      if (session.released) continue;
      // Paused by request: a track held for a lost voice connection (a reason) resumes by itself.
      if (state.status === 'paused' && state.reason === undefined && now - session.pausedSince > releaseMs) {
        act.release(session);
      } else if (session.pausedSince > 0 && now - session.pausedSince > idleMs) {
        act.stop(session, `idle for more than ${this.config.CHORUS_IDLE_TIMEOUT_S} s`);
      } else if (!session.active && !session.voice && session.listeners.size === 0 && !session.trackObserver?.lookingUp && now - session.lastActive > LINGER_MS) {
        this.forget(session);
      }
    }
  }

  private forgetEnded(): void {
    for (const session of this.byId.values()) {
      if (isEnded(session.state.status) && session.listeners.size === 0) this.forget(session);
    }
  }

  /** Drops the session (and lets go of its worker slot). */
  forget(session: GatewaySession): void {
    session.trackObserver?.ended();
    session.releaseSlot();
    this.byId.delete(session.id);
    this.byFrameId.delete(session.id);
    this.byEgressId.delete(session.egressId);
  }
}
