/**
 * The gateway's main thread: demultiplexes the engine's frames by session id into each
 * session's ring, grants credit as rings drain, routes paced frames from the worker threads to
 * WebSocket listeners, and carries out control (play, pause, …) against the engine and the
 * session's worker. It never does timing work for a session: pacing is the workers'.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import type { Config } from '../../shared/config.js';
import { FrameIdTable, frameKey, sessionIdError, sessionIdOfKey, type SessionEvent } from '../../shared/protocol.js';
import { FRAMES_PER_SECOND, framesIn } from '../../shared/audio.js';
import type { SessionsResponse, SessionSummary } from '../../shared/gateway-api.js';
import type { GatewayHealth } from '../../shared/health.js';
import type {
  EgressMessage,
  RtpSinkInfo,
  RtpTarget,
  SessionInit,
  VoiceEvent,
  VoiceServerState,
  WorkerSessionStats,
} from '../../shared/worker-messages.js';
import { logger } from '../../shared/log.js';
import { Redactor } from '../../shared/redact.js';
import { forEachEgressEntry } from '../../workers/egress-batch.js';
import { EngineApi } from './engine-api.js';
import { EngineLink } from './engine-link.js';
import { HttpError } from './errors.js';
import { PlayRate, RefusedError, Refusals } from './limits.js';
import type { Listener } from './listener.js';
import { GatewaySession, type DemuxCounters, type StreamFormat, type Track } from './session.js';
import { SlotEndedError, SlotPool, type Slot } from './slot-pool.js';
import type { PersistentSessions } from './persistence.js';
import type { StoredSession } from './store.js';

const log = logger('gateway');
/** Credit is granted on this cadence (and at once when a play starts). */
const CREDIT_EVERY_MS = 20;
/** Listeners are pinged and checked for lag this often. */
const LISTENER_CHECK_MS = 250;
/** Housekeeping: idle timeouts, ended sessions nobody listens to. */
const SWEEP_EVERY_MS = 5_000;
/** An ended session with no listener is forgotten after this long. */
const LINGER_MS = 30_000;
/** Interrupted tracks whose engine does not come back within this long end with an error. */
const ENGINE_LOST_GRACE_MS = 10_000;
/** After a reconnect, the engine's HTTP API may lag its socket by a moment: ask this often. */
const STATUS_TRIES = 5;
/** Status requests under way at once after a reconnect. */
const STATUS_CONCURRENCY = 4;
/** Unknown ids logged at most once each, and no more than this many. */
const UNKNOWN_IDS_LOGGED = 1000;

export interface GatewayCounters extends DemuxCounters {
  framesUnknown: number;
  framesDelivered: number;
  /** Plays ended because their `ready` did not come within CHORUS_READY_TIMEOUT_MS. */
  readyTimeouts: number;
}

export class Gateway implements PersistentSessions {
  private readonly sessions = new Map<string, GatewaySession>();
  /** The demux's index: a frame's id bytes to its session, with no string per frame. */
  private readonly byFrameId = new FrameIdTable<GatewaySession>();
  private readonly bySid = new Map<number, GatewaySession>();
  private nextSid = 1;
  private readonly link: EngineLink;
  private readonly engine: EngineApi;
  private readonly pool: SlotPool;
  private readonly unknownLogged = new Set<string>();
  private readonly timers: NodeJS.Timeout[] = [];
  private lostTimer: NodeJS.Timeout | undefined;
  /** performance.now() since when some session waits for the engine's frames (0: none does). */
  private waitingSince = 0;
  private starved = false;
  /** Shutting down: the threads it stops are not failures to report. */
  private closing = false;
  readonly counters: GatewayCounters = {
    framesRouted: 0,
    framesUnknown: 0,
    framesStale: 0,
    framesOverrun: 0,
    framesOversize: 0,
    framesDelivered: 0,
    readyTimeouts: 0,
  };
  /** Requests refused by access control or a limit, by kind (limits.ts). */
  readonly refusals = new Refusals();
  private readonly playRate: PlayRate;
  private readonly started = performance.now();
  /** What listeners may read of a source: see redact.ts. */
  readonly redactor: Redactor;

  constructor(private readonly config: Config) {
    this.playRate = new PlayRate(config.CHORUS_PLAY_RATE);
    this.redactor = new Redactor(mediaRoots(config.CHORUS_MEDIA_ROOT));
    this.engine = new EngineApi(config.CHORUS_ENGINE_URL, config.CHORUS_TOKEN);
    this.pool = new SlotPool(
      {
        sessionsPerThread: config.CHORUS_SESSIONS_PER_THREAD,
        prewarm: config.CHORUS_PREWARM_THREADS,
        maxSessions: config.CHORUS_MAX_SESSIONS,
      },
      this.onEgress,
    );
    this.link = new EngineLink(config.CHORUS_SOCKET, config.CHORUS_RECONNECT_MAX_MS, {
      frame: this.onFrame,
      event: (event) => this.onEngineEvent(event),
      connected: () => this.onEngineConnected(),
      creditsEnabled: () => this.regrantAll(),
      disconnected: (reason) => this.onEngineLost(reason),
    });
  }

  start(): void {
    this.link.start();
    this.timers.push(setInterval(() => this.grantCredits(), CREDIT_EVERY_MS));
    this.timers.push(setInterval(() => this.sweep(), SWEEP_EVERY_MS));
    this.timers.push(setInterval(() => this.checkListeners(), LISTENER_CHECK_MS));
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const t of this.timers) clearInterval(t);
    if (this.lostTimer) clearTimeout(this.lostTimer);
    for (const session of this.sessions.values()) session.clearReadyTimer();
    this.link.close();
    await Promise.allSettled(
      [...this.sessions.values()].filter((s) => s.active).map((s) => this.engine.control(s.id, 'stop')),
    );
    await this.pool.close();
  }

  get engineConnected(): boolean {
    return this.link.connected;
  }

  get threads(): number {
    return this.pool.threads;
  }

  /** Unavailable while the engine cannot be reached: plays would fail with 502. */
  health(): GatewayHealth {
    const down = this.link.downReason;
    let live = 0;
    for (const session of this.sessions.values()) if (session.active) live++;
    const reason =
      down !== undefined
        ? `not connected to the engine: ${down}`
        : this.starved
          ? `the engine has sent nothing for ${this.config.CHORUS_ENGINE_STALL_MS} ms while sessions play (has another client taken its socket?)`
          : undefined;
    return {
      status: reason === undefined ? 'ok' : 'unavailable',
      ...(reason === undefined ? {} : { reason }),
      sessions: live,
      max_sessions: this.config.CHORUS_MAX_SESSIONS,
      engine_connected: down === undefined,
      engine_starved: this.starved,
      threads: this.pool.threads,
      uptime_s: Math.round((performance.now() - this.started) / 1000),
    };
  }

  get linkCounters() {
    return this.link.counters;
  }

  allSessions(): IterableIterator<GatewaySession> {
    return this.sessions.values();
  }

  // ---- the demux: engine frames into rings ----

  private readonly onFrame = (buf: Buffer, idStart: number, payloadStart: number, payloadEnd: number): void => {
    const session = this.byFrameId.get(buf, idStart);
    if (!session) {
      this.counters.framesUnknown++;
      if (this.unknownLogged.size >= UNKNOWN_IDS_LOGGED) return;
      const key = frameKey(buf, idStart);
      if (!this.unknownLogged.has(key)) {
        this.unknownLogged.add(key);
        log.warn('dropping frames for an unknown session', { session: sessionIdOfKey(key) });
      }
      return;
    }
    session.acceptFrame(buf, payloadStart, payloadEnd, this.link.creditEnabled);
  };

  private onEngineEvent(event: SessionEvent): void {
    const session = this.sessions.get(event.session_id);
    if (!session || !session.active || session.released) return;
    switch (event.type) {
      case 'ready':
        session.onReady(event);
        return;
      case 'finished':
        if (session.isStale(event.play)) return;
        this.endOfStream(session);
        return;
      case 'error':
        if (event.play !== undefined && session.isStale(event.play)) return;
        session.fail(event.message);
        this.releaseSlot(session);
        return;
    }
  }

  // ---- credit ----

  private grantCredits(): void {
    if (!this.link.creditEnabled) return;
    const grants: { sessionId: string; frames: number }[] = [];
    for (const session of this.sessions.values()) {
      const frames = session.creditDue();
      if (frames > 0) {
        session.outstanding += frames;
        grants.push({ sessionId: session.id, frames });
      }
    }
    this.link.sendCredits(grants);
  }

  private grantNow(session: GatewaySession): void {
    if (!this.link.creditEnabled) return;
    const frames = session.creditDue();
    if (frames <= 0) return;
    session.outstanding += frames;
    this.link.sendCredits([{ sessionId: session.id, frames }]);
  }

  /** A new connection said hello: the engine's windows start at zero, so grant from scratch. */
  private regrantAll(): void {
    for (const session of this.sessions.values()) session.outstanding = 0;
    this.grantCredits();
  }

  // ---- engine connection loss ----

  private onEngineLost(reason: string): void {
    let lost = 0;
    for (const session of this.sessions.values()) {
      if (session.active && !session.released) {
        session.engineLost = true;
        lost++;
      }
    }
    log.warn('engine connection lost; tracks under way play out what they hold', { reason, tracks: lost });
    if (lost > 0 && !this.lostTimer) {
      this.lostTimer = setTimeout(() => {
        this.lostTimer = undefined;
        for (const session of this.sessions.values()) {
          if (session.engineLost && session.active) this.endLost(session, 'the engine connection was lost');
        }
      }, ENGINE_LOST_GRACE_MS);
    }
  }

  /** After a reconnect, asks the engine which interrupted tracks it still has. */
  private onEngineConnected(): void {
    if (this.lostTimer) {
      clearTimeout(this.lostTimer);
      this.lostTimer = undefined;
    }
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
              session.engineLost = false;
              if (session.active) this.endOfStream(session);
            } else if (state === undefined || state === 'stopped' || state === 'error') {
              this.endLost(session, 'the engine restarted');
            } else {
              session.engineLost = false;
            }
          },
          (err: Error) => this.endLost(session, `engine unreachable after reconnect: ${err.message}`),
        )
        .finally(next);
    };
    for (let i = 0; i < STATUS_CONCURRENCY; i++) next();
  }

  /** The engine has sent the track's last frame: the worker plays out the ring, then reports `finished`. */
  private endOfStream(session: GatewaySession): void {
    session.inputEnded = true;
    if (session.slot?.alive) void session.slot.call((api) => api.endOfStream()).catch(() => undefined);
    else session.state = { status: 'finished', track: session.track! };
  }

  /**
   * The engine lost the track's play: the track waits, paused at the frame the listeners reached.
   * A Lavalink player's track fails instead: its client decides what plays next.
   */
  private endLost(session: GatewaySession, why: string): void {
    session.engineLost = false;
    if (!session.active || session.released) return;
    if (!session.persistent) {
      session.fail(why);
      this.releaseSlot(session);
      return;
    }
    void session
      .exclusive(() => this.releaseTrack(session, `${why}: paused at ${clock(session.positionFrames)}; resume to play on from there`))
      .catch(() => undefined);
  }

  /**
   * Gives back the track's engine play, worker slot and ring (a voice connection keeps its slot),
   * keeping the frame the listeners reached; resume() starts the source again there. Run it under
   * session.exclusive().
   */
  private async releaseTrack(session: GatewaySession, reason?: string): Promise<void> {
    if (!session.active || session.released || !session.track) return;
    const slot = session.slot;
    // The worker stops taking frames first, so that the position read next is the last heard.
    const kept = slot?.alive === true && (await slot.call((api) => (session.voice ? api.stop() : api.pause())).then(() => session.voice !== undefined, () => false));
    const frame = session.positionFrames;
    if (!kept) this.releaseSlot(session);
    session.release(frame, kept, reason);
    log.info('released a paused track', { session: session.id, frame, reason });
    await this.engine.control(session.id, 'stop').catch(() => undefined);
  }

  /** A released track plays again from its frame (paused if asked); still released if that fails. */
  private async replayReleased(session: GatewaySession, keepPaused: boolean): Promise<SessionSummary> {
    const track = { ...session.track! };
    const frame = session.positionFrames;
    try {
      return await this.play(session.id, track.url, track.format, frame / FRAMES_PER_SECOND, keepPaused, track.gain ?? 1);
    } catch (err) {
      const status = session.state.status;
      if (status === 'error' || status === 'starting') {
        this.releaseSlot(session);
        session.release(frame, false, `could not start again (${(err as Error).message}); resume to try again`, track);
      }
      throw err;
    }
  }

  // ---- persistence (store.ts, persistence.ts) ----

  storedSessions(): StoredSession[] {
    const out: StoredSession[] = [];
    for (const session of this.sessions.values()) {
      const track = session.track;
      if (!session.persistent || !track || !session.active) continue;
      const stored: StoredSession['track'] = { url: track.url, format: track.format };
      if (track.gain !== undefined) stored.gain = track.gain;
      if (track.duration !== undefined) stored.duration = track.duration;
      out.push({ id: session.id, track: stored, positionFrames: session.positionFrames, paused: session.state.status === 'paused' });
    }
    return out;
  }

  restoreSession(stored: StoredSession): boolean {
    const t = stored.track;
    if (!t || !isStreamFormat(t.format) || sessionIdError(stored.id) || this.sessions.has(stored.id)) return false;
    let session: GatewaySession;
    try {
      session = this.session(stored.id, true);
    } catch {
      return false;
    }
    const track: Track = { url: t.url, format: t.format, startAt: 0 };
    if (t.gain !== undefined) track.gain = t.gain;
    if (t.duration !== undefined) track.duration = t.duration;
    session.beginTrack(track);
    session.release(stored.positionFrames, false, `the gateway restarted: paused at ${clock(stored.positionFrames)}; resume to play on from there`);
    // An engine that outlived the old gateway may still hold the play: its frames have no taker now.
    void this.engine.control(session.id, 'stop').catch(() => undefined);
    return true;
  }

  // ---- egress: paced frames from the workers to listeners ----

  private egressNow = 0;

  private readonly onEgress = (message: EgressMessage): void => {
    if (message.kind === 'frames') {
      this.egressNow = Date.now();
      forEachEgressEntry(message.batch, message.used, this.deliver);
      return;
    }
    const session = this.bySid.get(message.sid);
    if (!session) return;
    if (message.kind === 'voice') session.onVoice(message.voice);
    else session.onPlayerStatus(message.status, message.reason);
  };

  private readonly deliver = (sid: number, frame: Buffer): void => {
    const session = this.bySid.get(sid);
    if (!session) return;
    this.counters.framesDelivered++;
    session.deliver(frame, this.egressNow);
  };

  private checkListeners(): void {
    const now = Date.now();
    for (const session of this.sessions.values()) session.checkListeners(now);
    this.checkStarvation();
  }

  /**
   * Sessions play but nothing comes from a connected engine: natashi's engine, for one, sends
   * everything to the newest client of its socket, and an older one is left open and silent.
   */
  private checkStarvation(): void {
    const credit = this.link.creditEnabled;
    let waiting = false;
    if (this.link.connected) {
      for (const s of this.sessions.values()) {
        const status = s.state.status;
        if ((status === 'buffering' || status === 'playing') && s.ready && !s.inputEnded && (!credit || s.outstanding > 0)) {
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
    if (starved !== this.starved) {
      this.starved = starved;
      if (starved) {
        log.error('engine connected but sending nothing while sessions play; has another client taken its socket?', {
          silentMs: Math.round(now - lastInput),
        });
      } else {
        log.info('engine input flows again');
      }
    }
  }

  /** Sessions play, the engine is connected, and nothing has come from it for CHORUS_ENGINE_STALL_MS. */
  get engineStarved(): boolean {
    return this.starved;
  }

  // ---- sessions ----

  /** The session for `id`, created (idle) when asked and allowed. */
  session(id: string, create: boolean): GatewaySession {
    const bad = sessionIdError(id);
    if (bad) throw new HttpError(400, bad);
    let session = this.sessions.get(id);
    if (session) return session;
    if (!create) throw new HttpError(404, `no session ${JSON.stringify(id)}`);
    // Ended sessions are kept a while only to show how they ended: they give way to new ones.
    if (this.sessions.size >= this.config.CHORUS_MAX_SESSIONS) this.forgetEnded();
    if (this.sessions.size >= this.config.CHORUS_MAX_SESSIONS) {
      throw new RefusedError('sessions', 429, `session limit reached (CHORUS_MAX_SESSIONS=${this.config.CHORUS_MAX_SESSIONS})`);
    }
    session = new GatewaySession(
      id,
      this.nextSid++,
      this.config.CHORUS_RING_MS,
      this.config.CHORUS_SLOW_LISTENER,
      this.counters,
      this.redactor,
      this.config.CHORUS_WS_MESSAGE_RATE,
    );
    this.sessions.set(id, session);
    this.byFrameId.set(id, session);
    this.bySid.set(session.sid, session);
    return session;
  }

  async play(id: string, url: string, format: StreamFormat, startAt = 0, keepPaused = false, gain = 1): Promise<SessionSummary> {
    const created = !this.sessions.has(id);
    const session = this.session(id, true);
    try {
      // Every play (and seek) starts an ffmpeg: CHORUS_PLAY_RATE per session, checked on arrival.
      this.playRate.take(session, id);
      return await this.startTrack(session, url, format, startAt, keepPaused, gain);
    } catch (err) {
      // A session this play made and nobody listens to has nothing to keep: the answer said why.
      if (created && session.listeners.size === 0 && session.rtpSinks.length === 0 && this.sessions.get(id) === session) {
        this.forget(session);
      }
      throw err;
    }
  }

  private startTrack(session: GatewaySession, url: string, format: StreamFormat, startAt: number, keepPaused: boolean, gain: number): Promise<SessionSummary> {
    const id = session.id;
    return session.exclusive(async () => {
      const track: Track = gain === 1 ? { url, format, startAt } : { url, format, startAt, gain };
      const { ringChanged } = session.beginTrack(track);
      await this.prepareSlot(session, ringChanged, keepPaused);
      let answer;
      try {
        answer = await this.engine.play(id, { url, format, ...(startAt > 0 ? { start_at: startAt } : {}), ...(gain !== 1 ? { gain } : {}) });
      } catch (err) {
        const message = err instanceof HttpError ? err.message : String(err);
        session.fail(message);
        this.releaseSlot(session);
        throw err;
      }
      session.playAccepted(answer.play);
      this.awaitReady(session, track);
      this.grantNow(session);
      return session.summary();
    });
  }

  /** Ends the track in error if its `ready` has not come within CHORUS_READY_TIMEOUT_MS. */
  private awaitReady(session: GatewaySession, track: Track): void {
    const ms = this.config.CHORUS_READY_TIMEOUT_MS;
    session.clearReadyTimer();
    session.readyTimer = setTimeout(() => {
      session.readyTimer = undefined;
      if (session.track !== track || !session.active || session.ready) return;
      this.counters.readyTimeouts++;
      const why = this.link.connected ? 'its event may have been lost' : 'the engine socket is not connected';
      log.warn('no ready from the engine; ending the play', { session: session.id, waitedMs: ms, connected: this.link.connected });
      session.fail(`the engine sent no ready within ${ms / 1000} s (${why})`);
      this.releaseSlot(session);
      void this.engine.control(session.id, 'stop').catch(() => undefined);
    }, ms);
  }

  async pause(id: string): Promise<SessionSummary> {
    const session = this.session(id, false);
    return session.exclusive(async () => {
      if (!session.active) throw notUnderWay(session, 'pause');
      if (session.released) return session.summary();
      await this.control(session, 'pause');
      return session.summary();
    });
  }

  async resume(id: string): Promise<SessionSummary> {
    const session = this.session(id, false);
    if (session.released && session.active) return this.replayReleased(session, false);
    return session.exclusive(async () => {
      if (!session.active) throw notUnderWay(session, 'resume');
      await this.control(session, 'resume');
      return session.summary();
    });
  }

  async stop(id: string, reason?: string): Promise<SessionSummary> {
    const session = this.session(id, false);
    return session.exclusive(async () => {
      if (session.active) {
        const slot = session.slot;
        // With a voice connection the slot stays: the bot remains in its channel between tracks.
        const kept = session.voice !== undefined && slot?.alive === true && (await slot.call((api) => api.stop()).then(() => true, () => false));
        session.endTrack();
        if (!kept) this.releaseSlot(session);
        session.state = reason === undefined ? { status: 'stopped' } : { status: 'stopped', reason };
        await this.engine.control(id, 'stop').catch((err: Error) => log.warn('engine stop failed', { session: id, message: err.message }));
      }
      return session.summary();
    });
  }

  /** Plays the track again from `seconds`, paused if it was, with `gain` (default: the track's). */
  async seek(id: string, seconds: number, gain?: number): Promise<SessionSummary> {
    const session = this.session(id, false);
    const track = session.track;
    if (!track) throw new HttpError(409, 'session has no track to seek in');
    if (session.released && session.active && (gain ?? track.gain) === track.gain) {
      // Nothing plays: the new position is where resume will start.
      return session.exclusive(async () => {
        session.release(seconds * FRAMES_PER_SECOND, false, reasonOf(session));
        return session.summary();
      });
    }
    return this.play(id, track.url, track.format, seconds, session.state.status === 'paused', gain ?? track.gain);
  }

  async addRtpSink(id: string, target: RtpTarget, maxSinks: number): Promise<RtpSinkInfo> {
    const session = this.session(id, false);
    return session.exclusive(async () => {
      const slot = session.slot;
      if (!slot?.alive || !session.active) throw new HttpError(409, 'session is not playing: play first, then add RTP');
      if (session.rtpSinks.length >= maxSinks && !session.rtpSinks.some((t) => sameTarget(t, target))) {
        throw new HttpError(429, `RTP sink limit reached (${maxSinks} per session)`);
      }
      const info = await slot.call((api) => api.addRtpSink(target));
      // Kept with its stream, so the next track's worker slot continues SSRC, seq and timestamp.
      if (!session.rtpSinks.some((t) => sameTarget(t, target))) session.rtpSinks.push({ host: target.host, port: target.port, stream: info.stream });
      return info;
    });
  }

  async removeRtpSink(id: string, target: RtpTarget): Promise<boolean> {
    const session = this.session(id, false);
    return session.exclusive(async () => {
      const i = session.rtpSinks.findIndex((t) => sameTarget(t, target));
      if (i < 0) return false;
      session.rtpSinks.splice(i, 1);
      if (session.slot?.alive) await session.slot.call((api) => api.removeRtpSink(target)).catch(() => false);
      return true;
    });
  }

  /**
   * Connects the session to the bot's voice channel (or reconnects, when the state changed). A
   * session without a track gets a worker slot now, so the connection is up before the first play.
   */
  async setVoice(id: string, state: VoiceServerState): Promise<VoiceEvent> {
    const session = this.session(id, true);
    return session.exclusive(async () => {
      session.voice = { ...state };
      const slot = session.slot;
      if (slot?.alive) {
        session.onVoice(await slot.call((api) => api.setVoice(state)));
      } else {
        await session.slotClosing;
        session.ensureRing();
        // A new slot connects with session.voice as it attaches.
        await this.attachSlot(session);
      }
      return session.voiceEvent!;
    });
  }

  /** Leaves the voice channel's connection; false if the session had none. */
  async leaveVoice(id: string): Promise<boolean> {
    const session = this.session(id, false);
    return session.exclusive(async () => {
      if (!session.voice) return false;
      session.voice = undefined;
      session.voiceEvent = undefined;
      const slot = session.slot;
      if (slot?.alive) await slot.call((api) => api.leaveVoice()).catch(() => false);
      return true;
    });
  }

  async workerStats(id: string): Promise<WorkerSessionStats | undefined> {
    const slot = this.session(id, false).slot;
    if (!slot?.alive) return undefined;
    return slot.call((api) => api.stats()).catch(() => undefined);
  }

  /** Debug: make a session's worker fail (its session only, or its whole thread). */
  async crash(id: string, kind: 'session' | 'thread'): Promise<void> {
    const slot = this.session(id, false).slot;
    if (!slot?.alive) throw new HttpError(409, 'session has no worker to crash');
    await slot.call((api) => api.crash(kind)).catch((err: unknown) => {
      // A session or thread asked to fail may end before its reply reaches us: that is the request done.
      if (!(err instanceof SlotEndedError)) throw err;
    });
  }

  addListener(session: GatewaySession, ws: WebSocket, socket: Duplex): Listener {
    const listener = session.addListener(ws, socket);
    this.tellListeners(session);
    return listener;
  }

  removeListener(session: GatewaySession, ws: WebSocket): void {
    session.removeListener(ws);
    session.checkListeners(Date.now());
    this.tellListeners(session);
  }

  summary(): SessionsResponse {
    return {
      sessions: [...this.sessions.values()].map((s) => s.summary()),
      threads: this.pool.threads,
      sessionsPerThread: this.config.CHORUS_SESSIONS_PER_THREAD,
      engineConnected: this.link.connected,
    };
  }

  // ---- slots ----

  /** A worker slot ready for a new track: the session's own, reset, or a fresh one. */
  private async prepareSlot(session: GatewaySession, ringChanged: boolean, paused: boolean): Promise<void> {
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
    this.releaseSlot(session);
    // The closing slot reports where seq and timestamp continue: wait for it.
    await session.slotClosing;
    const slot = await this.attachSlot(session);
    for (const target of session.rtpSinks) await slot.call((api) => api.addRtpSink(target));
    session.onPlayerStatus(await slot.call((api) => api.reset(paused)));
  }

  /** A new worker slot for the session (its ring made already), with its voice connection if it has one. */
  private async attachSlot(session: GatewaySession): Promise<Slot> {
    const init: SessionInit = {
      sid: session.sid,
      sessionId: session.id,
      format: session.format,
      ring: session.ring!.buffer,
      control: session.control.buffer as SharedArrayBuffer,
      prebufferFrames: this.config.CHORUS_PREBUFFER_MS === 0 ? 1 : framesIn(this.config.CHORUS_PREBUFFER_MS),
      noListener: this.config.CHORUS_NO_LISTENER,
      listeners: session.listeners.size,
      nextSeq: session.nextSeq,
      nextTimestamp: session.nextTimestamp,
    };
    let slot: Slot;
    try {
      ({ slot } = await this.pool.attach(init));
    } catch (err) {
      throw new HttpError(503, `no worker thread for the session: ${(err as Error).message}`);
    }
    session.slot = slot;
    slot.done.then(
      (result) => {
        // Slots of one session never overlap (a new one waits for the old to close).
        session.nextSeq = result.nextSeq;
        session.nextTimestamp = result.nextTimestamp;
        if (session.slot === slot) session.slot = undefined;
      },
      (err: Error) => {
        if (session.slot !== slot || this.closing) return;
        session.slot = undefined;
        session.slotClosing = Promise.resolve();
        log.error('session worker thread died', { session: session.id, message: err.message });
        if (session.active) {
          session.fail(`session worker thread failed: ${err.message}`);
          void this.engine.control(session.id, 'stop').catch(() => undefined);
        }
        if (session.voice) session.onVoice({ status: 'disconnected', reason: `voice lost with its worker thread: ${err.message}` });
      },
    );
    // A listener that came while the slot was booting was told to no slot: under
    // CHORUS_NO_LISTENER=pause the track would stay autopaused with someone listening.
    if (session.listeners.size !== init.listeners) await slot.call((api) => api.setListeners(session.listeners.size));
    const voice = session.voice;
    if (voice) session.onVoice(await slot.call((api) => api.setVoice(voice)));
    return slot;
  }

  /** Lets go of the session's slot; session.slotClosing settles when it has ended. */
  private releaseSlot(session: GatewaySession): void {
    const slot = session.slot;
    if (!slot) return;
    session.slot = undefined;
    session.slotClosing = slot.done.then(
      () => undefined,
      () => undefined,
    );
    if (slot.alive) void slot.call((api) => api.close()).catch(() => undefined);
  }

  private async control(session: GatewaySession, action: 'pause' | 'resume'): Promise<void> {
    const slot = session.slot;
    if (!slot?.alive) throw new HttpError(409, 'session has no track under way');
    const status = await slot.call((api) => (action === 'pause' ? api.pause() : api.resume()));
    session.onPlayerStatus(status);
    // A seed engine takes no credit: pause it too, or its frames would overflow the ring.
    if (!this.link.creditEnabled) await this.engine.control(session.id, action);
  }

  private tellListeners(session: GatewaySession): void {
    const slot = session.slot;
    if (slot?.alive) void slot.call((api) => api.setListeners(session.listeners.size)).catch(() => undefined);
  }

  private sweep(): void {
    const now = Date.now();
    const idleMs = this.config.CHORUS_IDLE_TIMEOUT_S * 1000;
    const releaseMs = this.config.CHORUS_PAUSE_RELEASE_S * 1000;
    for (const session of this.sessions.values()) {
      const paused = session.state.status === 'paused';
      // A released track costs nothing: it waits for its resume however long.
      if (paused && session.released) continue;
      if (paused && reasonOf(session) === undefined && now - session.pausedSince > releaseMs) {
        // Paused by request (not held for a lost voice connection, which resumes by itself).
        void session.exclusive(() => this.releaseTrack(session)).catch(() => undefined);
      } else if (session.pausedSince > 0 && now - session.pausedSince > idleMs) {
        void this.stop(session.id, `idle for more than ${this.config.CHORUS_IDLE_TIMEOUT_S} s`).catch(() => undefined);
      } else if (!session.active && !session.voice && session.listeners.size === 0 && now - session.lastActive > LINGER_MS) {
        this.forget(session);
      }
    }
  }

  private forgetEnded(): void {
    for (const session of this.sessions.values()) {
      const s = session.state.status;
      if ((s === 'finished' || s === 'stopped' || s === 'error') && session.listeners.size === 0) this.forget(session);
    }
  }

  private forget(session: GatewaySession): void {
    this.releaseSlot(session);
    this.sessions.delete(session.id);
    this.byFrameId.delete(session.id);
    this.bySid.delete(session.sid);
  }
}

/** The 409 for a pause or resume of a session with no track under way, saying what to do. */
function notUnderWay(session: GatewaySession, action: 'pause' | 'resume'): HttpError {
  const id = JSON.stringify(session.id);
  const state = session.state;
  switch (state.status) {
    case 'error':
      return new HttpError(409, `session ${id} failed (${state.reason}): there is nothing to ${action}; play it again`);
    case 'finished':
      return new HttpError(409, `session ${id} has finished its track: there is nothing to ${action}; play another`);
    case 'stopped':
      return new HttpError(409, `session ${id} was stopped: there is nothing to ${action}; play something first`);
    default:
      return new HttpError(409, `session ${id} has no track: there is nothing to ${action}; play something first`);
  }
}

/** A frame position as m:ss.cc, for messages. */
function clock(frames: number): string {
  const seconds = frames / FRAMES_PER_SECOND;
  return `${Math.floor(seconds / 60)}:${(seconds % 60).toFixed(2).padStart(5, '0')}`;
}

function reasonOf(session: GatewaySession): string | undefined {
  const state = session.state;
  return 'reason' in state ? state.reason : undefined;
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

/** The media root as given and as the engine resolves it (its real path), when they differ. */
function mediaRoots(root: string): string[] {
  const absolute = path.resolve(root);
  try {
    return [absolute, fs.realpathSync(absolute)];
  } catch {
    return [absolute];
  }
}

function sameTarget(a: RtpTarget, b: RtpTarget): boolean {
  return a.port === b.port && a.host === b.host;
}

export function isStreamFormat(value: unknown): value is StreamFormat {
  return value === 'opus' || value === 'web';
}
