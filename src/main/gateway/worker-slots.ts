/**
 * The worker slot of each session: taken from the pool for a track (or for a voice connection
 * before any track), reset for the next track when it can be kept, let go otherwise, and carried
 * across slots: seq and timestamp, RTP sinks, the voice connection, the listener count.
 *
 * The bridge (thread per session, CHORUS_BRIDGE_THREAD): a play that finds no booted thread of
 * its own ready starts at once on a slot of a shared bridge pool, and takes its own in the
 * background, in arrival order. When that comes, the session moves to it mid-track, between two
 * frames: the bridge slot hands its player off (status, deadline, seq, timestamp, RTP streams),
 * the own slot goes on from there, and the ring's read position carries the frames. A session
 * that by then holds no bridge slot (its track ended, it was released or failed) gives the own
 * slot back. A voice connection cannot move threads: a session with a voice state never starts on
 * the bridge, and one that gets a voice state there stays there.
 */
import os from 'node:os';
import type { Config } from '../../shared/config.js';
import { framesIn } from '../../shared/audio.js';
import type { EgressMessage, SessionInit } from '../../shared/worker-messages.js';
import { logger } from '../../shared/log.js';
import type { EngineApi } from './engine-api.js';
import { HttpError } from '../http-kit.js';
import type { GatewaySession } from './session.js';
import { SlotEndedError, SlotPool, type Slot } from './slot-pool.js';

const log = logger('gateway');
/** A move refused (a splice under way) is tried again this much later… */
const MOVE_RETRY_MS = 50;
/** …this many times in all; then the session stays on the bridge. */
const MOVE_TRIES = 40;

/**
 * The bridge pool: sessions share its threads as on shared threads, so a slot starts in a few
 * ms on a running thread, and a few are kept started for the plays to come.
 */
const BRIDGE_SESSIONS_PER_THREAD = 64;
const BRIDGE_PREWARM = 4;
const BRIDGE_PREWARM_MAX = 16;

/**
 * The session pools for `config`: the sessions' own, and in thread-per-session mode with
 * CHORUS_BRIDGE_THREAD on the bridge. With a bridge, plays need not wait for their threads, so
 * these boot one core short of all at once: the bridge and the threads already playing keep a
 * core through a burst of plays.
 */
export function sessionPools(config: Config, onEgress: (message: EgressMessage) => void): { pool: SlotPool; bridge: SlotPool | undefined } {
  const bridged = config.CHORUS_SESSIONS_PER_THREAD === 1 && config.CHORUS_BRIDGE_THREAD;
  const pool = new SlotPool(
    {
      sessionsPerThread: config.CHORUS_SESSIONS_PER_THREAD,
      prewarm: config.CHORUS_PREWARM_THREADS,
      prewarmMax: config.CHORUS_PREWARM_MAX_THREADS,
      maxSessions: config.CHORUS_MAX_SESSIONS,
      ...(bridged ? { maxBooting: Math.max(1, os.availableParallelism() - 1) } : {}),
    },
    onEgress,
  );
  const bridge = bridged
    ? new SlotPool({ sessionsPerThread: BRIDGE_SESSIONS_PER_THREAD, prewarm: BRIDGE_PREWARM, prewarmMax: BRIDGE_PREWARM_MAX, maxSessions: config.CHORUS_MAX_SESSIONS }, onEgress)
    : undefined;
  return { pool, bridge };
}

/** The bridge's figures, for /metrics. */
export interface BridgeCounters {
  /** Sessions on a bridge slot now. */
  sessions: number;
  /** Sessions moved from the bridge to their own thread. */
  moves: number;
  /** Moves given up (a splice under way every time): the session stayed on the bridge. */
  givenUp: number;
}

export class WorkerSlots {
  /** Bridge slots held by sessions now. */
  private readonly onBridge = new Set<Slot>();
  private moves = 0;
  private givenUp = 0;

  constructor(
    private readonly config: Config,
    private readonly pool: SlotPool,
    private readonly engine: EngineApi,
    /** The gateway is shutting down: the threads it stops are not failures to report. */
    private readonly closing: () => boolean,
    /** Shared slots a play starts on while its own thread boots; undefined: plays wait for it. */
    private readonly bridge?: SlotPool,
  ) {}

  get bridgeCounters(): BridgeCounters {
    return { sessions: this.onBridge.size, moves: this.moves, givenUp: this.givenUp };
  }

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

  /**
   * A new worker slot for the session (its ring made already), with its voice connection if it
   * has one: its own thread's, or a bridge slot until that is ready.
   */
  async attach(session: GatewaySession): Promise<Slot> {
    const init = this.init(session);
    const own = this.pool.tryTake();
    const bridge = own || session.voice ? undefined : this.bridge;
    let slot: Slot;
    try {
      ({ slot } = bridge ? await bridge.attach(init) : await this.pool.attachOn(own ?? (await this.pool.take()), init));
    } catch (err) {
      throw new HttpError(503, `no worker thread for the session: ${(err as Error).message}`);
    }
    session.holdSlot(slot, this.died(session));
    if (bridge) {
      this.onBridge.add(slot);
      void slot.done.finally(() => this.onBridge.delete(slot)).catch(() => undefined);
      void this.moveWhenReady(session, slot);
    }
    // A listener that came while the slot was booting was told to no slot: under
    // CHORUS_NO_LISTENER=pause the track would stay autopaused with someone listening.
    if (session.listeners.size !== init.listeners) await slot.call((api) => api.setListeners(session.listeners.size));
    const voice = session.voice;
    if (voice) await session.voiceFrom(() => slot.call((api) => api.setVoice(voice)));
    return slot;
  }

  /** Tells the session's worker how many WebSocket listeners it has now. */
  tellListeners(session: GatewaySession): void {
    const slot = session.slot;
    if (slot?.alive) void slot.call((api) => api.setListeners(session.listeners.size)).catch(() => undefined);
  }

  private init(session: GatewaySession): SessionInit {
    return {
      sid: session.egressId,
      sessionId: session.id,
      format: session.format,
      ring: session.ring!.buffer,
      control: session.control.buffer as SharedArrayBuffer,
      prebufferFrames: this.config.CHORUS_PREBUFFER_MS === 0 ? 1 : framesIn(this.config.CHORUS_PREBUFFER_MS),
      noListener: this.config.CHORUS_NO_LISTENER,
      listeners: session.listeners.size,
      voiceUdpSilenceMs: this.config.CHORUS_VOICE_UDP_SILENCE_MS,
      ...session.continuation,
    };
  }

  /** What a session hears when the thread of the slot it holds dies. */
  private died(session: GatewaySession): (err: Error) => void {
    return (err) => {
      if (this.closing()) return;
      log.error('session worker thread died', { session: session.id, message: err.message });
      if (session.active) {
        session.fail(`session worker thread failed: ${err.message}`);
        void this.engine.control(session.id, 'stop').catch(() => undefined);
      }
      if (session.voice) session.onVoice({ status: 'disconnected', reason: `voice lost with its worker thread: ${err.message}` });
    };
  }

  /** Takes the session's own slot (in arrival order) and moves the session from `bridge` to it. */
  private async moveWhenReady(session: GatewaySession, bridge: Slot): Promise<void> {
    let slot: Slot;
    try {
      slot = await this.pool.take();
    } catch {
      // The gateway is closing, or no thread could start: the session plays on on the bridge.
      return;
    }
    const own = { slot, attached: false };
    for (let tries = 0; tries < MOVE_TRIES; tries++) {
      const done = await session.exclusive(() => this.move(session, bridge, own)).catch((err: Error) => {
        log.warn('session could not move to its own thread', { session: session.id, message: err.message });
        this.letGo(own);
        return true;
      });
      if (done) return;
      await new Promise((resolve) => setTimeout(resolve, MOVE_RETRY_MS));
    }
    this.givenUp++;
    log.info('session stays on the bridge thread: a splice was under way at each try to move it', { session: session.id });
    this.letGo(own);
  }

  /** An own slot the session did not move to: back to the pool, or closed once attached. */
  private letGo(own: { slot: Slot; attached: boolean }): void {
    if (own.attached) void own.slot.call((api) => api.close()).catch(() => undefined);
    else this.pool.giveBack(own.slot);
  }

  /**
   * Moves the session from `bridge` to its own slot, mid-track; true when done with that slot
   * (moved, or let go: nothing to move), false to try again (a splice under way). Run it under
   * session.exclusive().
   */
  private async move(session: GatewaySession, bridge: Slot, own: { slot: Slot; attached: boolean }): Promise<boolean> {
    if (this.closing() || session.slot !== bridge || !bridge.alive || session.voice) {
      this.letGo(own);
      return true;
    }
    const slot = own.slot;
    const t0 = performance.now();
    if (!own.attached) {
      // Attached, with its RTP sockets, while the bridge plays on: on a thread just booted this
      // is slow (its code runs for the first time); what is left between the frames is not.
      await this.pool.attachOn(slot, this.init(session));
      own.attached = true;
      for (const target of session.rtpSinks) await slot.call((api) => api.addRtpSink(target));
    }
    const t1 = performance.now();
    const handOff = await bridge.call((api) => api.handOff()).catch(() => undefined);
    if (!handOff) return false;
    try {
      await slot.call((api) => api.takeOver(handOff));
    } catch (err) {
      // The player has left the bridge and has nowhere to go: as if its thread had died.
      session.releaseSlot();
      this.died(session)(err as Error);
      return true;
    }
    const seamMs = performance.now() - t1;
    if (session.slot !== bridge) {
      // Released or failed while it moved: the own slot's player goes with the bridge's.
      this.letGo(own);
      return true;
    }
    session.moveSlot(slot, this.died(session));
    this.onBridge.delete(bridge);
    this.moves++;
    // Changes that came for the bridge slot during the move found it gone.
    await slot.call((api) => api.setListeners(session.listeners.size));
    if (session.inputEnded) await slot.call((api) => api.endOfStream());
    log.debug('session moved from the bridge to its own thread', {
      session: session.id,
      status: handOff.status,
      attachMs: Math.round((t1 - t0) * 10) / 10,
      seamMs: Math.round(seamMs * 10) / 10,
    });
    return true;
  }
}
