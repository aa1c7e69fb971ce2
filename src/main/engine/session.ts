/**
 * One play of one session id, as an explicit state machine in the style of @discordjs/voice's
 * AudioPlayer: a discriminated union of states and one `state` setter that emits old and new.
 *
 *   idle → starting → streaming ⇄ paused → finished | stopped | error
 *
 *   starting   the source is being resolved and ffmpeg started; no frame yet
 *   streaming  frames flow (the `ready` event went into the outbox before the first one)
 *   paused     nothing leaves the outbox; ffmpeg is held once the outbox is full, not killed;
 *              paused past CHORUS_PAUSE_RELEASE_S it is `released`: ffmpeg killed, the outbox
 *              emptied, and resume starts ffmpeg again at the first frame not sent
 *   finished   the last frame and then `finished` went out
 *   stopped    by a stop, a replacing play, engine shutdown, or the idle timeout
 *   error      the source was refused or ffmpeg/the encoder failed; frames already made still go
 *              out, followed by the `error` event
 *
 * The outbox holds this play's wire units (frames and events) in order; the scheduler drains it.
 */
import { EventEmitter } from 'node:events';
import { FRAMES_PER_SECOND, type AudioFormat } from '../../shared/audio.js';
import { playbackRate, type AudioFilters } from '../../shared/audio-filters.js';
import { OggOpusWriter } from '../../shared/ogg.js';
import { cutText } from '../../shared/cut-text.js';
import { encodeEvent, encodeFrame, FRAME_HEADER_BYTES, paddedSessionId, type ReadyEvent, type SessionEvent } from '../../shared/protocol.js';
import { ENGINE_LIVE_STATES } from '../../shared/session-state.js';
import { Outbox } from './outbox.js';
import type { FfmpegInput } from './source.js';

/** An ended session's record keeps this much of its url (the play is over: status only shows it). */
export const MAX_ENDED_URL_CHARS = 1024;

/** About two ffmpeg reads (64 KiB, 17 frames each). */
const MAX_IN_FLIGHT_FRAMES = 34;

/**
 * What makes a play's frames: ffmpeg and an encoder thread (pipeline.ts), or, in the load
 * scripts' synthetic engine, a loop of packets encoded beforehand.
 */
export interface FrameSource {
  /** The ffmpeg process, when there is one. */
  readonly pid: number | undefined;
  /** Frames made and not yet handed over (inside an encoder thread). */
  readonly inFlight: number;
  /** Frames handed over so far (a source that ended early is opened again after them). */
  readonly framesOut: number;
  /** Seconds of the source as the source itself reports it, once known. */
  readonly sourceDuration: number | undefined;
  /** The frames are the source's own Opus packets, not encoded here (pipeline.ts). */
  readonly passthrough?: boolean;
  /** The session has room again: frames may come. */
  release(): void;
  /** Ends the play now: nothing more comes. */
  kill(): void;
}

export type SessionState =
  | { status: 'idle' }
  | { status: 'starting'; pipeline?: FrameSource }
  | { status: 'streaming'; pipeline: FrameSource }
  | { status: 'paused'; pipeline?: FrameSource; resumeTo: 'starting' | 'streaming'; released?: true }
  | { status: 'finished' }
  | { status: 'stopped'; reason: string }
  | { status: 'error'; message: string };

/** The engine's words of src/shared/session-state.ts (ENGINE_STATES), as the status answer gives them. */
export type SessionStatus = SessionState['status'];

export const LIVE_STATES: ReadonlySet<SessionStatus> = new Set<SessionStatus>(ENGINE_LIVE_STATES);

export interface PlayRequest {
  url: string;
  format: AudioFormat;
  startAt?: number;
  duration?: number;
  /** Linear gain applied to the PCM before encoding (1: unchanged). */
  gain?: number;
  /** Effects on the PCM before the gain (audio-filters.ts). */
  filters?: AudioFilters;
}

export interface Session {
  on(event: 'stateChange', listener: (oldState: SessionState, newState: SessionState) => void): this;
  /** The outbox got units (the scheduler may have something to send). */
  on(event: 'outbox', listener: () => void): this;
}

export class Session extends EventEmitter {
  private _state: SessionState = { status: 'idle' };
  readonly paddedId: string;
  readonly outbox = new Outbox();
  /** Set once the play's last unit (`finished`) is in the outbox. */
  private endQueued = false;
  /** Credit window granted by the gateway on the current connection, in frames. */
  credit = 0;
  /** Real-time pacing: when the next frame is due (performance.now() ms); NaN until the first. */
  nextDue = Number.NaN;
  framesMade = 0;
  framesSent = 0;
  /** performance.now() ms of the last state change or unit sent: the idle timeout's clock. */
  lastProgress: number;
  /** performance.now() ms of the play. */
  readonly startedAt: number;
  /** Seconds of the source when known before ffmpeg runs (tones). */
  sourceDuration: number | undefined;
  /** Seconds of audio this play gives, once known (sent with `ready`, shown in status). */
  duration: number | undefined;
  /** Seconds of the whole source, once known (sent with `ready` as `track_duration`). */
  trackDuration: number | undefined;
  /**
   * The play queued to follow this one with no gap (POST /session/:id/next): its ffmpeg starts
   * once this play's source has been read to its end, and it takes this id's place (credit and
   * clock included) the moment this play's `finished` has gone out.
   */
  follower: Session | undefined;
  /** A follower's resolved source, waiting for its predecessor's source to end. */
  pendingInput: FfmpegInput | undefined;
  /** ffmpeg has given this play's whole source. */
  sourceEnded = false;
  /** A run of this play found its source cannot pass through as Opus: its later runs are encoded. */
  encodeOnly = false;
  /**
   * Set for a peer that reads Ogg Opus (CHORUS_ENGINE_DIALECT=natashi): each packet goes out as
   * one Ogg page, after the stream's two header pages.
   */
  private ogg: { writer: OggOpusWriter; headersSent: boolean } | undefined;

  /**
   * @param capacity frames this play may hold (outbox plus encoder) before its ffmpeg is held:
   *   CHORUS_ENGINE_BUFFER_MS worth; one ffmpeg read (≤ 64 KiB, 17 frames) may land on top.
   */
  constructor(
    readonly id: string,
    readonly play: number,
    /** The play as asked; once the play has ended, its url is cut to MAX_ENDED_URL_CHARS. */
    public request: PlayRequest,
    readonly capacity: number,
    now: number,
  ) {
    super();
    this.paddedId = paddedSessionId(id);
    this.lastProgress = now;
    this.startedAt = now;
  }

  get state(): SessionState {
    return this._state;
  }

  /** The one place a session changes state: ends the pipeline when leaving the live states. */
  set state(newState: SessionState) {
    const oldState = this._state;
    const oldPipeline = 'pipeline' in oldState ? oldState.pipeline : undefined;
    const newPipeline = 'pipeline' in newState ? newState.pipeline : undefined;
    if (oldPipeline && oldPipeline !== newPipeline) oldPipeline.kill();
    this._state = newState;
    this.lastProgress = performance.now();
    if (!LIVE_STATES.has(newState.status) && this.request.url.length > MAX_ENDED_URL_CHARS) {
      this.request = { ...this.request, url: cutText(this.request.url, MAX_ENDED_URL_CHARS) };
    }
    this.emit('stateChange', oldState, newState);
  }

  get live(): boolean {
    return LIVE_STATES.has(this._state.status);
  }

  get pipeline(): FrameSource | undefined {
    return 'pipeline' in this._state ? this._state.pipeline : undefined;
  }

  /** Frames made and not yet sent, including those inside the encoder thread. */
  get backlog(): number {
    return this.outbox.frames + (this.pipeline?.inFlight ?? 0);
  }

  /**
   * May the pipeline read more from ffmpeg? Not when the play holds its capacity, nor while two
   * reads are still in the encoder thread: PCM waiting there is 10× the size of its Opus, and
   * the thread only works through it so fast anyway.
   */
  get canRead(): boolean {
    return this.backlog < this.capacity && (this.pipeline?.inFlight ?? 0) < MAX_IN_FLIGHT_FRAMES;
  }

  /** May the scheduler take units from the outbox now? */
  get sendable(): boolean {
    return this.outbox.length > 0 && this._state.status !== 'paused';
  }

  /** Frames of this play go out as one Ogg Opus stream, `serial` its serial number. */
  useOgg(serial: number): void {
    this.ogg = { writer: new OggOpusWriter(serial), headersSent: false };
  }

  /** The play's pipeline is running (a pause may have come while its source was resolved). */
  attach(pipeline: FrameSource): void {
    this.duration = this.playDuration(undefined);
    const s = this._state;
    if (s.status === 'paused') this.state = { ...s, pipeline };
    else if (s.status === 'starting') this.state = { status: 'starting', pipeline };
    else pipeline.kill();
  }

  /**
   * A new pipeline takes over from one that ended early (the source opened again at the frame
   * reached): the play goes on in whatever state it is, with no second `ready`.
   */
  replacePipeline(pipeline: FrameSource): void {
    const s = this._state;
    if (s.status === 'starting' || s.status === 'streaming') this.state = { ...s, pipeline };
    else if (s.status === 'paused') this.state = { status: 'paused', resumeTo: s.resumeTo, pipeline };
    else pipeline.kill();
  }

  /**
   * A long pause gives back ffmpeg, its encoder and the frames made but not sent; the play stays
   * paused at the first frame not sent, where replacePipeline() takes it on.
   */
  release(): void {
    const s = this._state;
    if (s.status !== 'paused' || s.resumeTo !== 'streaming' || s.released) return;
    this.outbox.clear();
    this.endQueued = false;
    this.framesMade = this.framesSent;
    this.state = { status: 'paused', resumeTo: 'streaming', released: true };
  }

  /** Seconds into the source of the next frame this play makes (a timescale filter sets the pace). */
  get nextFrameAt(): number {
    return (this.request.startAt ?? 0) + (this.framesMade / FRAMES_PER_SECOND) * playbackRate(this.request.filters);
  }

  /** Frames of the pipeline: `ready` goes first, before the first frame of the play. */
  addFrames(frames: Buffer, count: number): void {
    const s = this._state;
    if (s.status === 'starting' && s.pipeline) {
      this.queueReady(s.pipeline);
      this.state = { status: 'streaming', pipeline: s.pipeline };
    } else if (s.status === 'paused' && s.resumeTo === 'starting' && s.pipeline) {
      this.queueReady(s.pipeline);
      this.state = { ...s, resumeTo: 'streaming' };
    }
    const ogg = this.ogg;
    if (ogg && !ogg.headersSent) {
      ogg.headersSent = true;
      for (const page of ogg.writer.headers()) this.outbox.push(encodeFrame(this.id, page), false);
    }
    for (let off = 0, i = 0; i < count; i++) {
      const end = off + 4 + frames.readUInt32BE(off);
      const frame = frames.subarray(off, end);
      this.outbox.push(ogg ? encodeFrame(this.id, ogg.writer.packet(frame.subarray(FRAME_HEADER_BYTES))) : frame, false);
      off = end;
    }
    this.framesMade += count;
    this.emit('outbox');
  }

  /** The pipeline ended: `finished` after the last frame, or the error state and an `error` event. */
  endPlay(error: string | undefined): void {
    if (!this.live) return;
    if (error !== undefined) return this.fail(error);
    if (this.framesMade === 0) return this.fail('the source gave no audio (is start_at past its end?)');
    this.endQueued = true;
    this.queueEvent({ type: 'finished', session_id: this.id });
  }

  fail(message: string): void {
    this.state = { status: 'error', message };
    this.queueEvent({ type: 'error', session_id: this.id, message });
  }

  /** Ends a live play; what it had not sent yet is dropped. `notice` goes out as an `error` event. */
  stop(reason: string, notice?: string): void {
    if (!this.live) return;
    this.outbox.clear();
    this.state = { status: 'stopped', reason };
    if (notice !== undefined) this.queueEvent({ type: 'error', session_id: this.id, message: notice });
  }

  /** The scheduler sent the oldest unit of the outbox. */
  sent(wasFrame: boolean, now: number): void {
    this.lastProgress = now;
    if (wasFrame) {
      this.framesSent++;
      if (this.canRead) this.pipeline?.release();
    }
    const s = this._state;
    if (this.endQueued && this.outbox.length === 0 && s.status === 'streaming') this.state = { status: 'finished' };
  }

  /**
   * Seconds that will play: the source less `start_at`; undefined if unknown. The play's
   * `duration` is only a hint of the source's length, for when ffmpeg cannot tell.
   */
  private playDuration(reported: number | undefined): number | undefined {
    const source = this.sourceDuration ?? reported ?? this.request.duration;
    return source === undefined ? undefined : Math.max(0, source - (this.request.startAt ?? 0));
  }

  /**
   * `duration` stays what the seed sends (seconds this play gives); `start_at` and
   * `track_duration` let a listener show position / length after a seek.
   */
  private queueReady(pipeline: FrameSource): void {
    this.duration = this.playDuration(pipeline.sourceDuration);
    this.trackDuration = this.sourceDuration ?? pipeline.sourceDuration ?? this.request.duration;
    const event: ReadyEvent = { type: 'ready', session_id: this.id, play: this.play, start_at: this.request.startAt ?? 0 };
    if (this.duration !== undefined) event.duration = millis(this.duration);
    if (this.trackDuration !== undefined) event.track_duration = millis(this.trackDuration);
    this.queueEvent(event);
  }

  private queueEvent(event: SessionEvent): void {
    this.outbox.push(encodeEvent(event), true);
    this.emit('outbox');
  }
}

/** Seconds rounded to the millisecond, as events and status carry them. */
export function millis(seconds: number): number {
  return Math.round(seconds * 1000) / 1000;
}
