/**
 * The worker slot of each session: taken from the pool for a track (or for a voice connection
 * before any track), reset for the next track when it can be kept, let go otherwise, and carried
 * across slots: seq and timestamp, RTP sinks, the voice connection, the listener count.
 */
import type { Config } from '../../shared/config.js';
import { framesIn } from '../../shared/audio.js';
import type { SessionInit } from '../../shared/worker-messages.js';
import { logger } from '../../shared/log.js';
import type { EngineApi } from './engine-api.js';
import { HttpError } from './errors.js';
import type { GatewaySession } from './session.js';
import { SlotEndedError, type Slot, type SlotPool } from './slot-pool.js';

const log = logger('gateway');

export class WorkerSlots {
  constructor(
    private readonly config: Config,
    private readonly pool: SlotPool,
    private readonly engine: EngineApi,
    /** The gateway is shutting down: the threads it stops are not failures to report. */
    private readonly closing: () => boolean,
  ) {}

  /** A worker slot ready for a new track: the session's own, reset, or a fresh one. */
  async prepare(session: GatewaySession, ringChanged: boolean, paused: boolean): Promise<void> {
    const current = session.slot;
    if (current?.alive && !ringChanged) {
      try {
        // The answer is the worker's status: a slot already paused posts no change for it.
        session.onPlayerStatus(await current.call((api) => api.reset(paused)));
        return;
      } catch (err) {
        // It finished by itself a moment ago: take a fresh one below.
        if (!(err instanceof SlotEndedError)) throw err;
      }
    }
    session.releaseSlot();
    // The closing slot reports where seq and timestamp continue: wait for it.
    await session.slotClosed;
    const slot = await this.attach(session);
    for (const target of session.rtpSinks) await slot.call((api) => api.addRtpSink(target));
    session.onPlayerStatus(await slot.call((api) => api.reset(paused)));
  }

  /** A new worker slot for the session (its ring made already), with its voice connection if it has one. */
  async attach(session: GatewaySession): Promise<Slot> {
    const init: SessionInit = {
      sid: session.egressId,
      sessionId: session.id,
      format: session.format,
      ring: session.ring!.buffer,
      control: session.control.buffer as SharedArrayBuffer,
      prebufferFrames: this.config.CHORUS_PREBUFFER_MS === 0 ? 1 : framesIn(this.config.CHORUS_PREBUFFER_MS),
      noListener: this.config.CHORUS_NO_LISTENER,
      listeners: session.listeners.size,
      ...session.continuation,
    };
    let slot: Slot;
    try {
      ({ slot } = await this.pool.attach(init));
    } catch (err) {
      throw new HttpError(503, `no worker thread for the session: ${(err as Error).message}`);
    }
    session.holdSlot(slot, (err) => {
      if (this.closing()) return;
      log.error('session worker thread died', { session: session.id, message: err.message });
      if (session.active) {
        session.fail(`session worker thread failed: ${err.message}`);
        void this.engine.control(session.id, 'stop').catch(() => undefined);
      }
      if (session.voice) session.onVoice({ status: 'disconnected', reason: `voice lost with its worker thread: ${err.message}` });
    });
    // A listener that came while the slot was booting was told to no slot: under
    // CHORUS_NO_LISTENER=pause the track would stay autopaused with someone listening.
    if (session.listeners.size !== init.listeners) await slot.call((api) => api.setListeners(session.listeners.size));
    const voice = session.voice;
    if (voice) session.onVoice(await slot.call((api) => api.setVoice(voice)));
    return slot;
  }

  /** Tells the session's worker how many WebSocket listeners it has now. */
  tellListeners(session: GatewaySession): void {
    const slot = session.slot;
    if (slot?.alive) void slot.call((api) => api.setListeners(session.listeners.size)).catch(() => undefined);
  }
}
