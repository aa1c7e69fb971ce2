/**
 * One session's player inside a worker thread: waits for a prebuffer, then takes one frame from
 * its ring every 20 ms on its own deadline clock (deadline += 20 ms, never "now + 20 ms", so it
 * does not drift), and delivers it to the main thread (WebSocket listeners), to its RTP sinks and
 * to its Discord voice connection.
 *
 * Discord voice: speaking goes on as the player starts playing, before its first packet; on
 * pause, stop and end five silence frames follow on the same clock, then speaking goes off.
 * While the connection is not ready (connecting, resuming, moving to a new endpoint) the player
 * holds, taking nothing from its ring, so no frame is lost; when it is disconnected for good
 * (4014, or a close the bot must answer by rejoining) the session pauses with the reason, and
 * plays on from there once a new voice state makes the connection ready.
 *
 * What happens to frames that are late: a frame whose deadline has passed is still sent, at
 * once and in order — nothing is skipped for lateness, so `wait` loses nothing — and counted as
 * late when it goes out more than one frame time after its deadline. After a stall the player
 * catches up at most MAX_FRAMES_PER_WAKE frames per wake; if it is still more than
 * CATCH_UP_LIMIT_MS behind, it re-anchors its clock (counted as a resync) rather than
 * bursting seconds of audio at listeners.
 *
 * An underrun (the ring ran dry while playing) is a stall of the feed: the player buffers again,
 * and when the prebuffer is back it keeps its schedule as far as the ring allows, taking back
 * the gap with the frames beyond the prebuffer (a feed that was held up arrives in a burst), so
 * a short hold-up does not delay the rest of the track for good; a feed that only trickles back
 * in restarts the clock from now, as a first start does.
 *
 * A splice changes the sound (gain, filters) of the track with no gap: main asks for one
 * (spliceAt) and the player names the ring record `cut` a lead of frames ahead; main starts the
 * engine's new play at the track frame the player reaches there and, at that play's `ready`,
 * says where its first frame is in the ring (spliceTo). The player plays the old frames up to
 * the cut, discards those after it, and goes on with the new play's first frame. The old frames
 * after the cut are never played; new frames not there yet at the cut are waited for as in an
 * underrun.
 *
 * A player can move to another thread mid-track (handOff, then takeOver by a player there): it
 * leaves between two wakes and the new one goes on in the same status on the same deadline,
 * translated to its own thread's clock, so the frames go on as if nothing had happened.
 */
import { recordsToPlay, type Ring } from '../shared/ring.js';
import { FRAME_MS, FRAME_SAMPLES } from '../shared/audio.js';
import { Histogram } from '../shared/histogram.js';
import { Control, type NoListenerBehavior, type PlayerHandOff, type PlayerStatus, type SessionInit, type SplicePoint, type WorkerSessionStats } from '../shared/worker-messages.js';
import type { EgressBatch } from './egress-batch.js';
import type { Pacer } from './scheduler.js';
import { RtpSinks } from './rtp-sink.js';
import type { VoiceLink } from './voice-link.js';

const MAX_FRAMES_PER_WAKE = 10;
const CATCH_UP_LIMIT_MS = 200;
/** How often a buffering player looks at its ring: often at first, for a quick start. */
const BUFFER_POLL_FAST_MS = 2;
const BUFFER_POLL_SLOW_MS = 20;
const BUFFER_FAST_FOR_MS = 200;
/** How long before its first packet a voice connection's Speaking goes out. */
const SPEAKING_LEAD_MS = 5;
/** How often a player held by a slow listener checks whether it may go on. */
const HOLD_POLL_MS = 5;

export interface PlayerHost {
  batch: EgressBatch;
  /** Where a frame nobody on WebSocket hears is read to (for RTP, or to discard). */
  scratch: Uint8Array;
  postStatus(sid: number, status: PlayerStatus, reason?: string): void;
  now(): number;
  /** now()'s zero, in ms since the epoch: where a hand-off's times are translated. */
  timeOrigin: number;
  /**
   * When a clock (re)started at `now` has its first deadline: the thread's next grid point, so
   * that the sessions of one thread share a few phases and are served in a few wakes, one
   * message each, instead of one wake and one message per session per frame.
   */
  clockStart(now: number): number;
}

export class SessionPlayer implements Pacer {
  wakeAt = Infinity;
  heapIndex = -1;

  readonly sid: number;
  readonly sessionId: string;
  private status: PlayerStatus = 'idle';
  private readonly control: Int32Array;
  private readonly maxPayload: number;
  private readonly prebufferFrames: number;
  private readonly noListener: NoListenerBehavior;
  private listeners: number;
  private seq: number;
  private timestamp: number;
  /** Deadline of the next frame while playing. */
  private deadline = 0;
  private bufferingSince = 0;
  /** While buffering after an underrun: the deadline of the frame that was missing. */
  private missedDeadline: number | undefined;
  private held = false;
  private endOfStream = false;
  private crashRequested = false;
  /** Paused because the voice connection was lost: a ready connection resumes it. */
  private voicePaused = false;
  /**
   * A splice under way: the ring's records from `cut` up to `to` are the old play's, skipped;
   * `to` (the new play's first record) is unknown until main says.
   */
  private splice: { cut: number; to: number | undefined } | undefined;
  private readonly lateness = new Histogram(1000, 0.1);
  readonly rtp: RtpSinks;
  /** The session's Discord voice connection, while it has one (set by its slot). */
  voice: VoiceLink | undefined;

  constructor(
    init: SessionInit,
    private readonly ring: Ring,
    maxPayload: number,
    private readonly host: PlayerHost,
    /** Called once when the player finishes or fails. */
    private readonly onEnded: () => void,
  ) {
    this.sid = init.sid;
    this.sessionId = init.sessionId;
    this.control = new Int32Array(init.control);
    this.maxPayload = maxPayload;
    this.prebufferFrames = init.prebufferFrames;
    this.noListener = init.noListener;
    this.listeners = init.listeners;
    this.seq = init.nextSeq;
    this.timestamp = init.nextTimestamp;
    this.rtp = new RtpSinks(() => {
      /* A vanished RTP receiver is not this session's failure; its packets just go nowhere. */
    });
  }

  /**
   * The player's state for a player on another thread to go on from; undefined while a splice
   * is under way (main's spliceTo would find the wrong player) or with a voice connection. The
   * caller takes it off the scheduler.
   */
  handOff(): PlayerHandOff | undefined {
    if (this.splice || this.voice) return undefined;
    const origin = this.host.timeOrigin;
    return {
      status: this.status,
      deadline: origin + this.deadline,
      bufferingSince: origin + this.bufferingSince,
      ...(this.missedDeadline === undefined ? {} : { missedDeadline: origin + this.missedDeadline }),
      held: this.held,
      endOfStream: this.endOfStream,
      nextSeq: this.seq,
      nextTimestamp: this.timestamp,
      rtp: this.rtp.handOff(origin),
    };
  }

  /**
   * Goes on from another player's hand-off (this one attached and not started): its status,
   * deadline, seq and timestamp, its RTP streams' last sends. Returns when to wake: the next
   * frame's deadline, at once to buffer or to see whether a hold is over.
   */
  takeOver(handed: PlayerHandOff): number {
    const origin = this.host.timeOrigin;
    this.status = handed.status;
    this.deadline = handed.deadline - origin;
    this.bufferingSince = handed.bufferingSince - origin;
    this.missedDeadline = handed.missedDeadline === undefined ? undefined : handed.missedDeadline - origin;
    this.held = handed.held;
    this.endOfStream = handed.endOfStream;
    this.seq = handed.nextSeq;
    this.timestamp = handed.nextTimestamp;
    for (const { target, stream, lastSentAt } of handed.rtp) this.rtp.adopt(target, stream, lastSentAt - origin);
    if (this.status === 'buffering' || (this.status === 'playing' && this.held)) return this.host.now();
    return this.status === 'playing' ? this.deadline : Infinity;
  }

  get current(): PlayerStatus {
    return this.status;
  }

  get nextSeq(): number {
    return this.seq;
  }

  get nextTimestamp(): number {
    return this.timestamp;
  }

  /** Begins a track: buffering (or paused, holding the buffer, when asked). */
  reset(paused: boolean): number {
    this.endOfStream = false;
    this.splice = undefined;
    this.held = false;
    this.voicePaused = false;
    if (paused) {
      this.setStatus('paused');
      return Infinity;
    }
    return this.enterBuffering(this.host.now());
  }

  pause(): number {
    this.voicePaused = false;
    if (!this.isActive()) return this.wakeAt;
    this.setStatus('paused');
    return this.trailingSilence(this.host.now());
  }

  /** The track is stopped (its slot stays for the voice connection): idle after the silence. */
  stop(): number {
    this.endOfStream = false;
    this.splice = undefined;
    this.held = false;
    this.voicePaused = false;
    const wasActive = this.isActive();
    this.setStatus('idle');
    return wasActive ? this.trailingSilence(this.host.now()) : Infinity;
  }

  /** The voice connection changed state (or came or went): hold, pause, or play on. */
  voiceChanged(reason?: string): number {
    const now = this.host.now();
    const voice = this.voice;
    if (voice?.status === 'disconnected') {
      if (this.status === 'buffering' || this.status === 'playing') {
        this.voicePaused = true;
        this.held = false;
        this.setStatus('paused', reason ?? 'voice disconnected');
        return Infinity;
      }
      return this.wakeAt;
    }
    if (this.voicePaused && this.status === 'paused' && voice?.ready) {
      this.voicePaused = false;
      return this.continuePlaying(now);
    }
    if (this.held && this.status === 'playing') return now;
    return this.reconsider();
  }

  resume(): number {
    if (this.status !== 'paused' && this.status !== 'autopaused') return this.wakeAt;
    return this.continuePlaying(this.host.now());
  }

  markEndOfStream(): number {
    this.endOfStream = true;
    return this.status === 'buffering' ? this.host.now() : this.wakeAt;
  }

  /**
   * Starts a splice `lead` frames ahead (see the top of this file). Only while frames go out on
   * the clock with at least `lead` of them in the ring, one splice at a time, and not after the
   * track's last frame has come (the ring then ends the track).
   */
  spliceAt(lead: number): SplicePoint | undefined {
    if (this.status !== 'playing' || this.held || this.splice || this.endOfStream) return undefined;
    if (this.ring.records() < lead) return undefined;
    const cut = (this.ring.removeCount() + lead) >>> 0;
    this.splice = { cut, to: undefined };
    return { cut, sent: Atomics.load(this.control, Control.Sent) + lead };
  }

  /** The new play's first frame is ring record `record`. */
  spliceTo(record: number): number {
    if (!this.splice) return this.wakeAt;
    this.splice.to = record >>> 0;
    return this.status === 'buffering' ? this.host.now() : this.wakeAt;
  }

  /** The splice is not made: the ring's frames all play. */
  cancelSplice(): number {
    if (!this.splice) return this.wakeAt;
    this.splice = undefined;
    return this.status === 'buffering' ? this.host.now() : this.wakeAt;
  }

  setListeners(count: number): number {
    this.listeners = count;
    return this.reconsider();
  }

  /** After listeners or RTP sinks changed: an autopaused player someone now hears plays on. */
  reconsider(): number {
    if (this.status === 'autopaused' && this.audible()) return this.continuePlaying(this.host.now());
    return this.wakeAt;
  }

  requestCrash(): void {
    this.crashRequested = true;
  }

  stats(): Omit<WorkerSessionStats, 'threadWakesSlept' | 'threadId'> {
    const p = this.lateness.percentiles();
    return {
      status: this.status,
      sent: Atomics.load(this.control, Control.Sent),
      late: Atomics.load(this.control, Control.Late),
      underruns: Atomics.load(this.control, Control.Underruns),
      sendLatenessMs: { p50: p.p50, p99: p.p99, max: p.max, count: p.count },
      rtp: this.rtp.info(),
      ...(this.voice ? { voice: this.voice.stats() } : {}),
    };
  }

  /** Ends the player for good: no more wakes. */
  end(status: 'finished' | 'error', reason?: string): void {
    this.setStatus(status, reason);
    this.onEnded();
  }

  wake(now: number): number {
    // An exception ends this session only, never the thread or the other sessions on it.
    try {
      if (this.crashRequested) {
        this.crashRequested = false;
        throw new Error('debug: session crash requested');
      }
      if (this.voice && this.voice.silenceLeft > 0 && this.status !== 'playing' && this.status !== 'buffering') {
        // The trailing silence after a pause, a stop or the end, on the frames' own cadence.
        if (this.deadline <= now) {
          this.voice.silenceStep();
          this.deadline += FRAME_MS;
        }
        return this.voice.silenceLeft > 0 ? this.deadline : Infinity;
      }
      switch (this.status) {
        case 'buffering':
          return this.buffering(now);
        case 'playing':
          return this.playing(now);
        default:
          return Infinity;
      }
    } catch (err) {
      this.end('error', `session worker failed: ${(err as Error).message}`);
      return Infinity;
    }
  }

  private isActive(): boolean {
    return this.status === 'buffering' || this.status === 'playing' || this.status === 'autopaused';
  }

  private audible(): boolean {
    return this.noListener === 'play' || this.listeners > 0 || this.rtp.count > 0 || this.voice !== undefined;
  }

  /**
   * The first deadline of a clock (re)started at `now`. A voice connection that is not speaking
   * says so first, SPEAKING_LEAD_MS ahead: written at once, the Speaking message could otherwise
   * reach the server after the first datagram.
   */
  private restartClock(now: number): number {
    const voice = this.voice;
    if (voice?.ready && !voice.isSpeaking) {
      voice.speaking(true);
      return this.host.clockStart(now + SPEAKING_LEAD_MS);
    }
    voice?.speaking(true);
    return this.host.clockStart(now);
  }

  /** After audio stopped going out: five silence frames on the clock, if the voice was speaking. */
  private trailingSilence(now: number): number {
    if (!this.voice?.beginSilence()) return Infinity;
    this.deadline = Math.max(this.deadline, this.host.clockStart(now));
    return this.deadline;
  }

  private continuePlaying(now: number): number {
    if (this.playable() === 0) return this.enterBuffering(now);
    // Resume plays the buffered audio at once: the next frame is due at the next grid point.
    this.setStatus('playing');
    this.held = false;
    this.deadline = this.restartClock(now);
    return this.deadline;
  }

  private enterBuffering(now: number, missedDeadline?: number): number {
    this.setStatus('buffering');
    this.bufferingSince = now;
    this.missedDeadline = missedDeadline;
    return now;
  }

  private buffering(now: number): number {
    if (!this.audible()) {
      this.setStatus('autopaused');
      return Infinity;
    }
    const have = this.playable();
    if (have >= this.prebufferFrames || (this.endOfStream && have > 0)) {
      this.setStatus('playing');
      this.deadline = this.afterBuffering(now, have);
      return this.playing(now);
    }
    if (this.endOfStream) {
      this.end('finished');
      return Infinity;
    }
    return now + (now - this.bufferingSince < BUFFER_FAST_FOR_MS ? BUFFER_POLL_FAST_MS : BUFFER_POLL_SLOW_MS);
  }

  /**
   * The first deadline once buffered: a restarted clock, or after an underrun the schedule kept,
   * back to the missed frame when the ring holds that many frames beyond the prebuffer.
   */
  private afterBuffering(now: number, have: number): number {
    const missed = this.missedDeadline;
    this.missedDeadline = undefined;
    const restart = this.restartClock(now);
    if (missed === undefined || now - missed > CATCH_UP_LIMIT_MS) return restart;
    return Math.max(missed, restart - Math.max(0, have - this.prebufferFrames) * FRAME_MS);
  }

  private playing(now: number): number {
    if (!this.audible()) {
      this.setStatus('autopaused');
      return Infinity;
    }
    if (Atomics.load(this.control, Control.EgressBlocked) !== 0) {
      this.held = true;
      return now + HOLD_POLL_MS;
    }
    if (this.voice && !this.voice.ready) {
      // Connecting or resuming: the frames wait in the ring. voiceChanged() wakes the player.
      this.held = true;
      return Infinity;
    }
    if (this.held) {
      // A slow listener caught up, or the voice connection is ready again: go on from here, the
    // held frames all still to come.
      this.held = false;
      this.deadline = this.restartClock(now);
    }
    let sent = 0;
    while (this.deadline <= now && sent < MAX_FRAMES_PER_WAKE) {
      if (!this.sendOne()) {
        if (this.endOfStream) {
          this.end('finished');
          return this.trailingSilence(now);
        }
        Atomics.add(this.control, Control.Underruns, 1);
        return this.enterBuffering(now, this.deadline);
      }
      const late = now - this.deadline;
      this.lateness.record(late);
      if (late > FRAME_MS) Atomics.add(this.control, Control.Late, 1);
      this.deadline += FRAME_MS;
      sent++;
    }
    if (now - this.deadline > CATCH_UP_LIMIT_MS) {
      this.deadline = this.host.clockStart(now + FRAME_MS);
      Atomics.add(this.control, Control.Resyncs, 1);
    }
    return this.deadline;
  }

  /** Frames in the ring that are to be played: a splice's skipped ones, and those after its cut while its new play's place is unknown, are not. */
  private playable(): number {
    const splice = this.splice;
    return splice ? recordsToPlay(this.ring, splice.cut, splice.to) : this.ring.records();
  }

  /**
   * At a splice's cut, skips the old play's frames up to the new play's first. False when the
   * next frame is not to be played now: the cut is reached and the new play's place unknown.
   */
  private passSplice(): boolean {
    const splice = this.splice!;
    const removed = this.ring.removeCount();
    if (((removed - splice.cut) | 0) < 0) return true;
    if (splice.to === undefined) return false;
    const skip = (splice.to - removed) | 0;
    if (skip > 0) this.ring.discard(skip);
    this.splice = undefined;
    return true;
  }

  /** Takes one frame from the ring and delivers it; false when the ring is empty. */
  private sendOne(): boolean {
    if (this.splice && !this.passSplice()) return false;
    let payload: Uint8Array;
    if (this.listeners > 0) {
      const { bytes, offset } = this.host.batch.reserve(this.maxPayload);
      const len = this.ring.readInto(bytes, offset);
      if (len < 0) return false;
      this.host.batch.commit(this.sid, this.seq, this.timestamp, len);
      payload = bytes.subarray(offset, offset + len);
    } else {
      const len = this.ring.readInto(this.host.scratch, 0);
      if (len < 0) return false;
      payload = this.host.scratch.subarray(0, len);
    }
    if (this.rtp.count > 0) this.rtp.send(payload, this.seq, this.timestamp);
    this.voice?.send(payload);
    this.seq = (this.seq + 1) >>> 0;
    this.timestamp = (this.timestamp + FRAME_SAMPLES) >>> 0;
    Atomics.add(this.control, Control.Sent, 1);
    return true;
  }

  private setStatus(status: PlayerStatus, reason?: string): void {
    if (this.status === status) return;
    this.status = status;
    this.host.postStatus(this.sid, status, reason);
  }
}
