/**
 * A session as the gateway's main thread holds it: an explicit state machine (one `state` setter
 * that tells every listener), its ring (main produces into it), the credit it has granted the
 * engine, its WebSocket listeners, and the worker slot that paces it.
 */
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { Ring, recordBytes } from '../../shared/ring.js';
import { OggPacketReader, startsWithOggCapture } from '../../shared/ogg.js';
import { logger } from '../../shared/log.js';
import { FRAME_MS, FRAMES_PER_SECOND, framesIn, maxPayloadBytes, type AudioFormat } from '../../shared/audio.js';
import type { ListenerEvent, SessionStateName } from '../../shared/listener-protocol.js';
import type { SessionSummary } from '../../shared/gateway-api.js';
import type { ReadyEvent } from '../../shared/protocol.js';
import { CONTROL_WORDS, Control, type PlayerStatus, type RtpTarget, type VoiceEvent, type VoiceServerState } from '../../shared/worker-messages.js';
import { HIGH_WATER_BYTES, Listener, type SlowListenerPolicy } from './listener.js';
import type { Slot } from './slot-pool.js';
import type { Redactor } from '../../shared/redact.js';

/** Formats a listener can be sent: Opus packets (PCM is for engine clients, not listeners). */
export type StreamFormat = Extract<AudioFormat, 'opus' | 'web'>;

export interface Track {
  url: string;
  format: StreamFormat;
  /** Seconds into the source where the play starts (a seek's target). */
  startAt: number;
  /** Seconds of the whole source, once the engine said. */
  duration?: number;
  /** Linear gain the engine applies (1: none); a seek keeps it. */
  gain?: number;
}

type PlayingStatus = 'starting' | 'buffering' | 'playing' | 'paused' | 'autopaused';

const log = logger('gateway');

export type SessionState =
  | { status: 'idle' }
  | { status: PlayingStatus; track: Track; reason?: string }
  | { status: 'finished'; track: Track }
  | { status: 'stopped'; reason?: string }
  | { status: 'error'; reason: string };

/** Why a session is autopaused, for whoever played it and wonders why nothing is heard. */
const NOBODY_LISTENS = 'nobody is listening (CHORUS_NO_LISTENER=pause): it plays as soon as a listener connects to /ws?session=<id> or an RTP sink is added';

const NOMINAL_BITRATE: Record<StreamFormat, number> = { opus: 128_000, web: 256_000 };

/** What the demux counts, over all sessions (the gateway's /metrics). */
export interface DemuxCounters {
  framesRouted: number;
  framesStale: number;
  framesOverrun: number;
  /** Payloads larger than one Opus packet, refused before they reach a ring. */
  framesOversize: number;
}

/**
 * How a track's payloads come: one Opus packet a frame (chorus, the seed), or an Ogg Opus byte
 * stream cut anywhere (natashi's engine), told apart by its first payload.
 */
type PayloadKind = 'unknown' | 'packets' | 'ogg';

export class GatewaySession {
  readonly control = new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * 4));
  readonly listeners = new Map<WebSocket, Listener>();
  private current: SessionState = { status: 'idle' };
  ring: Ring | undefined;
  private ringFormat: StreamFormat | undefined;
  slot: Slot | undefined;
  /** Settles once the previous slot has ended (its result carries seq and timestamp). */
  slotClosing: Promise<void> = Promise.resolve();

  readonly rtpSinks: RtpTarget[] = [];
  /** The bot's voice state, while the session is to be in a voice channel. */
  voice: VoiceServerState | undefined;
  /** The voice connection's last reported state. */
  voiceEvent: VoiceEvent | undefined;
  /** Frames the engine may still send under credits already granted. */
  outstanding = 0;
  /** The engine took the current track's play: credit may be granted for it. */
  private creditOpen = false;
  /** Frames of the current track are taken into the ring (its `ready` has come). */
  accepting = false;
  /** The engine's play number for the current track, once its play answer came. */
  expectPlay: number | undefined;
  private readyPlay: number | undefined;
  private readySeen = false;
  /** The engine connection dropped while this track played; it is being checked. */
  engineLost = false;
  /** The engine said `finished`: no more frames are to come for this track. */
  inputEnded = false;
  /** Ends the track in error if its `ready` does not come in time (the gateway sets it). */
  readyTimer: NodeJS.Timeout | undefined;
  private payloadKind: PayloadKind = 'unknown';
  private ogg: OggPacketReader | undefined;
  /** The credit flag of the frame being demuxed, for the Ogg reader's packets. */
  private oggCredit = false;
  private oversizeLogged = false;
  /** The last status the worker reported for the current track, and why (a pause for lost voice). */
  private playerStatus: PlayerStatus = 'idle';
  private playerReason: string | undefined;

  nextSeq = 0;
  nextTimestamp = 0;
  stale = 0;
  skipped = 0;
  /** Frames the ring could not take although credit was granted (an engine overrunning it). */
  overrun = 0;
  /** When the session last had a listener or a change of state, for clean-up (ms epoch). */
  lastActive = Date.now();
  /** When the session entered paused or autopaused (ms epoch), for the idle timeout. */
  pausedSince = 0;
  /**
   * The track's engine play, worker slot and ring were given back (a long pause, the engine lost,
   * a restart of the gateway): it stays paused at `startFrame`, where resume starts it again.
   */
  released = false;
  /** Kept in the session store across restarts; a Lavalink player is not (its client keeps its own). */
  persistent = true;
  /** Frame of the track the current play started at (its start_at, in 20 ms frames). */
  private startFrame = 0;
  /** Control.Sent when the current play started. */
  private sentBase = 0;
  /** Hears every event the listeners hear, listeners or not (a Lavalink player: src/main/lavalink). */
  observer: ((event: ListenerEvent) => void) | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly id: string,
    readonly sid: number,
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

  set state(next: SessionState) {
    if ('reason' in next && next.reason !== undefined) next = { ...next, reason: this.redactor.redact(next.reason) };
    const old = this.current;
    this.current = next;
    this.lastActive = Date.now();
    if (old.status === next.status && reasonOf(old) === reasonOf(next)) return;
    if (next.status === 'paused' || next.status === 'autopaused') {
      if (old.status !== 'paused' && old.status !== 'autopaused') this.pausedSince = Date.now();
    } else this.pausedSince = 0;
    const event: ListenerEvent = { type: 'state', session: this.id, state: next.status };
    const reason = reasonOf(next);
    if (reason !== undefined) event.reason = reason;
    this.broadcast(event);
  }

  get track(): Track | undefined {
    return 'track' in this.current ? this.current.track : undefined;
  }

  /** A track is under way: the engine plays it and the worker paces it. */
  get active(): boolean {
    const s = this.current.status;
    return s === 'starting' || s === 'buffering' || s === 'playing' || s === 'paused' || s === 'autopaused';
  }

  /** Runs control operations of this session one at a time, in order. */
  exclusive<T>(op: () => Promise<T>): Promise<T> {
    const run = this.queue.then(op, op);
    this.queue = run.catch(() => undefined);
    return run;
  }

  // ---- tracks and the ring ----

  /** Format of the ring (opus until a track says otherwise). */
  get format(): StreamFormat {
    return this.ringFormat ?? 'opus';
  }

  /** A ring before any track, for a worker slot that holds only a voice connection so far. */
  ensureRing(): void {
    if (this.ring) return;
    this.ring = Ring.create(ringBytes(this.ringMs, 'opus'));
    this.ringFormat = 'opus';
  }

  /** Prepares for a new track: an empty ring of the right size, no credit, frames refused. */
  beginTrack(track: Track): { ringChanged: boolean } {
    const ringChanged = this.ringFormat !== track.format || !this.ring;
    if (ringChanged) {
      this.ring = Ring.create(ringBytes(this.ringMs, track.format));
      this.ringFormat = track.format;
    } else {
      this.ring!.clear();
    }
    this.outstanding = 0;
    this.creditOpen = false;
    this.accepting = false;
    this.expectPlay = undefined;
    this.readyPlay = undefined;
    this.readySeen = false;
    this.engineLost = false;
    this.inputEnded = false;
    this.clearReadyTimer();
    this.payloadKind = 'unknown';
    this.ogg?.reset();
    this.oversizeLogged = false;
    this.playerStatus = 'buffering';
    this.released = false;
    this.startFrame = Math.round(track.startAt * FRAMES_PER_SECOND);
    this.sentBase = Atomics.load(this.control, Control.Sent);
    this.state = { status: 'starting', track };
    return { ringChanged };
  }

  /**
   * The frame of the track the listeners have reached: where the play started plus the frames the
   * worker has delivered since. Exact, not a clock's estimate: a restart resumes at this frame.
   */
  get positionFrames(): number {
    if (!this.track) return 0;
    if (this.released) return this.startFrame;
    return this.startFrame + (Atomics.load(this.control, Control.Sent) - this.sentBase);
  }

  /**
   * The track gives back its engine play and worker (the caller lets them go) and waits, paused,
   * at frame `frame`; `ring` false drops the ring too. `reason` says why it paused, when not asked;
   * `track` puts back a track a failed play had ended.
   */
  release(frame: number, ring: boolean, reason?: string, track: Track | undefined = this.track): void {
    if (!track) return;
    this.clearReadyTimer();
    this.endTrack();
    if (!ring) {
      this.ring = undefined;
      this.ringFormat = undefined;
    }
    this.released = true;
    this.engineLost = false;
    this.startFrame = Math.max(0, Math.round(frame));
    track.startAt = this.startFrame / FRAMES_PER_SECOND;
    this.playerStatus = 'paused';
    this.playerReason = reason;
    this.state = reason === undefined ? { status: 'paused', track } : { status: 'paused', track, reason };
  }

  /** The engine accepted the play and numbered it (a seed engine does not). */
  playAccepted(play: number | undefined): void {
    this.expectPlay = play;
    this.creditOpen = true;
    this.updateAccepting();
  }

  /** Ends the current track's intake: frames still in flight are refused, the ring emptied. */
  endTrack(): void {
    this.accepting = false;
    this.creditOpen = false;
    this.outstanding = 0;
    this.ring?.clear();
  }

  clearReadyTimer(): void {
    if (this.readyTimer) clearTimeout(this.readyTimer);
    this.readyTimer = undefined;
  }

  /** The current track's `ready` has come. */
  get ready(): boolean {
    return this.readySeen;
  }

  /** An engine event is for an earlier play of this id than the current one. */
  isStale(play: number | undefined): boolean {
    if (play !== undefined && this.expectPlay !== undefined) return play < this.expectPlay;
    // Without play numbers, a finish before the current track's `ready` is the old track's.
    return !this.readySeen;
  }

  onReady(ready: ReadyEvent): void {
    const { play } = ready;
    if (play !== undefined) {
      if (this.expectPlay !== undefined && play < this.expectPlay) return;
      this.readyPlay = play;
    }
    this.readySeen = true;
    this.clearReadyTimer();
    this.updateAccepting();
    const event: ListenerEvent = { type: 'ready', session: this.id };
    const track = this.track;
    if (track) {
      track.startAt = ready.start_at ?? track.startAt;
      // A seed engine sends only `duration`, the seconds this play gives from where it starts.
      const length = ready.track_duration ?? (ready.duration === undefined ? undefined : track.startAt + ready.duration);
      if (length !== undefined) track.duration = length;
      event.startAt = track.startAt;
      if (track.duration !== undefined) event.duration = track.duration;
    }
    this.broadcast(event);
    this.refresh();
  }

  private updateAccepting(): void {
    this.accepting =
      this.readySeen &&
      (this.expectPlay === undefined || this.readyPlay === undefined || this.readyPlay >= this.expectPlay);
  }

  /** One frame from the engine for this session (the demux's hot path). */
  acceptFrame(buf: Buffer, start: number, end: number, credit: boolean): void {
    if (!this.accepting || !this.ring) {
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
    const ring = this.ring!;
    const format = this.ringFormat!;
    if (end - start > maxPayloadBytes(format)) {
      // The worker takes records of up to one packet: a larger one would kill it.
      this.counters.framesOversize++;
      if (!this.oversizeLogged) {
        this.oversizeLogged = true;
        log.warn('refused an engine payload larger than an Opus packet', { session: this.id, bytes: end - start, limit: maxPayloadBytes(format) });
      }
      return;
    }
    this.counters.framesRouted++;
    if (credit) {
      if (this.outstanding > 0) this.outstanding--;
      if (!ring.write(buf, start, end)) this.counters.framesOverrun++;
      return;
    }
    ring.writeDroppingOldest(buf, start, end);
  }

  /** Frames to grant now so that ring + in flight never exceed the ring (0: not worth a line). */
  creditDue(): number {
    const ring = this.ring;
    const format = this.ringFormat;
    if (!ring || !format || !this.creditOpen || !this.active) return 0;
    const maxRecord = recordBytes(maxPayloadBytes(format));
    // Free space may lie on both sides of the ring's end: one record's worth can be lost to the wrap.
    const byBytes = Math.floor(ring.freeBytes() / maxRecord) - 1;
    const byFrames = framesIn(this.ringMs) - ring.records();
    const due = Math.min(byBytes, byFrames) - this.outstanding;
    const batch = Math.max(1, Math.min(10, Math.floor(framesIn(this.ringMs) / 8)));
    // Less than a batch only when the ring runs low with nothing in flight: with a full ring a
    // frame-sized grant every tick would be a credit line per frame (the load test saw one per frame).
    return due >= batch || (due > 0 && this.outstanding === 0 && ring.records() < batch) ? due : 0;
  }

  // ---- the worker's view ----

  onPlayerStatus(status: PlayerStatus, reason?: string): void {
    // A released track's old worker has nothing more to say about it.
    if (this.released) return;
    this.playerStatus = status;
    this.playerReason = reason;
    if (status === 'finished') {
      const track = this.track;
      if (track && this.active) {
        this.state = { status: 'finished', track };
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
  refresh(): void {
    const track = this.track;
    if (!track || !this.active || this.released) return;
    const s = this.playerStatus;
    if (s === 'paused' || s === 'autopaused') this.state = this.playerReason === undefined ? { status: s, track } : { status: s, track, reason: this.playerReason };
    else if (!this.readySeen) this.state = { status: 'starting', track };
    else if (s === 'buffering' || s === 'playing') this.state = { status: s, track };
  }

  fail(reason: string): void {
    this.clearReadyTimer();
    this.endTrack();
    this.state = { status: 'error', reason };
    this.broadcast({ type: 'error', session: this.id, message: reasonOf(this.current)! });
  }

  /** The voice connection changed: every listener (the bot among them) hears of it. */
  onVoice(event: VoiceEvent): void {
    const old = this.voiceEvent;
    this.voiceEvent = event;
    if (old && old.status === event.status && old.reason === event.reason) return;
    if (event.status === 'disconnected') log.warn('voice disconnected', { session: this.id, reason: event.reason, rejoin: event.rejoin });
    this.broadcast({ type: 'voice', session: this.id, ...event });
  }

  // ---- listeners ----

  addListener(ws: WebSocket, socket: Duplex): Listener {
    const listener = new Listener(ws, socket, Date.now(), this.messageRate);
    this.listeners.set(ws, listener);
    this.lastActive = Date.now();
    return listener;
  }

  removeListener(ws: WebSocket): void {
    this.listeners.delete(ws);
    this.lastActive = Date.now();
  }

  /** One paced frame from the worker to every listener (the egress hot path). */
  deliver(frame: Buffer, now: number): void {
    // A batch the worker posted just before a stop, an error or a new play can land after it:
    // its frames belong to a track the listeners were told has ended.
    const s = this.current.status;
    if (s !== 'buffering' && s !== 'playing' && s !== 'paused' && s !== 'autopaused') return;
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
    if (this.listeners.size === 0) return;
    const text = JSON.stringify(event);
    for (const listener of this.listeners.values()) listener.send(text);
  }

  summary(): SessionSummary {
    const ring = this.ring;
    const stats = ring?.stats();
    const state = this.current;
    const out: SessionSummary = {
      id: this.id,
      state: state.status as SessionStateName,
      format: this.ringFormat ?? 'opus',
      ringFrames: stats?.records ?? 0,
      ringCapacityFrames: framesIn(this.ringMs),
      listeners: this.listeners.size,
      rtpSinks: this.rtpSinks.length,
      sent: Atomics.load(this.control, Control.Sent),
      late: Atomics.load(this.control, Control.Late),
      underruns: Atomics.load(this.control, Control.Underruns),
      dropped: stats?.dropped ?? 0,
      skipped: this.skipped,
    };
    const reason = state.status === 'autopaused' ? NOBODY_LISTENS : reasonOf(state);
    if (reason !== undefined) out.reason = reason;
    const track = this.track;
    if (track) {
      out.url = track.url;
      out.startAt = track.startAt;
      out.position = this.positionFrames / FRAMES_PER_SECOND;
      if (track.duration !== undefined) out.duration = track.duration;
    }
    if (this.voice) {
      out.voice = { guildId: this.voice.guildId, channelId: this.voice.channelId, endpoint: this.voice.endpoint, ...(this.voiceEvent ?? { status: 'connecting' }) };
    }
    return out;
  }
}

function reasonOf(state: SessionState): string | undefined {
  return 'reason' in state ? state.reason : undefined;
}

/** Ring bytes for `ms` of audio at twice the format's nominal bitrate (VBR headroom). */
export function ringBytes(ms: number, format: StreamFormat): number {
  const nominal = Math.ceil((NOMINAL_BITRATE[format] / 8) * (FRAME_MS / 1000));
  return Ring.capacityFor(framesIn(ms), Math.min(2 * nominal, maxPayloadBytes(format)));
}
