/**
 * Engine connection loss: tracks under way play out what their rings hold; after a reconnect the
 * engine is asked (a few at a time, with retries while its HTTP API lags its socket) which of
 * them it still has. Those it finished end as the ring drains; those it lost, and any the engine
 * does not come back for within ENGINE_LOST_GRACE_MS, are lost: the gateway pauses chorus's own
 * tracks at their frame (released) and fails a Lavalink player's.
 */
import { logger } from '../../shared/log.js';
import type { EngineApi } from './engine-api.js';
import { HttpError } from '../http-kit.js';
import type { SessionRegistry } from './registry.js';
import type { GatewaySession } from './session.js';

const log = logger('gateway');
/** Interrupted tracks whose engine does not come back within this long end with an error. */
const ENGINE_LOST_GRACE_MS = 10_000;
/** After a reconnect, the engine's HTTP API may lag its socket by a moment: ask this often. */
const STATUS_TRIES = 5;
/** Status requests under way at once after a reconnect. */
const STATUS_CONCURRENCY = 4;

/** How a track is ended, as the gateway does it (the worker slot is the gateway's). */
export interface TrackEnds {
  /** The engine has sent the track's last frame: the worker plays out the ring. */
  endOfStream(session: GatewaySession): void;
  /** The engine lost the track's play (`why` says how). */
  lost(session: GatewaySession, why: string): void;
}

export class EngineRecovery {
  private lostTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly sessions: SessionRegistry,
    private readonly engine: EngineApi,
    private readonly ends: TrackEnds,
  ) {}

  /** The engine link dropped: marks every track under way, and ends them if the engine stays away. */
  onLost(reason: string): void {
    let lost = 0;
    for (const session of this.sessions.values()) if (session.markEngineLost()) lost++;
    log.warn('engine connection lost; tracks under way play out what they hold', { reason, tracks: lost });
    if (lost > 0 && !this.lostTimer) {
      this.lostTimer = setTimeout(() => {
        this.lostTimer = undefined;
        for (const session of this.sessions.values()) this.endLost(session, 'the engine connection was lost');
      }, ENGINE_LOST_GRACE_MS);
    }
  }

  /** After a reconnect, asks the engine which interrupted tracks it still has. */
  onConnected(): void {
    this.cancel();
    // A few requests at a time: a hundred at once keep the main thread busy for ~25 ms, and
    // every session's frames wait that long (seen in the load test's garbage fault).
    const queue = [...this.sessions.values()].filter((s) => s.engineLost);
    const next = (): void => {
      const session = queue.shift();
      if (!session) return;
      if (!session.engineLost) return next();
      retry(() => this.engine.status(session.id), STATUS_TRIES)
        .then(
          (state) => {
            if (!session.engineLost) return;
            if (state === 'finished') {
              // The engine sent every frame: what the ring holds is the track's end, to play out.
              session.engineBack();
              this.ends.endOfStream(session);
            } else if (state === undefined || state === 'stopped' || state === 'error') {
              this.endLost(session, 'the engine restarted');
            } else {
              session.engineBack();
            }
          },
          (err: Error) => this.endLost(session, `engine unreachable after reconnect: ${err.message}`),
        )
        .finally(next);
    };
    for (let i = 0; i < STATUS_CONCURRENCY; i++) next();
  }

  /** The gateway is closing: no grace timer may fire after it. */
  cancel(): void {
    if (this.lostTimer) clearTimeout(this.lostTimer);
    this.lostTimer = undefined;
  }

  private endLost(session: GatewaySession, why: string): void {
    if (session.engineLost) this.ends.lost(session, why);
  }
}

/** Tries `op` up to `tries` times, 100 ms apart, while it fails with a 502 (engine unreachable). */
async function retry<T>(op: () => Promise<T>, tries: number): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await op();
    } catch (err) {
      if (i >= tries || !(err instanceof HttpError && err.status === 502)) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
