/**
 * A session as the gateway's main thread holds it, as an explicit state machine in the style of
 * the engine's session and @discordjs/voice's AudioPlayer: a discriminated union whose under-way
 * variants carry the track's run (track-run.ts), one private setter through which every change
 * passes (it logs old → new and tells every listener), and transitions as named methods. Besides
 * its state it holds its ring (main produces into it), its WebSocket listeners, its RTP sinks and
 * voice state, and the worker slot that paces it.
 *
 *   idle → starting → buffering ⇄ playing ⇄ paused | autopaused → finished | stopped | error
 *
 *   starting    the play is asked of the engine; its `ready` has not come
 *   buffering   the worker waits for its prebuffer (or the ring ran dry)
 *   playing     the worker paces frames out
 *   paused      paused by a client; autopaused: nobody listens (CHORUS_NO_LISTENER=pause)
 *               released: a paused track that gave back its engine play, worker and ring (a long
 *               pause, an engine that lost it, a gateway restart); resume plays it again from its frame
 *   finished    the worker played the track's last frame
 *   stopped     by a stop or the idle timeout;  error: the engine, the worker or a timeout failed it
 */
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { Ring } from '../../shared/ring.js';
import { logger } from '../../shared/log.js';
import { FRAME_MS, FRAMES_PER_SECOND, framesIn, maxPayloadBytes } from '../../shared/audio.js';
import { playbackRate, type Sound } from '../../shared/audio-filters.js';
import type { ListenerEvent } from '../../shared/listener-protocol.js';
import { isUnderWay, type PlayerStatus, type UnderWayState } from '../../shared/session-state.js';
import type { SessionSummary } from '../../shared/gateway-api.js';
import type { ReadyEvent } from '../../shared/protocol.js';
import { CONTROL_WORDS, Control, type RtpTarget, type SlotResult, type SplicePoint, type VoiceEvent, type VoiceServerState } from '../../shared/worker-messages.js';
import { HIGH_WATER_BYTES, Listener, type SlowListenerPolicy } from './listener.js';
import type { Slot } from './slot-pool.js';
import type { Redactor } from '../../shared/redact.js';
import type { DemuxCounters } from './counters.js';
import { TrackRun, type StreamFormat, type Track } from './track-run.js';

export type { DemuxCounters } from './counters.js';
export type { StreamFormat, Track } from './track-run.js';

/** What the session's queue hears besides the listeners' events. */
export interface TrackObserver {
  /** Every event the listeners get. */
  event(event: ListenerEvent): void;
  /** The follower's first frame is in the ring: the engine plays it now (listeners hear it soon). */
  followerStarted(track: Track): void;
  /** The listeners have reached the follower's first frame: it is the session's track now. */
  trackChanged(track: Track): void;
  /** The follower could not be played; the current track ends as if it had none. */
  followerFailed(track: Track, reason: string): void;
  /** The session was stopped (whether or not it played) or forgotten: what was to play is not. */
  ended(): void;
  /** Something to play is being looked up (yt-dlp): the session is not idle, whatever its state. */
  readonly lookingUp: boolean;
}

/** A play asked of the engine to follow the current one with no gap (a `next` request). */
export interface Follower {
  track: Track;
  /** The engine's play number for it, once its answer came. */
  play?: number;
}

/** Where in the ring a follower's frames begin: the ring's write count at its `ready`. */
interface Boundary {
  at: number;
  track: Track;
  play: number | undefined;
}

const log = logger('gateway');

export type SessionState =
  | { status: 'idle' }
  | { status: UnderWayState; track: Track; run: TrackRun; reason?: string }
  | ReleasedState
  | { status: 'finished'; track: Track }
  | { status: 'stopped'; reason?: string }
  | { status: 'error'; reason: string };

/**
 * A paused track with no engine play, worker or run: it waits at `frame` (20 ms frames into the
 * track), where resume starts its source again. `reason` says why it paused, when not asked.
 */
export interface ReleasedState {
  status: 'paused';
  track: Track;
  released: true;
  frame: number;
  reason?: string;
}

/** Why a session is autopaused, for whoever played it and wonders why nothing is heard. */
const NOBODY_LISTENS = 'nobody is listening (CHORUS_NO_LISTENER=pause): it plays as soon as a listener connects to /ws?session=<id> or an RTP sink is added';

const NOMINAL_BITRATE: Record<StreamFormat, number> = { opus: 128_000, web: 256_000 };

/** The states in which the worker's paced frames reach the listeners. */
const DELIVERING: ReadonlySet<SessionState['status']> = new Set(['buffering', 'playing', 'paused', 'autopaused']);

export class GatewaySession {
  readonly control = new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * 4));
  readonly listeners = new Map<WebSocket, Listener>();
  private current: SessionState = { status: 'idle' };
  private ringNow: Ring | undefined;
  private ringFormat: StreamFormat | undefined;
  private slotNow: Slot | undefined;
  /** The slot whose end says where seq and timestamp continue: the last held, not one moved from. */
  private continuedBy: Slot | undefined;
  /** Settles once the previous slot has ended (its result carries seq and timestamp). */
  private slotClosing: Promise<void> = Promise.resolve();
  /** Where the next slot's seq and timestamp continue (the last slot's result). */
  private nextSeq = 0;
  private nextTimestamp = 0;
  private readonly sinks: RtpTarget[] = [];
  private voiceState: VoiceServerState | undefined;
  private voiceNow: VoiceEvent | undefined;
  /** onVoice() calls so far (see voiceFrom). */
  private voiceChanges = 0;
  /** Frames not sent to a listener that lagged under CHORUS_SLOW_LISTENER=drop. */
  private skipped = 0;
  private lastActiveAt = Date.now();
  private pausedAt = 0;
  /** Kept in the session store across restarts; a Lavalink player is not (its client keeps its own). */
  persistent = true;
  /** Hears every event the listeners hear, listeners or not (a Lavalink player: src/main/lavalink). */
  observer: ((event: ListenerEvent) => void) | undefined;
  /** The session's queue, when it has one. */
  trackObserver: TrackObserver | undefined;
  /** The plays asked of the engine to follow the one it plays now, in order (`next` requests). */
  followers: Follower[] = [];
  /** Followers whose frames are in the ring, not yet reached by the worker, oldest first. */
  private boundaries: Boundary[] = [];
  /** The current play's `finished` came while a follower was asked for: its frames are to come. */
  awaitingFollower = false;
  /** Events of plays up to this number are a retired follower's: stale. */
  private retiredPlay = 0;
  /** Control.Sent when the current track's first frame was (or will be) taken: its position's origin. */
  private trackStartSent = 0;
  /**
   * After a splice, the position's origin for the frames before its cut (Control.Sent below
   * `until`): they are still the old play's, at its place in the track and its filters' pace.
   */
  private beforeSplice: { frame: number; sent: number; rate: number; until: number } | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    /** The session id, as clients and the engine name it. */
    readonly id: string,
    /** Main's number for the session: the worker's egress entries carry it. */
    readonly egressId: number,
    private readonly ringMs: number,
    private readonly slowPolicy: SlowListenerPolicy,
    private readonly counters: DemuxCounters,
    /** Every reason a listener can read passes through it (credentials, server paths). */
    private readonly redactor: Redactor,
    /** CHORUS_WS_MESSAGE_RATE, for each listener. */
    private readonly messageRate: number,
  ) {}

  get state(): SessionState {
    return this.current;
  }

  /** The one place the state changes: closes a left run, keeps the idle clocks, tells listeners. */
  private set state(next: SessionState) {
    if ('reason' in next && next.reason !== undefined) next = { ...next, reason: this.redactor.redact(next.reason) };
    const old = this.current;
    this.current = next;
    const now = Date.now();
    this.lastActiveAt = now;
    if ('run' in old && old.run !== runOf(next)) old.run.close();
    if (old.status === next.status && reasonOf(old) === reasonOf(next)) return;
    log.debug('session state', { session: this.id, from: old.status, to: next.status, reason: reasonOf(next) });
    if (next.status === 'paused' || next.status === 'autopaused') {
      if (old.status !== 'paused' && old.status !== 'autopaused') this.pausedAt = now;
    } else this.pausedAt = 0;
    const event: ListenerEvent = { type: 'state', session: this.id, state: next.status };
    const reason = reasonOf(next);
    if (reason !== undefined) event.reason = reason;
    this.broadcast(event);
  }

  get track(): Track | undefined {
    return 'track' in this.current ? this.current.track : undefined;
  }

  /** The current track's run, while it is under way. */
  get run(): TrackRun | undefined {
    return runOf(this.current);
  }

  /** A track is under way: the engine plays it and the worker paces it (or it is released, paused). */
  get active(): boolean {
    return isUnderWay(this.current.status);
  }

  /** The track is paused and released: no engine play, no worker, until resumed. */
  get released(): boolean {
    return 'released' in this.current;
  }

  /**
   * The frame of the track the listeners have reached: where the play started plus the frames the
   * worker has delivered since (at the filters' pace). Exact, not a clock's estimate: a restart
   * resumes at this frame. Undefined with no track under way.
   */
  get positionFrames(): number | undefined {
    const current = this.current;
    if ('released' in current) return current.frame;
    if (!('run' in current)) return undefined;
    const { track } = current;
    const frames = this.trackFrameAt(track, Atomics.load(this.control, Control.Sent));
    return track.duration === undefined ? frames : Math.min(frames, Math.round(track.duration * FRAMES_PER_SECOND));
  }

  /**
   * The frame of `track` the worker is at when Control.Sent is `sent`: counted from the track's
   * start at its filters' pace, or, before a splice's cut, from the old play's.
   */
  private trackFrameAt(track: Track, sent: number): number {
    const before = this.beforeSplice;
    const origin = before && sent < before.until ? before : this.trackOrigin(track);
    return Math.round(origin.frame + Math.max(0, sent - origin.sent) * origin.rate);
  }

  /** Where `track` starts in frames, Control.Sent at its start, and its filters' pace. */
  private trackOrigin(track: Track): { frame: number; sent: number; rate: number } {
    return { frame: track.startAt * FRAMES_PER_SECOND, sent: this.trackStartSent, rate: playbackRate(track.sound?.filters) };
  }

  /** When the session last had a listener or a change of state, for clean-up (ms epoch). */
  get lastActive(): number {
    return this.lastActiveAt;
  }

  /** When the session entered paused or autopaused (ms epoch; 0: it is not), for the idle timeout. */
  get pausedSince(): number {
    return this.pausedAt;
  }

  /** Runs control operations of this session one at a time, in order. */
  exclusive<T>(op: () => Promise<T>): Promise<T> {
    const run = this.queue.then(op, op);
    this.queue = run.catch(() => undefined);
    return run;
  }

  // ---- tracks and the ring ----

  get ring(): Ring | undefined {
    return this.ringNow;
  }

  /** Format of the ring (opus until a track says otherwise). */
  get format(): StreamFormat {
    return this.ringFormat ?? 'opus';
  }

  /** A ring before any track, for a worker slot that holds only a voice connection so far. */
  ensureRing(): void {
    if (this.ringNow) return;
    this.ringNow = Ring.create(ringBytes(this.ringMs, 'opus'));
    this.ringFormat = 'opus';
  }

  /** starting: a new track, with an empty ring of the right size, no credit, frames refused. */
  beginTrack(track: Track): { ringChanged: boolean } {
    const ringChanged = this.ringFormat !== track.format || !this.ringNow;
    if (ringChanged) {
      this.ringNow = Ring.create(ringBytes(this.ringMs, track.format));
      this.ringFormat = track.format;
    } else {
      this.ringNow!.clear();
    }
    const run = new TrackRun(track, this.id, this.ringNow!, this.ringMs, this.counters);
    this.retireFollowers();
    // A splice's play whose `ready` has not come: it would come before this play is answered, and
    // be taken for this play's (a volume change, then at once a seek).
    const spliced = this.run;
    if (spliced?.splicing && !spliced.ready && spliced.playNumber !== undefined) this.retiredPlay = Math.max(this.retiredPlay, spliced.playNumber);
    this.trackStartSent = Atomics.load(this.control, Control.Sent);
    this.beforeSplice = undefined;
    this.state = { status: 'starting', track, run };
    return { ringChanged };
  }

  /**
   * The track can change its sound with no gap (a splice, see src/workers/session-player.ts):
   * it plays, its input goes on, its engine is there, and no follower or splice is under way.
   */
  get canSplice(): boolean {
    const current = this.current;
    if (current.status !== 'playing') return false;
    const { run } = current;
    return run.ready && !run.ended && !run.engineLost && !run.releasing && this.followers.length === 0 && this.boundaries.length === 0 && !this.awaitingFollower;
  }

  /**
   * A splice is under way: the worker has not yet taken the new play's first frame, or it waits
   * for its first frames (buffering). A change now would flush the ring.
   */
  get spliceUnderWay(): boolean {
    const run = this.run;
    if (run?.splicing && !run.ready) return true;
    const before = this.beforeSplice;
    // Sent reaches `until` with the cut's last old frame; the new play's first makes it until + 1.
    return before !== undefined && (Atomics.load(this.control, Control.Sent) <= before.until || this.current.status === 'buffering');
  }

  /**
   * A splice: the track plays on, and from the frame the worker takes when Control.Sent is
   * `point.sent` on, it is a new play's from that frame of the track, with `sound`. The new
   * play's run takes the engine's side now (the old play's frames still coming are refused);
   * its frames go into the ring, behind the old ones, once its `ready` comes. Undefined (nothing
   * changed) when the track can no longer splice, or has less than `minRestFrames` after the cut.
   */
  beginSplice(sound: Sound | undefined, point: SplicePoint, minRestFrames: number): Track | undefined {
    const current = this.current;
    if (!this.canSplice || !('run' in current)) return undefined;
    const { track } = current;
    const frame = this.trackFrameAt(track, point.sent);
    if (track.duration !== undefined && frame + minRestFrames > track.duration * FRAMES_PER_SECOND) return undefined;
    this.beforeSplice = { ...this.trackOrigin(track), until: point.sent };
    this.trackStartSent = point.sent;
    const next: Track = { ...track, startAt: frame / FRAMES_PER_SECOND };
    if (sound) next.sound = sound;
    else delete next.sound;
    const run = new TrackRun(next, this.id, this.ringNow!, this.ringMs, this.counters);
    run.spliceAfter(point.cut);
    this.state = { ...current, track: next, run };
    return next;
  }

  /**
   * released: the track gives back its engine play and worker (the caller lets them go) and waits,
   * paused, at frame `frame`; `keepRing` false drops the ring too. `reason` says why it paused,
   * when not asked; `track` puts back a track a failed play had ended.
   */
  release(frame: number, keepRing: boolean, reason?: string, track: Track | undefined = this.track): void {
    if (!track) return;
    this.ringNow?.clear();
    if (!keepRing) {
      this.ringNow = undefined;
      this.ringFormat = undefined;
    }
    const at = Math.max(0, Math.round(frame));
    track.startAt = at / FRAMES_PER_SECOND;
    this.beforeSplice = undefined;
    const released: ReleasedState = { status: 'paused', track, released: true, frame: at };
    this.state = reason === undefined ? released : { ...released, reason };
  }

  /** The engine accepted the play and numbered it (a seed engine does not): credit may flow. */
  playAccepted(play: number | undefined): void {
    // The engine forgot the id (and restarted its count): nothing older is in flight any more.
    if (play !== undefined && play <= this.retiredPlay) this.retiredPlay = 0;
    this.run?.answer(play);
  }

  /** Ends the track in error if its `ready` does not come within `ms`. */
  awaitReady(ms: number, expired: () => void): void {
    const run = this.run;
    run?.awaitReady(ms, () => {
      if (this.run === run) expired();
    });
  }

  /** The gateway is closing: no timer of the session may fire after it. */
  stopTimers(): void {
    this.run?.close();
  }

  /** The current track's `ready` has come. */
  get ready(): boolean {
    return this.run?.ready ?? false;
  }

  /** An engine event is for an earlier play of this id than the current one. */
  isStale(play: number | undefined): boolean {
    if (play !== undefined && play <= this.retiredPlay) return true;
    return this.run?.isStale(play) ?? true;
  }

  /** The engine has sent the current play's last frame. */
  get inputEnded(): boolean {
    return this.run?.ended ?? false;
  }

  /** An event of the next follower's play (its number, or one past the current's before its answer came). */
  isFollowerPlay(play: number | undefined): boolean {
    const follower = this.followers[0];
    if (!follower || play === undefined) return false;
    if (follower.play !== undefined) return play === follower.play;
    const current = this.run?.playNumber;
    return current !== undefined && play > current;
  }

  onReady(ready: ReadyEvent): void {
    if (ready.play !== undefined && ready.play <= this.retiredPlay) return;
    if (this.isFollowerPlay(ready.play)) return this.followerReady(ready);
    const run = this.run;
    if (!run || !run.takeReady(ready.play)) return;
    const track = run.track;
    if (run.splicing) return this.spliceReady(run, ready);
    const event: ListenerEvent = { type: 'ready', session: this.id };
    track.startAt = ready.start_at ?? track.startAt;
    // A seed engine sends only `duration`, the seconds this play gives from where it starts.
    const length = ready.track_duration ?? (ready.duration === undefined ? undefined : track.startAt + ready.duration);
    if (length !== undefined) track.duration = length;
    event.startAt = track.startAt;
    if (track.duration !== undefined) event.duration = track.duration;
    this.broadcast(event);
    this.refresh();
  }

  /**
   * A splice's `ready`: its play's frames come next, behind every old frame in the ring; the
   * worker is told where they begin. Listeners hear nothing of it: the track plays on.
   */
  private spliceReady(run: TrackRun, ready: ReadyEvent): void {
    const first = this.ringNow!.writeCount();
    run.spliceFrom(first);
    if (ready.track_duration !== undefined) run.track.duration = ready.track_duration;
    // Frames the worker had left before the cut: at 0 or below it waited for this play.
    const ahead = this.beforeSplice ? this.beforeSplice.until - Atomics.load(this.control, Control.Sent) : 0;
    log.debug('splice ready', { session: this.id, framesBeforeCut: ahead });
    const slot = this.slotNow;
    if (slot?.alive) void slot.call((api) => api.spliceTo(first)).catch(() => undefined);
  }

  /** One frame from the engine for this session (the demux's hot path). */
  acceptFrame(buf: Buffer, start: number, end: number, credit: boolean): void {
    const current = this.current;
    if (!('run' in current)) {
      this.counters.framesStale++;
      return;
    }
    current.run.acceptFrame(buf, start, end, credit);
  }

  /** Frames to grant the engine now for the current track (0: none); they count as in flight. */
  grantCredit(): number {
    return this.run?.grantCredit() ?? 0;
  }

  /** A new engine connection: credit granted on the old one is void. */
  forgetCredit(): void {
    this.run?.forgetCredit();
  }

  /** The worker plays and waits for frames only the engine can send (what a starved engine shows). */
  awaitsEngine(credit: boolean): boolean {
    const current = this.current;
    return (current.status === 'buffering' || current.status === 'playing') && current.run.awaitsEngine(credit);
  }

  /** The engine has sent the track's last frame; with no worker to play out the ring, the track is finished. */
  endInput(workerPlaysOut: boolean): void {
    const current = this.current;
    if (!('run' in current)) return;
    current.run.endInput();
    if (!workerPlaysOut) this.state = { status: 'finished', track: current.track };
  }

  /** The engine connection dropped: true if a track was under way (it is marked to be checked). */
  markEngineLost(): boolean {
    const run = this.run;
    if (run) run.engineLost = true;
    return run !== undefined;
  }

  /** The track is under way and its engine's connection was lost and not yet checked. */
  get engineLost(): boolean {
    return this.run?.engineLost ?? false;
  }

  /** The engine still has the track after a reconnect. */
  engineBack(): void {
    const run = this.run;
    if (run) run.engineLost = false;
  }

  /** stopped: frames still in flight are refused, the ring emptied. */
  stopTrack(reason?: string): void {
    this.retireFollowers();
    this.ringNow?.clear();
    this.state = reason === undefined ? { status: 'stopped' } : { status: 'stopped', reason };
  }

  /** error: the track ends, frames still in flight are refused, the ring emptied, everyone told. */
  fail(reason: string): void {
    this.retireFollowers();
    this.ringNow?.clear();
    this.state = { status: 'error', reason };
    this.broadcast({ type: 'error', session: this.id, message: reasonOf(this.current)! });
  }

  // ---- followers: gapless changes ----

  /**
   * The follower's `ready`: every frame of the current play is in the ring already, the
   * follower's come next. Its run takes over the engine's side now (credit, events); the
   * listeners' track changes when the worker reaches the frames written so far.
   */
  private followerReady(ready: ReadyEvent): void {
    const current = this.current;
    if (!('run' in current)) return;
    const { track } = this.followers.shift()!;
    this.awaitingFollower = false;
    const run = new TrackRun(track, this.id, this.ringNow!, this.ringMs, this.counters);
    run.answer(ready.play);
    run.takeReady(ready.play);
    run.takeOver(current.run);
    track.startAt = ready.start_at ?? track.startAt;
    const length = ready.track_duration ?? (ready.duration === undefined ? undefined : track.startAt + ready.duration);
    if (length !== undefined) track.duration = length;
    this.boundaries.push({ at: this.ringNow?.stats().written ?? 0, track, play: ready.play });
    this.state = { ...current, run };
    this.trackObserver?.followerStarted(track);
    this.crossBoundary();
  }

  /** A follower's frames are in the ring, not yet reached by the worker. */
  get boundaryPending(): boolean {
    return this.boundaries.length > 0;
  }

  /**
   * When the worker has taken the current track's last frame, the follower becomes the track:
   * listeners get its `ready`. Returns true when it did.
   */
  crossBoundary(): boolean {
    const ring = this.ringNow;
    let crossed = false;
    while (this.boundaries.length > 0 && ring) {
      const boundary = this.boundaries[0]!;
      const stats = ring.stats();
      const beyond = (((stats.read + stats.dropped + stats.flushed) >>> 0) - boundary.at) | 0;
      if (beyond < 0) break;
      this.boundaries.shift();
      const current = this.current;
      if (!('run' in current)) continue;
      crossed = true;
      this.trackStartSent = Atomics.load(this.control, Control.Sent) - beyond;
      const track = boundary.track;
      this.state = { ...current, track };
      const event: ListenerEvent = { type: 'ready', session: this.id, startAt: track.startAt };
      if (track.duration !== undefined) event.duration = track.duration;
      this.broadcast(event);
      this.trackObserver?.trackChanged(track);
    }
    return crossed;
  }

  /**
   * Followers from `at` on are replaced by `follower` (or dropped), silently: the engine drops
   * what followed the play they follow too.
   */
  replaceFollowers(at: number, follower?: Follower): void {
    for (const f of this.followers.splice(at)) this.retiredPlay = Math.max(this.retiredPlay, f.play ?? 0);
    if (follower) this.followers.push(follower);
  }

  /** The next follower was refused or failed, and those after it went with it in the engine. */
  followerFailed(reason: string): void {
    const failed = this.followers[0];
    if (!failed) return;
    this.replaceFollowers(0);
    this.trackObserver?.followerFailed(failed.track, reason);
  }

  /** Forgets the followers, asked for or in the ring: their events are stale from now. */
  private retireFollowers(): void {
    for (const b of this.boundaries) this.retiredPlay = Math.max(this.retiredPlay, b.play ?? 0);
    this.replaceFollowers(0);
    this.boundaries = [];
    this.awaitingFollower = false;
  }

  /** Seconds into the current track that the listeners have reached. */
  get position(): number {
    const frames = this.positionFrames;
    if (frames !== undefined) return frames / FRAMES_PER_SECOND;
    const track = this.track;
    if (!track) return 0;
    const taken = Math.max(0, Atomics.load(this.control, Control.Sent) - this.trackStartSent);
    const shown = track.startAt + (taken * FRAME_MS) / 1000;
    return track.duration === undefined ? shown : Math.min(shown, track.duration);
  }

  // ---- the worker's view ----

  onPlayerStatus(status: PlayerStatus, reason?: string): void {
    // A released (or releasing) track's worker has nothing more to say about it: the release
    // itself says why the track paused.
    if (this.released || this.run?.releasing) return;
    const run = this.run;
    if (run) run.player = reason === undefined ? { status } : { status, reason };
    if (status === 'finished') {
      this.crossBoundary();
      if (run) {
        this.state = { status: 'finished', track: run.track };
        this.broadcast({ type: 'finished', session: this.id });
      }
      return;
    }
    if (status === 'error') {
      this.fail(reason ?? 'session worker failed');
      return;
    }
    this.refresh();
  }

  /** Puts the track's state in line with the engine's and the worker's. */
  private refresh(): void {
    const current = this.current;
    if (!('run' in current)) return;
    const { track, run } = current;
    const { status, reason } = run.player;
    if (status === 'paused' || status === 'autopaused') this.state = reason === undefined ? { status, track, run } : { status, track, run, reason };
    else if (!run.ready && !run.splicing) this.state = { status: 'starting', track, run };
    else if (status === 'buffering' || status === 'playing') this.state = { status, track, run };
  }

  // ---- the worker slot ----

  get slot(): Slot | undefined {
    return this.slotNow;
  }

  /** Settles once the previous slot has ended: a new one continues its seq and timestamp. */
  get slotClosed(): Promise<void> {
    return this.slotClosing;
  }

  /** Where a new slot's seq and timestamp continue. */
  get continuation(): { nextSeq: number; nextTimestamp: number } {
    return { nextSeq: this.nextSeq, nextTimestamp: this.nextTimestamp };
  }

  /** Takes a newly attached slot; `died` hears if its thread dies while it is the session's. */
  holdSlot(slot: Slot, died: (err: Error) => void): void {
    this.slotNow = slot;
    this.continuedBy = slot;
    slot.done.then(
      (result: SlotResult) => {
        // Slots of one session never play at once (a new one waits for the old to close, a move
        // takes the player off the old first).
        if (this.continuedBy === slot) {
          this.nextSeq = result.nextSeq;
          this.nextTimestamp = result.nextTimestamp;
        }
        if (this.slotNow === slot) this.slotNow = undefined;
      },
      (err: Error) => {
        if (this.slotNow !== slot) return;
        this.slotNow = undefined;
        this.slotClosing = Promise.resolve();
        died(err);
      },
    );
  }

  /**
   * The session's player has moved (mid-track) to `slot` from the slot it held, which is let go:
   * that one's end says nothing of seq and timestamp, the new one's does.
   */
  moveSlot(slot: Slot, died: (err: Error) => void): void {
    const from = this.slotNow;
    this.holdSlot(slot, died);
    if (from?.alive) void from.call((api) => api.close()).catch(() => undefined);
  }

  /** Lets go of the slot (asking it to close); slotClosed settles when it has ended. */
  releaseSlot(): void {
    const slot = this.slotNow;
    if (!slot) return;
    this.slotNow = undefined;
    this.slotClosing = slot.done.then(
      () => undefined,
      () => undefined,
    );
    if (slot.alive) void slot.call((api) => api.close()).catch(() => undefined);
  }

  // ---- RTP sinks and voice ----

  /** RTP targets, kept with their streams so the next track's slot continues SSRC, seq and timestamp. */
  get rtpSinks(): readonly RtpTarget[] {
    return this.sinks;
  }

  hasRtpSink(target: RtpTarget): boolean {
    return this.sinks.some((t) => sameTarget(t, target));
  }

  keepRtpSink(target: RtpTarget): void {
    if (!this.hasRtpSink(target)) this.sinks.push(target);
  }

  /** False if the session had no such sink. */
  dropRtpSink(target: RtpTarget): boolean {
    const i = this.sinks.findIndex((t) => sameTarget(t, target));
    if (i < 0) return false;
    this.sinks.splice(i, 1);
    return true;
  }

  /** The bot's voice state, while the session is to be in a voice channel. */
  get voice(): VoiceServerState | undefined {
    return this.voiceState;
  }

  /** The voice connection's last reported state. */
  get voiceEvent(): VoiceEvent | undefined {
    return this.voiceNow;
  }

  joinVoice(state: VoiceServerState): void {
    this.voiceState = { ...state };
  }

  /** False if the session was in no voice channel. */
  leaveVoice(): boolean {
    if (!this.voiceState) return false;
    this.voiceState = undefined;
    this.voiceNow = undefined;
    return true;
  }

  /**
   * The worker's answer to setVoice. Its later changes come on the egress port, which may be read
   * before this answer: one that came meanwhile is newer than the answer, which is then dropped.
   */
  async voiceFrom(call: () => Promise<VoiceEvent>): Promise<void> {
    const seen = this.voiceChanges;
    const event = await call();
    if (this.voiceChanges === seen) this.onVoice(event);
  }

  /** The voice connection changed: every listener (the bot among them) hears of it. */
  onVoice(event: VoiceEvent): void {
    this.voiceChanges++;
    const old = this.voiceNow;
    this.voiceNow = event;
    if (old && old.status === event.status && old.reason === event.reason) return;
    if (event.status === 'disconnected') log.warn('voice disconnected', { session: this.id, reason: event.reason, rejoin: event.rejoin });
    this.broadcast({ type: 'voice', session: this.id, ...event });
  }

  // ---- listeners ----

  addListener(ws: WebSocket, socket: Duplex): Listener {
    const listener = new Listener(ws, socket, Date.now(), this.messageRate);
    this.listeners.set(ws, listener);
    this.lastActiveAt = Date.now();
    return listener;
  }

  removeListener(ws: WebSocket): void {
    this.listeners.delete(ws);
    this.lastActiveAt = Date.now();
  }

  /** One paced frame from the worker, sent on each listener's WebSocket (the egress hot path). */
  sendToListeners(frame: Buffer, now: number): void {
    // A batch the worker posted just before a stop, an error or a new play can land after it:
    // its frames belong to a track the listeners were told has ended.
    if (!DELIVERING.has(this.current.status)) return;
    for (const [ws, listener] of this.listeners) {
      if (this.slowPolicy === 'drop' && listener.update(now)) {
        this.skipped++;
        continue;
      }
      listener.send(frame);
      // Under `wait`, bytes piling up in user space hold the session at once (memory bound).
      if (this.slowPolicy === 'wait' && ws.bufferedAmount > HIGH_WATER_BYTES) {
        Atomics.store(this.control, Control.EgressBlocked, 1);
      }
    }
  }

  /** Pings, lag and dead peers; under `wait`, holds or releases the worker. */
  checkListeners(now: number): void {
    let behind = false;
    for (const listener of this.listeners.values()) if (listener.check(now)) behind = true;
    if (this.slowPolicy === 'wait') Atomics.store(this.control, Control.EgressBlocked, behind ? 1 : 0);
  }

  broadcast(event: ListenerEvent): void {
    this.observer?.(event);
    this.trackObserver?.event(event);
    if (this.listeners.size === 0) return;
    const text = JSON.stringify(event);
    for (const listener of this.listeners.values()) listener.send(text);
  }

  summary(): SessionSummary {
    const ring = this.ringNow;
    const stats = ring?.stats();
    const state = this.current;
    const out: SessionSummary = {
      id: this.id,
      state: state.status,
      format: this.ringFormat ?? 'opus',
      ringFrames: stats?.records ?? 0,
      ringCapacityFrames: framesIn(this.ringMs),
      listeners: this.listeners.size,
      rtpSinks: this.sinks.length,
      sent: Atomics.load(this.control, Control.Sent),
      late: Atomics.load(this.control, Control.Late),
      underruns: Atomics.load(this.control, Control.Underruns),
      resyncs: Atomics.load(this.control, Control.Resyncs),
      dropped: stats?.dropped ?? 0,
      skipped: this.skipped,
    };
    const reason = state.status === 'autopaused' ? NOBODY_LISTENS : reasonOf(state);
    if (reason !== undefined) out.reason = reason;
    const track = this.track;
    if (track) {
      out.url = track.url;
      out.startAt = track.startAt;
      const position = this.positionFrames;
      if (position !== undefined) out.position = position / FRAMES_PER_SECOND;
      if (track.duration !== undefined) out.duration = track.duration;
    }
    if (this.voiceState) {
      out.voice = { guildId: this.voiceState.guildId, channelId: this.voiceState.channelId, endpoint: this.voiceState.endpoint, ...(this.voiceNow ?? { status: 'connecting' }) };
    }
    return out;
  }
}

function runOf(state: SessionState): TrackRun | undefined {
  return 'run' in state ? state.run : undefined;
}

function reasonOf(state: SessionState): string | undefined {
  return 'reason' in state ? state.reason : undefined;
}

export function sameTarget(a: RtpTarget, b: RtpTarget): boolean {
  return a.port === b.port && a.host === b.host;
}

/** Ring bytes for `ms` of audio at twice the format's nominal bitrate (VBR headroom). */
export function ringBytes(ms: number, format: StreamFormat): number {
  const nominal = Math.ceil((NOMINAL_BITRATE[format] / 8) * (FRAME_MS / 1000));
  return Ring.capacityFor(framesIn(ms), Math.min(2 * nominal, maxPayloadBytes(format)));
}
