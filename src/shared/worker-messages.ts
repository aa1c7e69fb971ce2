/**
 * Everything that crosses the gateway's thread boundary, in one module for both sides.
 *
 * Main → worker
 *   piscina task  SlotTask: one task is one session slot. It runs until its session ends and
 *                 resolves with SlotResult, where the next play's seq and timestamp continue.
 *   comlink       SlotApi over SlotTask.port: attach a session, reset for a new track, pause,
 *                 resume, end of stream, listener count, RTP sinks, stats, close.
 * Worker → main
 *   egress port   one per thread, handed to main with the thread's first attach:
 *                 'frames'  an ArrayBuffer of entries  u32 sid · u32 bytes · listener frame · pad
 *                           to 4 (native endianness: both ends are the same process), `used`
 *                           bytes of it filled
 *                 'state'   a session's player changed state (buffering, playing, finished, …)
 * Shared memory per session
 *   ring          src/shared/ring.ts: main produces frames, the worker consumes them
 *   control       Int32Array of CONTROL_WORDS: a flag main sets, counters the worker keeps, so
 *                 GET /sessions reads every session without a round trip
 */
import type { AudioFormat } from './audio.js';
import type { MessagePort } from 'node:worker_threads';

/** Indices into a session's control Int32Array. */
export const Control = {
  /** Main sets 1 while a listener is too slow under CHORUS_SLOW_LISTENER=wait: the worker holds. */
  EgressBlocked: 0,
  /** The worker's PlayerStatus, as its index in PLAYER_STATUSES. */
  Status: 1,
  /** Frames taken from the ring and delivered. */
  Sent: 2,
  /** Frames sent more than one frame time after their deadline. */
  Late: 3,
  /** Times the ring ran dry while playing. */
  Underruns: 4,
  /** Times the clock was re-anchored because it fell more than CATCH_UP_LIMIT_MS behind. */
  Resyncs: 5,
  /** Ticks spent holding for a slow listener. */
  HeldTicks: 6,
} as const;
export const CONTROL_WORDS = 8;

export const PLAYER_STATUSES = ['idle', 'buffering', 'playing', 'paused', 'autopaused', 'finished', 'error'] as const;
export type PlayerStatus = (typeof PLAYER_STATUSES)[number];

export type NoListenerBehavior = 'pause' | 'play';

export interface SlotTask {
  port: MessagePort;
}

export interface SlotResult {
  nextSeq: number;
  nextTimestamp: number;
}

export interface SessionInit {
  /** Main's number for the session: egress entries carry it. */
  sid: number;
  sessionId: string;
  format: AudioFormat;
  ring: SharedArrayBuffer;
  control: SharedArrayBuffer;
  prebufferFrames: number;
  noListener: NoListenerBehavior;
  /** WebSocket listeners now. */
  listeners: number;
  nextSeq: number;
  nextTimestamp: number;
}

export interface AttachResult {
  threadId: number;
  /** Present only on the thread's first attach: where its frames and state changes come from. */
  egress?: MessagePort;
}

export interface RtpTarget {
  host: string;
  port: number;
  /**
   * The stream this target already has, when the session re-adds it to a new worker slot (next
   * track): SSRC, seq and timestamp then run on. Absent on a first add: the worker picks one.
   */
  stream?: RtpStream;
}

/** One RTP stream's identity: RTP seq = session seq + seqOffset, RTP timestamp = session timestamp + timestampOffset. */
export interface RtpStream {
  ssrc: number;
  seqOffset: number;
  timestampOffset: number;
}

export interface RtpSinkInfo {
  host: string;
  port: number;
  ssrc: number;
  packets: number;
  stream: RtpStream;
}

export interface WorkerSessionStats {
  status: PlayerStatus;
  sent: number;
  late: number;
  underruns: number;
  /** Lateness of sends against the session's own 20 ms deadlines, in ms. */
  sendLatenessMs: { p50: number; p99: number; max: number; count: number };
  rtp: RtpSinkInfo[];
}

export interface SlotApi {
  /** Resolves once the slot's task is running on a thread (so it is warm). */
  ready(): boolean;
  attach(init: SessionInit): AttachResult;
  /** A new track (play, seek): wait for a prebuffer again; seq and timestamp continue. */
  reset(paused: boolean): PlayerStatus;
  pause(): PlayerStatus;
  resume(): PlayerStatus;
  /** Main has written the track's last frame: finish once the ring is drained. */
  endOfStream(): PlayerStatus;
  setListeners(count: number): PlayerStatus;
  addRtpSink(target: RtpTarget): RtpSinkInfo;
  removeRtpSink(target: RtpTarget): boolean;
  stats(): WorkerSessionStats;
  /** Ends the slot's task (stop, or the session is gone). */
  close(): void;
  /** Debug only: throw inside this session's next tick, or kill the whole thread. */
  crash(kind: 'session' | 'thread'): void;
}

export type EgressMessage =
  | { kind: 'frames'; batch: ArrayBuffer; used: number }
  | { kind: 'state'; sid: number; status: PlayerStatus; reason?: string };

/** Bytes of an egress entry's own header (sid, bytes). */
export const EGRESS_ENTRY_HEADER_BYTES = 8;
