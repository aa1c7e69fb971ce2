/**
 * The gateway's main thread, composed of one module a job:
 *
 *   registry.ts         every session by id, frame id and sid; limits; the sweep
 *   demux.ts            engine frames into each session's track and ring
 *   credit.ts           credit lines to the engine as rings drain
 *   engine-recovery.ts  tracks across a lost engine connection
 *   starvation.ts       a connected engine that sends nothing
 *   egress.ts           the workers' paced frames sent to WebSocket listeners; their state changes
 *   worker-slots.ts     each session's worker slot across tracks
 *   persistence.ts      sessions across restarts (store.ts: the SQLite file)
 *   session.ts          one session's state machine (track-run.ts: one play of a track)
 *
 * Gateway itself carries out control (play, pause, …) against the engine and the session's
 * worker. It never does timing work for a session: pacing is the workers'.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import type { Config } from '../../shared/config.js';
import { sessionIdError, type SessionEvent } from '../../shared/protocol.js';
import { FRAME_MS, FRAMES_PER_SECOND } from '../../shared/audio.js';
import { parseFilters, type AudioFilters, type Sound } from '../../shared/audio-filters.js';
import type { SessionsResponse, SessionSummary } from '../../shared/gateway-api.js';
import type { GatewayHealth } from '../../shared/health.js';
import type { RtpSinkInfo, RtpTarget, VoiceEvent, VoiceServerState, WorkerSessionStats } from '../../shared/worker-messages.js';
import { logger } from '../../shared/log.js';
import { Redactor } from '../../shared/redact.js';
import { gatewayCounters, type GatewayCounters } from './counters.js';
import { Credit, CREDIT_EVERY_MS } from './credit.js';
import { Demux } from './demux.js';
import { Egress } from './egress.js';
import { EngineApi, type EnginePlayBody } from './engine-api.js';
import { EngineLink } from './engine-link.js';
import { EngineRecovery } from './engine-recovery.js';
import { HttpError } from '../http-kit.js';
import { PlayRate, Refusals } from './limits.js';
import type { Listener } from './listener.js';
import { SessionRegistry } from './registry.js';
import type { Follower, GatewaySession, StreamFormat, Track, TrackObserver } from './session.js';
import { isStreamFormat } from './track-run.js';
import type { PersistentSessions } from './persistence.js';
import type { StoredSession, StoredTrack } from './store.js';
import { SlotEndedError, type SlotPool } from './slot-pool.js';
import { StarvationWatch } from './starvation.js';
import { sessionPools, WorkerSlots, type BridgeCounters } from './worker-slots.js';

export type { GatewayCounters } from './counters.js';

const log = logger('gateway');
/** Listeners are pinged and checked for lag this often. */
const LISTENER_CHECK_MS = 250;
/** Housekeeping: idle timeouts, ended sessions nobody listens to. */
const SWEEP_EVERY_MS = 5_000;
/**
 * Frames a sound change is made ahead of the frame the worker has reached (a splice): the new
 * play must have its first frames in the ring by then, so this is long enough for the engine to
 * start ffmpeg and encode (30–60 ms on a quiet machine, the old gap), and short enough that the
 * change is heard within 200 ms of the request (8 × 20 ms, less the time the request takes).
 */
const SPLICE_LEAD_FRAMES = 8;
/** A splice needs this much of the track after its cut; with less, the change is played as a seek. */
const SPLICE_MIN_REST_FRAMES = 2 * SPLICE_LEAD_FRAMES;
/**
 * A change that comes while a splice is under way (a volume slider's next step) waits this long
 * at most for the worker to pass it, so that it splices too instead of flushing the ring.
 */
const SPLICE_WAIT_MS = 1000;

export class Gateway implements PersistentSessions {
  readonly counters: GatewayCounters = gatewayCounters();
  /** Requests refused by access control or a limit, by kind (limits.ts). */
  readonly refusals = new Refusals();
  /** What listeners may read of a source: see redact.ts. */
  readonly redactor: Redactor;
  private readonly sessions: SessionRegistry;
  private readonly link: EngineLink;
  private readonly engine: EngineApi;
  private readonly pool: SlotPool;
  /** Shared slots plays start on while their own threads boot (thread per session only). */
  private readonly bridge: SlotPool | undefined;
  private readonly slots: WorkerSlots;
  private readonly credit: Credit;
  private readonly recovery: EngineRecovery;
  private readonly starvation: StarvationWatch;
  private readonly playRate: PlayRate;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly started = performance.now();
  /** Shutting down: the threads it stops are not failures to report. */
  private closing = false;

  constructor(private readonly config: Config) {
    this.playRate = new PlayRate(config.CHORUS_PLAY_RATE);
    this.redactor = new Redactor(mediaRoots(config.CHORUS_MEDIA_ROOT));
    this.sessions = new SessionRegistry(config, this.counters, this.redactor);
    this.engine = new EngineApi(config.CHORUS_ENGINE_URL, config.CHORUS_TOKEN);
    const egress = new Egress(this.sessions, this.counters);
    ({ pool: this.pool, bridge: this.bridge } = sessionPools(config, egress.onMessage));
    this.slots = new WorkerSlots(config, this.pool, this.engine, () => this.closing, this.bridge);
    this.recovery = new EngineRecovery(this.sessions, this.engine, {
      endOfStream: (session) => this.endOfStream(session),
      lost: (session, why) => this.endLost(session, why),
    });
    const demux = new Demux(this.sessions, this.counters, () => this.link.creditEnabled);
    this.link = new EngineLink(config.CHORUS_SOCKET, config.CHORUS_RECONNECT_MAX_MS, {
      frame: demux.onFrame,
      event: (event) => this.onEngineEvent(event),
      connected: () => this.recovery.onConnected(),
      creditsEnabled: () => this.credit.regrantAll(),
      disconnected: (reason) => this.recovery.onLost(reason),
    });
    this.credit = new Credit(this.sessions, this.link);
    this.starvation = new StarvationWatch(this.sessions, this.link, config);
  }

  start(): void {
    this.link.start();
    this.timers.push(setInterval(() => this.credit.grantAll(), CREDIT_EVERY_MS));
    this.timers.push(setInterval(() => this.sweep(), SWEEP_EVERY_MS));
    this.timers.push(setInterval(() => this.checkListeners(), LISTENER_CHECK_MS));
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const t of this.timers) clearInterval(t);
    this.recovery.cancel();
    for (const session of this.sessions.values()) session.stopTimers();
    this.link.close();
    await Promise.allSettled(
      [...this.sessions.values()].filter((s) => s.active).map((s) => this.engine.control(s.id, 'stop')),
    );
    await Promise.all([this.pool.close(), this.bridge?.close()]);
  }

  get engineConnected(): boolean {
    return this.link.connected;
  }

  /** Sessions play, the engine is connected, and nothing has come from it for CHORUS_ENGINE_STALL_MS. */
  get engineStarved(): boolean {
    return this.starvation.starved;
  }

  /** Session worker threads alive now (the bridge's among them). */
  get threads(): number {
    return this.pool.threads + (this.bridge?.threads ?? 0);
  }

  get bridgeCounters(): BridgeCounters {
    return this.slots.bridgeCounters;
  }

  /** Unavailable while the engine cannot be reached: plays would fail with 502. */
  health(): GatewayHealth {
    const down = this.link.downReason;
    const refused = this.link.refusedReason;
    const starved = this.starvation.starved;
    let live = 0;
    for (const session of this.sessions.values()) if (session.active) live++;
    const reason =
      down !== undefined
        ? `not connected to the engine: ${down}`
        : starved
          ? `the engine has sent nothing for ${this.config.CHORUS_ENGINE_STALL_MS} ms while sessions play (has another client taken its socket?)`
          : undefined;
    return {
      status: reason === undefined ? 'ok' : 'unavailable',
      ...(reason === undefined ? {} : { reason }),
      sessions: live,
      max_sessions: this.config.CHORUS_MAX_SESSIONS,
      engine_connected: down === undefined,
      engine_flow: this.link.creditEnabled ? 'credit' : 'paced',
      engine_starved: starved,
      ...(refused === undefined ? {} : { engine_refused: refused }),
      threads: this.threads,
      uptime_s: Math.round((performance.now() - this.started) / 1000),
    };
  }

  get linkCounters() {
    return this.link.counters;
  }

  allSessions(): IterableIterator<GatewaySession> {
    return this.sessions.values();
  }

  /** The session for `id`, created (idle) when asked and allowed. */
  session(sessionId: string, create: boolean): GatewaySession {
    return this.sessions.get(sessionId, create);
  }

  // ---- the engine's events ----

  private onEngineEvent(event: SessionEvent): void {
    const session = this.sessions.find(event.session_id);
    // A released track has no play the engine could speak of.
    if (!session?.run) return;
    switch (event.type) {
      case 'ready':
        session.onReady(event);
        return;
      case 'finished':
        if (session.isStale(event.play)) return;
        // The follower's frames come next: the worker goes on into them with no end between.
        if (session.followers.length > 0) {
          session.awaitingFollower = true;
          return;
        }
        this.endOfStream(session);
        return;
      case 'error':
        if (event.play !== undefined && session.isStale(event.play)) return;
        if (session.isFollowerPlay(event.play)) {
          this.followerFailed(session, event.message);
          return;
        }
        this.fail(session, event.message);
        return;
    }
  }

  /** The engine has sent the track's last frame: the worker plays out the ring, then reports `finished`. */
  private endOfStream(session: GatewaySession): void {
    const slot = session.slot;
    session.endInput(slot?.alive === true);
    if (slot?.alive) void slot.call((api) => api.endOfStream()).catch(() => undefined);
  }

  /** The follower failed: the current track plays out and ends, if its input has ended. */
  private followerFailed(session: GatewaySession, reason: string): void {
    session.followerFailed(reason);
    if (session.awaitingFollower && session.active) {
      session.awaitingFollower = false;
      this.endOfStream(session);
    }
  }

  /** The track ends in error; its worker slot is let go. */
  private fail(session: GatewaySession, reason: string): void {
    session.fail(reason);
    session.releaseSlot();
  }

  /**
   * The engine lost the track's play: the track waits, paused at the frame the listeners reached.
   * A Lavalink player's track fails instead: its client decides what plays next.
   */
  private endLost(session: GatewaySession, why: string): void {
    if (!session.persistent) return this.fail(session, why);
    void session
      .exclusive(() => this.releaseTrack(session, `${why}: paused at ${clock(session.positionFrames ?? 0)}; resume to play on from there`))
      .catch(() => undefined);
  }

  /**
   * Gives back the track's engine play, worker slot and ring (a voice connection keeps its slot),
   * keeping the frame the listeners reached; resume() starts the source again there. Run it under
   * session.exclusive().
   */
  private async releaseTrack(session: GatewaySession, reason?: string): Promise<void> {
    if (!session.run) return;
    const slot = session.slot;
    session.run.releasing = true;
    // The worker stops taking frames first, so that the position read next is the last heard.
    const kept = slot?.alive === true && (await slot.call((api) => (session.voice ? api.stop() : api.pause())).then(() => session.voice !== undefined, () => false));
    const frame = session.positionFrames ?? 0;
    if (!kept) session.releaseSlot();
    session.release(frame, kept, reason);
    log.info('released a paused track', { session: session.id, frame, reason });
    await this.engine.control(session.id, 'stop').catch(() => undefined);
  }

  /** A released track plays again from its frame (paused if asked); still released if that fails. */
  private async replayReleased(session: GatewaySession, keepPaused: boolean): Promise<SessionSummary> {
    const track = { ...session.track! };
    const frame = session.positionFrames ?? 0;
    try {
      return await this.play(session.id, track.url, track.format, frame / FRAMES_PER_SECOND, keepPaused, track.sound, track.item);
    } catch (err) {
      const status = session.state.status;
      if (status === 'error' || status === 'starting') {
        session.releaseSlot();
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
      const positionFrames = session.positionFrames;
      if (!session.persistent || !track || positionFrames === undefined) continue;
      const stored: StoredTrack = { url: track.url, format: track.format };
      if (track.sound?.gain !== undefined) stored.gain = track.sound.gain;
      if (track.sound?.filters !== undefined) stored.filters = track.sound.filters;
      if (track.duration !== undefined) stored.duration = track.duration;
      if (track.item !== undefined) stored.item = track.item;
      out.push({ id: session.id, track: stored, positionFrames, paused: session.state.status === 'paused' });
    }
    return out;
  }

  restoreSession(stored: StoredSession): boolean {
    const t = stored.track;
    if (!t || !isStreamFormat(t.format) || sessionIdError(stored.id) || this.sessions.has(stored.id)) return false;
    let session: GatewaySession;
    let sound: Sound | undefined;
    try {
      // Filters are checked as a play checks them: a store edited by hand gets no say in the chain.
      if (t.gain !== undefined || t.filters !== undefined) sound = { ...(t.gain !== undefined ? { gain: t.gain } : {}), ...(t.filters !== undefined ? { filters: parseFilters(t.filters) } : {}) };
      session = this.session(stored.id, true);
    } catch {
      return false;
    }
    const track: Track = { url: t.url, format: t.format, startAt: 0 };
    if (sound) track.sound = sound;
    if (t.duration !== undefined) track.duration = t.duration;
    if (Number.isSafeInteger(t.item)) track.item = t.item;
    session.release(stored.positionFrames, false, `the gateway restarted: paused at ${clock(stored.positionFrames)}; resume to play on from there`, track);
    // An engine that outlived the old gateway may still hold the play: its frames have no taker now.
    void this.engine.control(session.id, 'stop').catch(() => undefined);
    return true;
  }

  // ---- control ----

  async play(sessionId: string, url: string, format: StreamFormat, startAt = 0, keepPaused = false, sound: Sound = {}, item?: number): Promise<SessionSummary> {
    const created = !this.sessions.has(sessionId);
    const session = this.session(sessionId, true);
    try {
      // Every play (and seek) starts an ffmpeg: CHORUS_PLAY_RATE per session, checked on arrival.
      this.playRate.take(session, sessionId);
      return await this.startTrack(session, url, format, startAt, keepPaused, sound, item);
    } catch (err) {
      // A session this play made and nobody listens to has nothing to keep: the answer said why.
      if (created && session.listeners.size === 0 && session.rtpSinks.length === 0 && this.sessions.find(sessionId) === session) {
        this.sessions.forget(session);
      }
      throw err;
    }
  }

  private startTrack(session: GatewaySession, url: string, format: StreamFormat, startAt: number, keepPaused: boolean, sound: Sound, item: number | undefined): Promise<SessionSummary> {
    return session.exclusive(() => this.playTrack(session, url, format, startAt, keepPaused, sound, item));
  }

  /** A new play of a track, from an empty ring. Run it under session.exclusive(). */
  private async playTrack(session: GatewaySession, url: string, format: StreamFormat, startAt: number, keepPaused: boolean, sound: Sound, item: number | undefined): Promise<SessionSummary> {
    const engineSound = soundBody(sound);
    const track: Track = { url, format, startAt, ...(Object.keys(engineSound).length === 0 ? {} : { sound }), ...(item === undefined ? {} : { item }) };
    const { ringChanged } = session.beginTrack(track);
    await this.slots.prepare(session, ringChanged, keepPaused);
    await this.askEngine(session, { url, format, ...(startAt > 0 ? { start_at: startAt } : {}), ...engineSound });
    return session.summary();
  }

  /** Asks the engine for the session's new play; a refusal fails the track and lets its worker go. */
  private async askEngine(session: GatewaySession, body: EnginePlayBody): Promise<void> {
    let answer;
    try {
      answer = await this.engine.play(session.id, body);
    } catch (err) {
      const message = err instanceof HttpError ? err.message : String(err);
      session.fail(message);
      session.releaseSlot();
      throw err;
    }
    session.playAccepted(answer.play);
    this.awaitReady(session);
    this.credit.grantNow(session);
  }

  /**
   * Changes the sound (gain, filters) of the session's track. A playing track changes with no
   * gap (a splice, src/workers/session-player.ts): the engine plays it again from a frame
   * SPLICE_LEAD_FRAMES ahead of the worker, which goes on into the new play's frames there. A
   * paused or buffering track, one with a follower queued, one near its end, or an engine
   * without credit is played again from the frame reached, as a seek does. Either way it counts
   * as a play against CHORUS_PLAY_RATE. The session's position runs on through the change.
   */
  async changeSound(sessionId: string, sound: Sound): Promise<void> {
    const session = this.session(sessionId, false);
    if (!session.track) throw new HttpError(409, 'session has no track to change the sound of');
    this.playRate.take(session, sessionId);
    return session.exclusive(async () => {
      if (await this.splice(session, sound)) return;
      const track = session.track;
      if (!track) throw new HttpError(409, 'session has no track to change the sound of');
      const seconds = (session.positionFrames ?? 0) / FRAMES_PER_SECOND;
      await this.playTrack(session, track.url, track.format, seconds, session.state.status === 'paused', sound, track.item);
    });
  }

  /** Splices `sound` into the playing track; false when it cannot splice. Run it under session.exclusive(). */
  private async splice(session: GatewaySession, sound: Sound): Promise<boolean> {
    for (let waited = 0; session.spliceUnderWay && (session.state.status === 'playing' || session.state.status === 'buffering') && waited < SPLICE_WAIT_MS; waited += FRAME_MS) {
      await new Promise((resolve) => setTimeout(resolve, FRAME_MS));
    }
    const slot = session.slot;
    const refused = (why: string) => {
      log.debug('sound change played as a seek', { session: session.id, why });
      return false;
    };
    if (!this.link.creditEnabled) return refused('the engine takes no credit');
    if (!slot?.alive || !session.canSplice) return refused(`the track is ${session.state.status}, or has a follower or its input ended`);
    const point = await slot.call((api) => api.spliceAt(SPLICE_LEAD_FRAMES)).catch(() => undefined);
    if (!point) return refused(`the worker cannot (${session.ring?.records() ?? 0} frames in the ring)`);
    const engineSound = soundBody(sound);
    const track = session.beginSplice(Object.keys(engineSound).length === 0 ? undefined : sound, point, SPLICE_MIN_REST_FRAMES);
    if (!track) {
      await slot.call((api) => api.cancelSplice()).catch(() => undefined);
      return refused('too little of the track is left');
    }
    await this.askEngine(session, { url: track.url, format: track.format, ...(track.startAt > 0 ? { start_at: track.startAt } : {}), ...engineSound });
    return true;
  }

  /** The engine can queue a track behind the current one for a gapless change. */
  get gapless(): boolean {
    return this.link.nextEnabled;
  }

  /**
   * Queues `track` in the engine to follow, with no gap, the session's track (`at` 0) or its
   * `at`-th follower, replacing what followed it. False when it cannot (no track under way,
   * another format, an engine without the `next` feature, the follower before it unknown): the
   * caller then plays it once the track has finished.
   */
  async follow(sessionId: string, track: Track, at = 0): Promise<boolean> {
    const session = this.session(sessionId, false);
    return session.exclusive(async () => {
      if (!this.link.nextEnabled || !session.active || session.inputEnded || session.format !== track.format || !session.track) return false;
      const lead = at === 0 ? undefined : session.followers[at - 1];
      if (at > session.followers.length || (at > 0 && lead?.play === undefined)) return false;
      const follower: Follower = { track };
      session.replaceFollowers(at, follower);
      try {
        const body = { url: track.url, format: track.format, ...soundBody(track.sound ?? {}), ...(lead ? { after: lead.play } : {}) };
        const answer = await this.engine.next(sessionId, body);
        follower.play = answer.play;
      } catch (err) {
        const i = session.followers.indexOf(follower);
        if (i === 0) this.followerFailed(session, err instanceof Error ? err.message : String(err));
        else if (i > 0) session.replaceFollowers(i);
        throw err;
      }
      return true;
    });
  }

  /** Takes the session's followers back (the queue changed): the track ends by itself again. */
  async unfollow(sessionId: string): Promise<void> {
    const session = this.session(sessionId, false);
    return session.exclusive(async () => {
      if (session.followers.length === 0) return;
      await this.engine.dropNext(sessionId).catch((err: Error) => log.warn('engine next drop failed', { session: sessionId, message: err.message }));
      session.replaceFollowers(0);
      if (session.awaitingFollower && session.active) {
        session.awaitingFollower = false;
        this.endOfStream(session);
      }
    });
  }

  /** Ends the track in error if its `ready` has not come within CHORUS_READY_TIMEOUT_MS. */
  private awaitReady(session: GatewaySession): void {
    const ms = this.config.CHORUS_READY_TIMEOUT_MS;
    session.awaitReady(ms, () => {
      this.counters.readyTimeouts++;
      const why = this.link.connected ? 'its event may have been lost' : 'the engine socket is not connected';
      log.warn('no ready from the engine; ending the play', { session: session.id, waitedMs: ms, connected: this.link.connected });
      session.fail(`the engine sent no ready within ${ms / 1000} s (${why})`);
      session.releaseSlot();
      void this.engine.control(session.id, 'stop').catch(() => undefined);
    });
  }

  async pause(sessionId: string): Promise<SessionSummary> {
    const session = this.session(sessionId, false);
    return session.exclusive(async () => {
      if (!session.active) throw notUnderWay(session, 'pause');
      if (session.released) return session.summary();
      await this.control(session, 'pause');
      return session.summary();
    });
  }

  async resume(sessionId: string): Promise<SessionSummary> {
    const session = this.session(sessionId, false);
    if (session.released) return this.replayReleased(session, false);
    return session.exclusive(async () => {
      if (!session.active) throw notUnderWay(session, 'resume');
      await this.control(session, 'resume');
      return session.summary();
    });
  }

  /** `by`: the session's track observer, when it stops the session itself (it knows what it ends). */
  async stop(sessionId: string, reason?: string, by?: TrackObserver): Promise<SessionSummary> {
    const session = this.session(sessionId, false);
    // At once, not in turn: a lookup of what was to play next would otherwise hold the stop up.
    if (session.trackObserver !== by) session.trackObserver?.ended();
    return session.exclusive(async () => {
      if (session.active) {
        const slot = session.slot;
        // With a voice connection the slot stays: the bot remains in its channel between tracks.
        const kept = session.voice !== undefined && slot?.alive === true && (await slot.call((api) => api.stop()).then(() => true, () => false));
        if (!kept) session.releaseSlot();
        session.stopTrack(reason);
        await this.engine.control(sessionId, 'stop').catch((err: Error) => log.warn('engine stop failed', { session: sessionId, message: err.message }));
      }
      return session.summary();
    });
  }

  /** Plays the track again from `seconds`, paused if it was, with `sound` (default: the track's). */
  async seek(sessionId: string, seconds: number, sound?: Sound): Promise<SessionSummary> {
    const session = this.session(sessionId, false);
    const track = session.track;
    if (!track) throw new HttpError(409, 'session has no track to seek in');
    if (session.released && (sound === undefined || sameSound(sound, track.sound))) {
      // Nothing plays: the new position is where resume will start.
      return session.exclusive(async () => {
        const state = session.state;
        if (session.released) session.release(seconds * FRAMES_PER_SECOND, false, 'reason' in state ? state.reason : undefined);
        return session.summary();
      });
    }
    return this.play(sessionId, track.url, track.format, seconds, session.state.status === 'paused', sound ?? track.sound, track.item);
  }

  async addRtpSink(sessionId: string, target: RtpTarget, maxSinks: number): Promise<RtpSinkInfo> {
    const session = this.session(sessionId, false);
    return session.exclusive(async () => {
      const slot = session.slot;
      if (!slot?.alive || !session.active) throw new HttpError(409, 'session is not playing: play first, then add RTP');
      if (session.rtpSinks.length >= maxSinks && !session.hasRtpSink(target)) {
        throw new HttpError(429, `RTP sink limit reached (${maxSinks} per session)`);
      }
      const info = await slot.call((api) => api.addRtpSink(target));
      // Kept with its stream, so the next track's worker slot continues SSRC, seq and timestamp.
      session.keepRtpSink({ host: target.host, port: target.port, stream: info.stream });
      return info;
    });
  }

  async removeRtpSink(sessionId: string, target: RtpTarget): Promise<boolean> {
    const session = this.session(sessionId, false);
    return session.exclusive(async () => {
      if (!session.dropRtpSink(target)) return false;
      if (session.slot?.alive) await session.slot.call((api) => api.removeRtpSink(target)).catch(() => false);
      return true;
    });
  }

  /**
   * Connects the session to the bot's voice channel (or reconnects, when the state changed). A
   * session without a track gets a worker slot now, so the connection is up before the first play.
   */
  async setVoice(sessionId: string, state: VoiceServerState): Promise<VoiceEvent> {
    const session = this.session(sessionId, true);
    return session.exclusive(async () => {
      session.joinVoice(state);
      const slot = session.slot;
      if (slot?.alive) {
        await session.voiceFrom(() => slot.call((api) => api.setVoice(state)));
      } else {
        await session.slotClosed;
        session.ensureRing();
        // A new slot connects with session.voice as it attaches.
        await this.slots.attach(session);
      }
      return session.voiceEvent!;
    });
  }

  /** Leaves the voice channel's connection; false if the session had none. */
  async leaveVoice(sessionId: string): Promise<boolean> {
    const session = this.session(sessionId, false);
    return session.exclusive(async () => {
      if (!session.leaveVoice()) return false;
      const slot = session.slot;
      if (slot?.alive) await slot.call((api) => api.leaveVoice()).catch(() => false);
      return true;
    });
  }

  async workerStats(sessionId: string): Promise<WorkerSessionStats | undefined> {
    const slot = this.session(sessionId, false).slot;
    if (!slot?.alive) return undefined;
    return slot.call((api) => api.stats()).catch(() => undefined);
  }

  /** Debug: make a session's worker fail (its session only, or its whole thread). */
  async crash(sessionId: string, kind: 'session' | 'thread'): Promise<void> {
    const slot = this.session(sessionId, false).slot;
    if (!slot?.alive) throw new HttpError(409, 'session has no worker to crash');
    await slot.call((api) => api.crash(kind)).catch((err: unknown) => {
      // A session or thread asked to fail may end before its reply reaches us: that is the request done.
      if (!(err instanceof SlotEndedError)) throw err;
    });
  }

  addListener(session: GatewaySession, ws: WebSocket, socket: Duplex): Listener {
    const listener = session.addListener(ws, socket);
    this.slots.tellListeners(session);
    return listener;
  }

  removeListener(session: GatewaySession, ws: WebSocket): void {
    session.removeListener(ws);
    session.checkListeners(Date.now());
    this.slots.tellListeners(session);
  }

  summary(): SessionsResponse {
    return {
      sessions: [...this.sessions.values()].map((s) => s.summary()),
      threads: this.threads,
      sessionsPerThread: this.config.CHORUS_SESSIONS_PER_THREAD,
      engineConnected: this.link.connected,
    };
  }

  private async control(session: GatewaySession, action: 'pause' | 'resume'): Promise<void> {
    const slot = session.slot;
    if (!slot?.alive) throw new HttpError(409, 'session has no track under way');
    const status = await slot.call((api) => (action === 'pause' ? api.pause() : api.resume()));
    session.onPlayerStatus(status);
    // A seed engine takes no credit: pause it too, or its frames would overflow the ring.
    if (!this.link.creditEnabled) await this.engine.control(session.id, action);
  }

  private checkListeners(): void {
    const now = Date.now();
    for (const session of this.sessions.values()) session.checkListeners(now);
    this.starvation.check();
  }

  private sweep(): void {
    this.sessions.sweep(Date.now(), {
      stop: (session, reason) => void this.stop(session.id, reason).catch(() => undefined),
      release: (session) => void session.exclusive(() => this.releaseTrack(session)).catch(() => undefined),
    });
  }
}

/** The 409 for a pause or resume of a session with no track under way, saying what to do. */
function notUnderWay(session: GatewaySession, action: 'pause' | 'resume'): HttpError {
  const quoted = JSON.stringify(session.id);
  const state = session.state;
  switch (state.status) {
    case 'error':
      return new HttpError(409, `session ${quoted} failed (${state.reason}): there is nothing to ${action}; play it again`);
    case 'finished':
      return new HttpError(409, `session ${quoted} has finished its track: there is nothing to ${action}; play another`);
    case 'stopped':
      return new HttpError(409, `session ${quoted} was stopped: there is nothing to ${action}; play something first`);
    default:
      return new HttpError(409, `session ${quoted} has no track: there is nothing to ${action}; play something first`);
  }
}

/** A frame position as m:ss.cc, for messages. */
function clock(frames: number): string {
  const seconds = frames / FRAMES_PER_SECOND;
  return `${Math.floor(seconds / 60)}:${(seconds % 60).toFixed(2).padStart(5, '0')}`;
}

/** Two plays' gain and filters are the same (absent: none). */
function sameSound(a: Sound | undefined, b: Sound | undefined): boolean {
  return (a?.gain ?? 1) === (b?.gain ?? 1) && JSON.stringify(a?.filters ?? {}) === JSON.stringify(b?.filters ?? {});
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

/** The engine play fields of a sound: only what changes the audio (gain 1 and no filters: none). */
function soundBody({ gain = 1, filters }: Sound): { gain?: number; filters?: AudioFilters } {
  const filtered = filters !== undefined && Object.keys(filters).length > 0;
  return { ...(gain !== 1 ? { gain } : {}), ...(filtered ? { filters } : {}) };
}
