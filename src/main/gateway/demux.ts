/**
 * The demux: each frame the engine link reads goes into its session's track (and ring), found by
 * its id bytes with no string per frame. Frames for an id nobody plays are counted and dropped.
 */
import { frameKey, sessionIdOfKey } from '../../shared/protocol.js';
import { logger } from '../../shared/log.js';
import type { SessionRegistry } from './registry.js';
import type { GatewayCounters } from './counters.js';

const log = logger('gateway');
/** Unknown ids logged at most once each, and no more than this many. */
const UNKNOWN_IDS_LOGGED = 1000;

export class Demux {
  private readonly unknownLogged = new Set<string>();

  constructor(
    private readonly sessions: SessionRegistry,
    private readonly counters: GatewayCounters,
    /** Frames come under credit (the engine said hello with it). */
    private readonly credited: () => boolean,
  ) {}

  /** The engine link's frame callback: `buf` holds the id at idStart, the payload at payloadStart..payloadEnd. */
  readonly onFrame = (buf: Buffer, idStart: number, payloadStart: number, payloadEnd: number): void => {
    const session = this.sessions.byFrameId.get(buf, idStart);
    if (!session) {
      this.counters.framesUnknown++;
      if (this.unknownLogged.size >= UNKNOWN_IDS_LOGGED) return;
      const frameId = frameKey(buf, idStart);
      if (!this.unknownLogged.has(frameId)) {
        this.unknownLogged.add(frameId);
        log.warn('dropping frames for an unknown session', { session: sessionIdOfKey(frameId) });
      }
      return;
    }
    session.acceptFrame(buf, payloadStart, payloadEnd, this.credited());
  };
}
