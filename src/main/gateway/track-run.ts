/**
 * One play of a track as the gateway's main thread follows it, from the play asked of the engine
 * to its end: what the engine answered and whether its `ready` came (which decides if its frames
 * are taken), the credit it holds, whether its input has ended or its connection was lost, and
 * what the session's worker last reported. A GatewaySession's under-way states carry one; a new
 * play gets a new one, so nothing of an earlier track's leaks into the next.
 */
import { Ring, recordBytes, recordsToPlay } from '../../shared/ring.js';
import { OggPacketReader, startsWithOggCapture } from '../../shared/ogg.js';
import { logger } from '../../shared/log.js';
import { FRAMES_PER_SECOND, framesIn, maxPayloadBytes, type AudioFormat } from '../../shared/audio.js';
import { playbackRate, type Sound } from '../../shared/audio-filters.js';
import type { PlayerStatus } from '../../shared/session-state.js';
import type { DemuxCounters } from './counters.js';

const log = logger('gateway');

/** Formats a listener can be sent: Opus packets (PCM is for engine clients, not listeners). */
export type StreamFormat = Extract<AudioFormat, 'opus' | 'web'>;

export function isStreamFormat(value: unknown): value is StreamFormat {
  return value === 'opus' || value === 'web';
}

export interface Track {
  url: string;
  format: StreamFormat;
  /** Seconds into the source where the play starts (a seek's target). */
  startAt: number;
  /** Seconds of the whole source, once the engine said. */
  duration?: number;
  /** Gain and filters the engine applies (none when absent); a seek keeps them. */
  sound?: Sound;
  /** The queue item this track plays (src/main/gateway/queue.ts), when the queue started it. */
  item?: number;
}

/**
 * How a track's payloads come: one Opus packet a frame (chorus, the seed), or an Ogg Opus byte
 * stream cut anywhere (natashi's engine), told apart by its first payload.
 */
type PayloadKind = 'unknown' | 'packets' | 'ogg';

export class TrackRun {
  /** The engine's play number, once its play answer came (a seed engine gives none). */
  private play: number | undefined;
  /** The engine took the play: credit may be granted for it. */
  private answered = false;
  /** The play number the `ready` carried, once it came. */
  private readyPlay: number | undefined;
  private readySeen = false;
  /** Frames the engine may still send under credit already granted. */
  private outstanding = 0;
  /** The engine said `finished`: no more frames are to come. */
  private inputEnded = false;
  /** The engine connection dropped while this track played; it is being checked. */
  private lost = false;
  /** The worker's last report for this track, and why (a pause for lost voice). */
  player: { status: PlayerStatus; reason?: string } = { status: 'buffering' };
  /** The gateway is releasing the track: the worker's pause is its doing, not news for listeners. */
  releasing = false;
  private readyTimer: NodeJS.Timeout | undefined;
  private payloadKind: PayloadKind = 'unknown';
  private ogg: OggPacketReader | undefined;
  /** The credit flag of the frame being demuxed, for the Ogg reader's packets. */
  private oggCredit = false;
  private oversizeLogged = false;
  /**
   * A splice's run (a sound change of the track under way): the ring record of the cut, and of
   * this play's first frame once its `ready` came. The old play's records between are skipped
   * by the worker: they take no room from this play's credit.
   */
  private spliced: { cut: number; first: number | undefined } | undefined;

  constructor(
    readonly track: Track,
    private readonly sessionId: string,
    private readonly ring: Ring,
    private readonly ringMs: number,
    private readonly counters: DemuxCounters,
  ) {}

  /** The engine accepted the play and numbered it (a seed engine does not). */
  answer(play: number | undefined): void {
    this.play = play;
    this.answered = true;
  }

  /** The engine's play number, once its answer came. */
  get playNumber(): number | undefined {
    return this.play;
  }

  /**
   * A follower's run takes over from the run before it on the same ring (a gapless change):
   * the credit granted to that run and not yet used is this one's now, as in the engine.
   */
  takeOver(from: TrackRun): void {
    this.outstanding = from.outstanding;
    from.outstanding = 0;
  }

  /** This run continues the audio of the run before it, from ring record `cut` on (a splice). */
  spliceAfter(cut: number): void {
    this.spliced = { cut, first: undefined };
  }

  /** This run is a splice's: the track plays on meanwhile, it does not start. */
  get splicing(): boolean {
    return this.spliced !== undefined;
  }

  /** A splice's `ready`: this play's frames begin at ring record `first`. */
  spliceFrom(first: number): void {
    if (this.spliced) this.spliced.first = first;
  }

  /** The track's `ready` has come. */
  get ready(): boolean {
    return this.readySeen;
  }

  /** Takes a `ready`; false when it is an earlier play's. */
  takeReady(play: number | undefined): boolean {
    if (play !== undefined) {
      if (this.play !== undefined && play < this.play) return false;
      this.readyPlay = play;
    }
    this.readySeen = true;
    this.clearReadyTimer();
    return true;
  }

  /** An engine event is for an earlier play of this id than this one. */
  isStale(play: number | undefined): boolean {
    if (play !== undefined && this.play !== undefined) return play < this.play;
    // Without play numbers, a finish before this track's `ready` is the old track's.
    return !this.readySeen;
  }

  /** Frames are taken into the ring: the `ready` of this play (or a later one) has come. */
  get accepting(): boolean {
    return this.readySeen && (this.play === undefined || this.readyPlay === undefined || this.readyPlay >= this.play);
  }

  get ended(): boolean {
    return this.inputEnded;
  }

  /** The engine has sent the track's last frame. */
  endInput(): void {
    this.inputEnded = true;
  }

  get engineLost(): boolean {
    return this.lost;
  }

  set engineLost(lost: boolean) {
    this.lost = lost;
  }

  /** Calls `expired` after `ms` unless the `ready` has come (or the run was closed) by then. */
  awaitReady(ms: number, expired: () => void): void {
    this.clearReadyTimer();
    this.readyTimer = setTimeout(() => {
      this.readyTimer = undefined;
      if (!this.readySeen) expired();
    }, ms);
  }

  /** The run is over (its session left the track): no timer of it may fire. */
  close(): void {
    this.clearReadyTimer();
  }

  private clearReadyTimer(): void {
    if (this.readyTimer) clearTimeout(this.readyTimer);
    this.readyTimer = undefined;
  }

  // ---- frames and credit ----

  /** One frame from the engine for this track (the demux's hot path). */
  acceptFrame(buf: Buffer, start: number, end: number, credit: boolean): void {
    if (!this.accepting) {
      this.counters.framesStale++;
      return;
    }
    // Only an engine without credit (no `hello`) may be natashi's, sending Ogg.
    if (this.payloadKind === 'unknown') this.payloadKind = !credit && startsWithOggCapture(buf, start) ? 'ogg' : 'packets';
    if (this.payloadKind === 'packets') return this.acceptPacket(buf, start, end, credit);
    this.ogg ??= new OggPacketReader((bytes, s, e) => this.acceptPacket(bytes, s, e, this.oggCredit));
    this.oggCredit = credit;
    this.ogg.push(buf.subarray(start, end));
  }

  /** One Opus packet into the ring; one larger than an Opus packet can be is refused. */
  private acceptPacket(buf: Uint8Array, start: number, end: number, credit: boolean): void {
    const limit = maxPayloadBytes(this.track.format);
    if (end - start > limit) {
      // The worker takes records of up to one packet: a larger one would kill it.
      this.counters.framesOversize++;
      if (!this.oversizeLogged) {
        this.oversizeLogged = true;
        log.warn('refused an engine payload larger than an Opus packet', { session: this.sessionId, bytes: end - start, limit });
      }
      return;
    }
    this.counters.framesRouted++;
    if (credit) {
      if (this.outstanding > 0) this.outstanding--;
      if (!this.ring.write(buf, start, end)) this.counters.framesOverrun++;
      return;
    }
    this.ring.writeDroppingOldest(buf, start, end);
  }

  /** Frames to grant now so that ring + in flight never exceed the ring (0: not worth a line). */
  creditDue(): number {
    if (!this.answered) return 0;
    const ring = this.ring;
    const maxRecord = recordBytes(maxPayloadBytes(this.track.format));
    // Free space may lie on both sides of the ring's end: one record's worth can be lost to the wrap.
    const byBytes = Math.floor(ring.freeBytes() / maxRecord) - 1;
    const byFrames = framesIn(this.ringMs) - this.recordsToPlay();
    const due = Math.min(byBytes, byFrames) - this.outstanding;
    const batch = Math.max(1, Math.min(10, Math.floor(framesIn(this.ringMs) / 8)));
    // Less than a batch only when the ring runs low with nothing in flight: with a full ring a
    // frame-sized grant every tick would be a credit line per frame (the load test saw one per frame).
    return due >= batch || (due > 0 && this.outstanding === 0 && this.recordsToPlay() < batch) ? due : 0;
  }

  private recordsToPlay(): number {
    const spliced = this.spliced;
    return spliced ? recordsToPlay(this.ring, spliced.cut, spliced.first) : this.ring.records();
  }

  /** Grants what is due: the frames to send the engine in a credit line (0: none now). */
  grantCredit(): number {
    const frames = this.creditDue();
    if (frames > 0) this.outstanding += frames;
    return frames;
  }

  /** A new engine connection: its windows start at zero, so nothing granted before is in flight. */
  forgetCredit(): void {
    this.outstanding = 0;
  }

  /** Frames granted and not yet come. */
  get inFlight(): number {
    return this.outstanding;
  }

  /** The worker plays and waits for frames that only the engine can send. */
  awaitsEngine(credit: boolean): boolean {
    return this.readySeen && !this.inputEnded && (!credit || this.outstanding > 0);
  }
}
