/**
 * Starvation: sessions play but nothing comes from a connected engine. natashi's engine, for
 * one, sends everything to the newest client of its socket, and an older one is left open and
 * silent; /health then says so.
 */
import type { Config } from '../../shared/config.js';
import { logger } from '../../shared/log.js';
import type { EngineLink } from './engine-link.js';
import type { SessionRegistry } from './registry.js';

const log = logger('gateway');

export class StarvationWatch {
  /** performance.now() since when some session waits for the engine's frames (0: none does). */
  private waitingSince = 0;
  private isStarved = false;

  constructor(
    private readonly sessions: SessionRegistry,
    private readonly link: EngineLink,
    private readonly config: Config,
  ) {}

  /** Sessions play, the engine is connected, and nothing has come from it for CHORUS_ENGINE_STALL_MS. */
  get starved(): boolean {
    return this.isStarved;
  }

  check(): void {
    const credit = this.link.creditEnabled;
    let waiting = false;
    if (this.link.connected) {
      for (const s of this.sessions.values()) {
        if (s.awaitsEngine(credit)) {
          waiting = true;
          break;
        }
      }
    }
    const now = performance.now();
    if (!waiting) {
      this.waitingSince = 0;
    } else if (this.waitingSince === 0) {
      this.waitingSince = now;
    }
    const lastInput = this.link.lastInputAt;
    const starved = waiting && now - Math.max(lastInput, this.waitingSince) > this.config.CHORUS_ENGINE_STALL_MS;
    if (starved !== this.isStarved) {
      this.isStarved = starved;
      if (starved) {
        log.error('engine connected but sending nothing while sessions play; has another client taken its socket?', {
          silentMs: Math.round(now - lastInput),
        });
      } else {
        log.info('engine input flows again');
      }
    }
  }
}
