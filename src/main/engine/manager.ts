/**
 * The sessions of the engine, by id. Every operation touches one id only: a play replaces that
 * id's session (its play counter goes up), stop/pause/resume act on it alone, and the idle sweep
 * stops only the sessions that made no progress for CHORUS_IDLE_TIMEOUT_S.
 *
 * Idle timeout: a live session that sent nothing and changed state for that long (paused, or no
 * gateway took its frames) is stopped — state `stopped` with the reason — and says so with an
 * `error` event (not `finished`: the track did not play to its end). An ended session's record
 * is kept for status for the same time, then forgotten (and its play counter restarts at 1).
 *
 * Pause release: a session paused (by the engine's own pause) for CHORUS_PAUSE_RELEASE_S gives
 * back its ffmpeg and the frames it had made, keeping the frame it reached; resume starts the
 * source again there. A released session is not stopped by the idle timeout.
 *
 * Gateway grace: a live session is stopped the same way once no gateway has been connected for
 * CHORUS_GATEWAY_GRACE_S, counted from the later of the gateway's leaving and the play. A gateway
 * that reconnects sooner (a restart, a dropped socket) finds its sessions playing; sessions of a
 * gateway that is gone do not hold the engine's slots for the idle timeout.
 *
 * Ended sessions are bounded in count (CHORUS_MAX_ENDED_SESSIONS, the oldest forgotten first)
 * and in size (an ended record keeps at most MAX_ENDED_URL_CHARS of its url).
 */
import { randomInt } from 'node:crypto';
import type { Config } from '../../shared/config.js';
import { framesIn } from '../../shared/audio.js';
import { logger } from '../../shared/log.js';
import type { PipelineEvents, StartSource } from './pipeline.js';
import type { FrameScheduler } from './scheduler.js';
import { ENGINE_STATES, type EngineState } from '../../shared/session-state.js';
import { Session, type FrameSource, type PlayRequest } from './session.js';
import { SourceError, type FfmpegInput } from './source.js';

const log = logger('engine.sessions');

export class LimitError extends Error {
  override name = 'LimitError';
}

/** An operation that does not apply to the session's state (pause of a finished session). */
export class StateError extends Error {
  override name = 'StateError';
}

export interface ManagerOptions {
  config: Config;
  scheduler: FrameScheduler;
  resolve: (url: string) => Promise<FfmpegInput>;
  /** Starts a play's frames once its source is resolved (the engine's: pipelineSource). */
  startSource: StartSource;
}

export class SessionManager {
  private readonly capacity: number;
  private readonly idleMs: number;
  private readonly graceMs: number;
  private readonly releaseMs: number;
  /** Each live play's resolved source, to start ffmpeg again after an early end or a release. */
  private readonly inputs = new WeakMap<Session, FfmpegInput>();
  private readonly sweeper: NodeJS.Timeout;
  /** Ended sessions in the map, kept at most CHORUS_MAX_ENDED_SESSIONS. */
  private endedKept = 0;
  plays = 0;
  ffmpegStarted = 0;
  /** Remote sources opened again at the frame reached, after ending early. */
  sourceRetries = 0;
  readonly ended: Record<'finished' | 'stopped' | 'error', number> = { finished: 0, stopped: 0, error: 0 };

  constructor(
    readonly sessions: Map<string, Session>,
    private readonly opts: ManagerOptions,
  ) {
    this.capacity = framesIn(opts.config.CHORUS_ENGINE_BUFFER_MS);
    this.idleMs = opts.config.CHORUS_IDLE_TIMEOUT_S * 1000;
    this.graceMs = opts.config.CHORUS_GATEWAY_GRACE_S * 1000;
    this.releaseMs = opts.config.CHORUS_PAUSE_RELEASE_S * 1000;
    this.sweeper = setInterval(() => this.sweep(performance.now()), Math.min(10_000, Math.max(250, Math.min(this.idleMs, this.graceMs, this.releaseMs) / 4)));
    this.sweeper.unref();
  }

  get live(): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.live) n++;
    return n;
  }

  countByState(): Record<EngineState, number> {
    const counts = Object.fromEntries(ENGINE_STATES.map((s) => [s, 0])) as Record<EngineState, number>;
    for (const s of this.sessions.values()) counts[s.state.status]++;
    return counts;
  }

  /**
   * Starts a play, replacing the id's current one. Resolves once ffmpeg is started, or with
   * `refused` when the source was not accepted (the session is then in `error`, its `error` event
   * queued). Throws LimitError past CHORUS_MAX_SESSIONS.
   */
  async play(id: string, request: PlayRequest): Promise<{ session: Session; refused?: SourceError }> {
    const old = this.sessions.get(id);
    if (!old?.live && this.live >= this.opts.config.CHORUS_MAX_SESSIONS) {
      throw new LimitError(`session limit reached: ${this.opts.config.CHORUS_MAX_SESSIONS} live sessions (CHORUS_MAX_SESSIONS)`);
    }
    const session = new Session(id, (old?.play ?? 0) + 1, request, this.capacity, performance.now());
    old?.stop(`replaced by play ${session.play}`);
    if (old) this.forget(id, old);
    this.sessions.set(id, session); // inserted last: the map stays in order of last play
    this.plays++;
    if (this.opts.config.CHORUS_ENGINE_DIALECT === 'natashi' && request.format !== 'pcm') {
      session.useOgg(randomInt(2 ** 32));
    }
    this.observe(session);
    session.state = { status: 'starting' };

    let input: FfmpegInput;
    try {
      input = await this.opts.resolve(request.url);
    } catch (err) {
      const refused = err instanceof SourceError ? err : new SourceError(`cannot resolve source: ${(err as Error).message}`, 400);
      if (session.live) session.fail(refused.message);
      return { session, refused };
    }
    // Stopped or replaced while the source was being resolved: nothing to start.
    if (!session.live) return { session };
    session.sourceDuration = input.duration;
    this.inputs.set(session, input);
    this.startPipeline(session, input, request.startAt, 0);
    return { session };
  }

  /**
   * Queues a play to follow the id's live play with no gap (or, with `after`, the queued play of
   * that number): its source is resolved now, its ffmpeg started once the play before it has
   * read its source to the end, and its frames follow that play's last frame, behind its
   * `finished` and its own `ready`. It replaces what followed that play before. With no live
   * play for the id, it is a play.
   */
  async follow(id: string, request: PlayRequest, after?: number): Promise<{ session: Session; refused?: SourceError }> {
    const current = this.sessions.get(id);
    if (!current?.live) {
      // The play before ended already: this one goes on where it stopped, on the credit it left.
      const played = await this.play(id, request);
      if (current && this.sessions.get(id) === played.session) {
        played.session.credit += current.credit;
        played.session.nextDue = current.nextDue;
        current.credit = 0;
      }
      return played;
    }
    let lead: Session | undefined = current;
    let last = current.play;
    for (let s = current.follower; s; s = s.follower) last = Math.max(last, s.play);
    if (after !== undefined) {
      while (lead && lead.play !== after) lead = lead.follower;
      if (!lead?.live) throw new StateError(`play ${after} is neither under way nor queued for ${JSON.stringify(id)}`);
    }
    const next = new Session(id, last + 1, request, this.capacity, performance.now());
    if (this.opts.config.CHORUS_ENGINE_DIALECT === 'natashi' && request.format !== 'pcm') next.useOgg(randomInt(2 ** 32));
    let input: FfmpegInput;
    try {
      input = await this.opts.resolve(request.url);
    } catch (err) {
      // A refused source replaces nothing: what was queued stays.
      const refused = err instanceof SourceError ? err : new SourceError(`cannot resolve source: ${(err as Error).message}`, 400);
      next.fail(refused.message);
      return { session: next, refused };
    }
    if (!lead.live) return this.follow(id, request, lead === current ? undefined : after);
    lead.follower?.stop(`replaced by play ${next.play}`);
    lead.follower = next;
    this.plays++;
    this.observe(next);
    next.state = { status: 'starting' };
    next.sourceDuration = input.duration;
    this.inputs.set(next, input);
    if (lead.sourceEnded) this.startPipeline(next, input, request.startAt, 0);
    else next.pendingInput = input;
    return { session: next };
  }

  /** Drops the id's queued follower; false when it had none. */
  unfollow(id: string): boolean {
    const current = this.get(id);
    const next = current.follower;
    if (!next) return false;
    current.follower = undefined;
    next.stop('taken off by request');
    return true;
  }

  /**
   * Runs the play's source from `startAt`; `retry` counts the times the source was opened again
   * after ending early.
   */
  private startPipeline(session: Session, input: FfmpegInput, startAt: number | undefined, retry: number, takeOver = retry > 0): void {
    session.pendingInput = undefined;
    try {
      const events: PipelineEvents = {
        frames: (frames, count) => session.addFrames(frames, count),
        end: (error) => this.pipelineEnded(session, input, pipeline, error, retry),
        reencode: (reason) => {
          session.encodeOnly = true;
          log.info('source cannot pass through as Opus; encoding it from the frame reached', { session: session.id, play: session.play, at: session.nextFrameAt, reason });
          this.reopen(session, input, pipeline, retry, 0);
        },
        canRead: () => session.canRead,
      };
      const pipeline: FrameSource = this.opts.startSource({ ...session.request, startAt }, input, session.paddedId, events, !session.encodeOnly);
      this.ffmpegStarted++;
      if (takeOver) session.replacePipeline(pipeline);
      else session.attach(pipeline);
    } catch (err) {
      session.fail(`cannot start ffmpeg: ${(err as Error).message}`);
    }
  }

  /** The play's source is read to its end: its follower's ffmpeg starts now, ahead of its turn. */
  private sourceEnded(session: Session): void {
    session.sourceEnded = true;
    const next = session.follower;
    if (next?.pendingInput && next.live) this.startPipeline(next, next.pendingInput, next.request.startAt, 0);
  }

  /** The play's `finished` went out: its follower takes the id, with its credit and its clock. */
  private promote(session: Session, next: Session): void {
    session.follower = undefined;
    if (this.sessions.get(session.id) !== session) {
      next.stop('its predecessor was replaced');
      return;
    }
    if (next.pendingInput && next.live) this.startPipeline(next, next.pendingInput, next.request.startAt, 0);
    next.credit = session.credit;
    next.nextDue = session.nextDue;
    session.credit = 0;
    this.forget(session.id, session);
    this.sessions.set(session.id, next);
    this.opts.scheduler.kick();
  }

  /**
   * A remote source that failed after giving audio (a reset, a cut body, a stall) is opened again
   * at the frame the play reached, after CHORUS_SOURCE_RETRY_MS doubled per try, at most
   * CHORUS_SOURCE_RETRIES times; so is one that fails to open on a retry. Anything else ends the play.
   */
  private pipelineEnded(session: Session, input: FfmpegInput, pipeline: FrameSource, error: string | undefined, retry: number): void {
    const { CHORUS_SOURCE_RETRIES: retries, CHORUS_SOURCE_RETRY_MS: firstWait } = this.opts.config;
    const retryable = error !== undefined && input.kind === 'remote' && (pipeline.framesOut > 0 || retry > 0);
    if (!retryable || retry >= retries || session.pipeline !== pipeline) {
      session.endPlay(retryable && retries > 0 ? `${error} (gave up after ${retry} ${retry === 1 ? 'retry' : 'retries'}: CHORUS_SOURCE_RETRIES)` : error);
      if (error === undefined) this.sourceEnded(session);
      return;
    }
    const wait = firstWait * 2 ** retry;
    this.sourceRetries++;
    log.warn('remote source failed; opening it again at the frame reached', { session: session.id, play: session.play, at: session.nextFrameAt, retry: retry + 1, waitMs: wait, error });
    this.reopen(session, input, pipeline, retry + 1, wait);
  }

  /**
   * Opens the play's source again at the frame reached, after `waitMs`, in place of `pipeline`:
   * a remote source that ended early, or one that could not pass through as Opus (then encoded).
   */
  private reopen(session: Session, input: FfmpegInput, pipeline: FrameSource, retry: number, waitMs: number): void {
    const at = session.nextFrameAt;
    setTimeout(() => {
      // Stopped or replaced meanwhile: its pipeline is gone, or another took over.
      if (session.live && session.pipeline === pipeline) this.startPipeline(session, input, at, retry, true);
    }, waitMs).unref();
  }

  /** Stops a live session (a no-op for one that has ended). Throws if the id is unknown. */
  stop(id: string): Session {
    const session = this.get(id);
    session.stop('stopped by request');
    return session;
  }

  pause(id: string): Session {
    const session = this.get(id);
    const s = session.state;
    if (s.status === 'paused') return session;
    if (s.status !== 'starting' && s.status !== 'streaming') throw new StateError(`session is ${s.status}; only a playing session can be paused`);
    session.state = { status: 'paused', pipeline: s.pipeline, resumeTo: s.status };
    return session;
  }

  resume(id: string): Session {
    const session = this.get(id);
    const s = session.state;
    if (s.status === 'starting' || s.status === 'streaming') return session;
    if (s.status !== 'paused') throw new StateError(`session is ${s.status}; only a paused session can be resumed`);
    const input = this.inputs.get(session);
    if (s.released && input) {
      this.startPipeline(session, input, session.nextFrameAt, 0, true);
      const again = session.state;
      if (again.status !== 'paused') return session;
      session.nextDue = Number.NaN;
      session.state = again.pipeline ? { status: 'streaming', pipeline: again.pipeline } : { status: 'starting' };
      this.opts.scheduler.kick();
      return session;
    }
    session.nextDue = Number.NaN;
    session.state = s.resumeTo === 'streaming' && s.pipeline ? { status: 'streaming', pipeline: s.pipeline } : { status: 'starting', pipeline: s.pipeline };
    this.opts.scheduler.kick();
    return session;
  }

  /** The session of `id`; throws NotFoundError when there is none. */
  get(id: string): Session {
    const session = this.sessions.get(id);
    if (!session) throw new NotFoundError(`no session ${JSON.stringify(id)}`);
    return session;
  }

  stopAll(reason: string): void {
    for (const s of this.sessions.values()) s.stop(reason);
    clearInterval(this.sweeper);
  }

  private observe(session: Session): void {
    session.on('outbox', () => this.opts.scheduler.kick());
    session.on('stateChange', (oldState, newState) => {
      if (newState.status === 'finished' || newState.status === 'stopped' || newState.status === 'error') {
        this.ended[newState.status]++;
        // A follower that never took its id's place was never in the map to be forgotten.
        if (this.sessions.get(session.id) === session) this.endedKept++;
        const next = session.follower;
        if (next && newState.status === 'finished') this.promote(session, next);
        else if (next) {
          session.follower = undefined;
          next.stop(`the play before it ended (${newState.status})`);
        }
        this.trimEnded();
      }
      if (newState.status === 'error') log.warn('session failed', { session: session.id, play: session.play, error: newState.message });
      else log.debug('session state', { session: session.id, play: session.play, from: oldState.status, to: newState.status });
    });
  }

  /** Removes `id`'s record from the map (`session` is what it held). */
  private forget(id: string, session: Session): void {
    this.sessions.delete(id);
    if (!session.live) this.endedKept--;
  }

  /** Past CHORUS_MAX_ENDED_SESSIONS, forgets the ended sessions played longest ago. */
  private trimEnded(): void {
    const max = this.opts.config.CHORUS_MAX_ENDED_SESSIONS;
    if (this.endedKept <= max) return;
    for (const [id, s] of this.sessions) {
      if (this.endedKept <= max) break;
      if (!s.live) this.forget(id, s);
    }
  }

  private sweep(now: number): void {
    const limitS = this.opts.config.CHORUS_IDLE_TIMEOUT_S;
    const noGatewaySince = this.opts.scheduler.noGatewaySince;
    for (const [id, s] of this.sessions) {
      if (s.live && noGatewaySince !== undefined && now - Math.max(noGatewaySince, s.startedAt) >= this.graceMs) {
        const why = `no gateway connected for ${this.opts.config.CHORUS_GATEWAY_GRACE_S} s`;
        log.info('stopping session with no gateway', { session: id });
        s.stop(`orphaned: ${why}`, `stopped: ${why} (CHORUS_GATEWAY_GRACE_S)`);
        continue;
      }
      const state = s.state;
      if (state.status === 'paused' && !state.released && state.resumeTo === 'streaming' && now - s.lastProgress >= this.releaseMs) {
        log.info('releasing a paused session', { session: id, at: s.nextFrameAt });
        s.release();
      }
      if (now - s.lastProgress < this.idleMs || (state.status === 'paused' && state.released)) continue;
      if (!s.live) {
        this.forget(id, s);
        continue;
      }
      const why = s.state.status === 'paused' ? `paused for ${limitS} s` : `no frame taken for ${limitS} s`;
      log.info('stopping idle session', { session: id, reason: why });
      s.stop(`idle: ${why}`, `stopped: ${why} (CHORUS_IDLE_TIMEOUT_S)`);
    }
  }
}

export class NotFoundError extends Error {
  override name = 'NotFoundError';
}
