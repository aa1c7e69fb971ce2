/**
 * A session as the gateway's main thread holds it: an explicit state machine (one `state` setter
 * that tells every listener), its ring (main produces into it), the credit it has granted the
 * engine, its WebSocket listeners, and the worker slot that paces it.
 */
import type { WebSocket } from 'ws';
import { Ring, recordBytes } from '../../shared/ring.js';
import { FRAME_MS, framesIn, maxPayloadBytes, type AudioFormat } from '../../shared/audio.js';
import type { ListenerEvent, SessionStateName } from '../../shared/listener-protocol.js';
import type { SessionSummary } from '../../shared/gateway-api.js';
import { CONTROL_WORDS, Control, type PlayerStatus, type RtpTarget, type VoiceEvent, type VoiceServerState } from '../../shared/worker-messages.js';
import { logger } from '../../shared/log.js';
import { HIGH_WATER_BYTES, Listener, type SlowListenerPolicy } from './listener.js';
import type { Slot } from './slot-pool.js';

/** Formats a listener can be sent: Opus packets (PCM is for engine clients, not listeners). */
export type StreamFormat = Extract<AudioFormat, 'opus' | 'web'>;

export interface Track {
  url: string;
  format: StreamFormat;
  startAt: number;
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

const NOMINAL_BITRATE: Record<StreamFormat, number> = { opus: 128_000, web: 256_000 };

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
  /** Hears every event the listeners hear, listeners or not (a Lavalink player: src/main/lavalink). */
  observer: ((event: ListenerEvent) => void) | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly id: string,
    readonly sid: number,
    private readonly ringMs: number,
    private readonly slowPolicy: SlowListenerPolicy,
  ) {}

  get state(): SessionState {
    return this.current;
  }

  set state(next: SessionState) {
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
    this.playerStatus = 'buffering';
    this.state = { status: 'starting', track };
    return { ringChanged };
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

  /** An engine event is for an earlier play of this id than the current one. */
  isStale(play: number | undefined): boolean {
    if (play !== undefined && this.expectPlay !== undefined) return play < this.expectPlay;
    // Without play numbers, a finish before the current track's `ready` is the old track's.
    return !this.readySeen;
  }

  onReady(play: number | undefined, duration: number | undefined): void {
    if (play !== undefined) {
      if (this.expectPlay !== undefined && play < this.expectPlay) return;
      this.readyPlay = play;
    }
    this.readySeen = true;
    this.updateAccepting();
    const track = this.track;
    if (track && duration !== undefined) track.duration = duration;
    const event: ListenerEvent = { type: 'ready', session: this.id };
    if (duration !== undefined) event.duration = duration;
    this.broadcast(event);
    this.refresh();
  }

  private updateAccepting(): void {
    this.accepting =
      this.readySeen &&
      (this.expectPlay === undefined || this.readyPlay === undefined || this.readyPlay >= this.expectPlay);
  }

  /** One frame from the engine for this session (the demux's hot path). */
  acceptFrame(buf: Buffer, start: number, end: number, credit: boolean): 'taken' | 'stale' | 'overrun' | 'dropped' {
    const ring = this.ring;
    if (!this.accepting || !ring) return 'stale';
    if (end - start > ring.maxPayload) return 'overrun';
    if (credit) {
      if (this.outstanding > 0) this.outstanding--;
      return ring.write(buf, start, end) ? 'taken' : 'overrun';
    }
    return ring.writeDroppingOldest(buf, start, end) > 0 ? 'dropped' : 'taken';
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
    if (!track || !this.active) return;
    const s = this.playerStatus;
    if (s === 'paused' || s === 'autopaused') this.state = this.playerReason === undefined ? { status: s, track } : { status: s, track, reason: this.playerReason };
    else if (!this.readySeen) this.state = { status: 'starting', track };
    else if (s === 'buffering' || s === 'playing') this.state = { status: s, track };
  }

  fail(reason: string): void {
    this.endTrack();
    this.state = { status: 'error', reason };
    this.broadcast({ type: 'error', session: this.id, message: reason });
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

  addListener(ws: WebSocket): void {
    this.listeners.set(ws, new Listener(ws, Date.now()));
    this.lastActive = Date.now();
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
      ws.send(frame);
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
    for (const ws of this.listeners.keys()) ws.send(text);
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
    const reason = reasonOf(state);
    if (reason !== undefined) out.reason = reason;
    const track = this.track;
    if (track) out.url = track.url;
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
