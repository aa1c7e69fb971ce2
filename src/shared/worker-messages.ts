/**
 * Everything that crosses the gateway's thread boundary, in one module for both sides.
 *
 * Main → worker
 *   piscina task  SlotTask: one task is one session slot. It runs until its session ends and
 *                 resolves with SlotResult, where the next play's seq and timestamp continue.
 *   comlink       SlotApi over SlotTask.port: attach a session, reset for a new track, pause,
 *                 resume, stop, end of stream, a splice (a sound change with no gap), listener
 *                 count, RTP sinks, the Discord voice state, stats, a hand-off (the session
 *                 moves to another thread, mid-track), close.
 * Worker → main
 *   egress port   one per thread, handed to main with the thread's first attach:
 *                 'frames'  an ArrayBuffer of entries  u32 sid · u32 bytes · listener frame · pad
 *                           to 4 (native endianness: both ends are the same process), `used`
 *                           bytes of it filled
 *                 'state'   a session's player changed state (buffering, playing, finished, …)
                 'voice'   a session's Discord voice connection changed state
 * Shared memory per session
 *   ring          src/shared/ring.ts: main produces frames, the worker consumes them
 *   control       Int32Array of CONTROL_WORDS: a flag main sets, counters the worker keeps, so
 *                 GET /sessions reads every session without a round trip
 */
import type { AudioFormat } from './audio.js';
import type { VoiceStatus } from './listener-protocol.js';
import type { PlayerStatus } from './session-state.js';
import type { MessagePort } from 'node:worker_threads';

/** Indices into a session's control Int32Array. */
export const Control = {
  /** Main sets 1 while a listener is too slow under CHORUS_SLOW_LISTENER=wait: the worker holds. */
  EgressBlocked: 0,
  /** Frames taken from the ring and delivered. */
  Sent: 1,
  /** Frames sent more than one frame time after their deadline. */
  Late: 2,
  /** Times the ring ran dry while playing. */
  Underruns: 3,
  /** Times the clock was re-anchored because it fell more than CATCH_UP_LIMIT_MS behind. */
  Resyncs: 4,
} as const;
export const CONTROL_WORDS = Object.keys(Control).length;

export type { PlayerStatus } from './session-state.js';

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
  /** CHORUS_VOICE_UDP_SILENCE_MS, for the session's voice connection. */
  voiceUdpSilenceMs: number;
}

/**
 * A session's player as it leaves its slot for one on another thread, mid-track. Times are ms
 * since the epoch (performance.timeOrigin + the thread's clock): each thread's performance.now()
 * has its own origin. The ring keeps its read position, so the new slot takes the next frame.
 */
export interface PlayerHandOff {
  status: PlayerStatus;
  /** When the next frame is due. */
  deadline: number;
  /** When the player last began buffering. */
  bufferingSince: number;
  /** Buffering after an underrun: the missed frame's deadline, the schedule to keep. */
  missedDeadline?: number;
  /** Held by a slow listener: the clock restarts when it may go on. */
  held: boolean;
  endOfStream: boolean;
  nextSeq: number;
  nextTimestamp: number;
  /** The RTP targets with their streams, and when each last sent (its next packet is no talkspurt). */
  rtp: { target: RtpTarget; stream: RtpStream; lastSentAt: number }[];
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

/**
 * The bot's voice state for one guild, as Discord gave it to the bot: VOICE_STATE_UPDATE
 * (channel, user, session) and VOICE_SERVER_UPDATE (token, endpoint). chorus connects with it.
 */
export interface VoiceServerState {
  guildId: string;
  channelId: string;
  userId: string;
  sessionId: string;
  token: string;
  /** host[:port] of the voice server: chorus opens wss://endpoint and UDP to the address it names. */
  endpoint: string;
}

/** A voice connection's change of state, as the worker reports it. */
export interface VoiceEvent {
  status: VoiceStatus;
  /** Why it is not ready: resuming, a close code's meaning, … */
  reason?: string;
  /** The voice gateway's close code that caused a disconnect. */
  closeCode?: number;
  /** The bot must send its voice state again (rejoin the channel, then PUT …/voice). */
  rejoin?: boolean;
}

/** A voice connection now, for GET /sessions/:id. */
export interface VoiceStats extends VoiceEvent {
  endpoint: string;
  channelId: string;
  /** Round trip of the voice gateway's heartbeat, ms. */
  pingMs?: number;
  /** Transport encryption the server selected (aead_aes256_gcm_rtpsize, …). */
  encryption?: string;
  ssrc?: number;
  /** DAVE end-to-end encryption is on (the server asked for a DAVE protocol version > 0). */
  dave: boolean;
  daveProtocolVersion: number;
  /** Audio packets sent to the voice server (silence frames included). */
  packets: number;
  /** Voice gateway sessions resumed after a resumable close. */
  resumes: number;
  /** Fresh connections made (the first, a new endpoint, a new voice state, UDP silence). */
  connects: number;
}

export interface WorkerSessionStats {
  status: PlayerStatus;
  sent: number;
  late: number;
  underruns: number;
  /** Lateness of sends against the session's own 20 ms deadlines, in ms. */
  sendLatenessMs: { p50: number; p99: number; max: number; count: number };
  rtp: RtpSinkInfo[];
  voice?: VoiceStats;
  /**
   * Wakes of this session's thread (all its sessions) served by sleeping on its doorbell between
   * frames rather than through its event loop.
   */
  threadWakesSlept: number;
  /** The worker thread the session runs on now. */
  threadId: number;
}

/** Where a splice cuts the ring's frames. */
export interface SplicePoint {
  /** The record number (Ring.removeCount()) of the first frame not played. */
  cut: number;
  /** Control.Sent when the first frame after the cut is taken: the new play's position origin. */
  sent: number;
}

export interface SlotApi {
  /**
   * Resolves once the slot's task is running on a thread (so it is warm), with the thread's
   * doorbell (src/shared/doorbell.ts), which main rings after each call it posts.
   */
  ready(): SharedArrayBuffer;
  attach(init: SessionInit): AttachResult;
  /** A new track (play, seek): wait for a prebuffer again; seq and timestamp continue. */
  reset(paused: boolean): PlayerStatus;
  pause(): PlayerStatus;
  resume(): PlayerStatus;
  /** The track is stopped: the player idles, the slot stays for its voice connection. */
  stop(): PlayerStatus;
  /** Main has written the track's last frame: finish once the ring is drained. */
  endOfStream(): PlayerStatus;
  /**
   * A sound change with no gap: the player plays `lead` more frames of the ring, then stops
   * taking the frames after them and waits for spliceTo(). Undefined when it cannot (not
   * playing, held, fewer than `lead` frames in the ring, a splice already under way).
   */
  spliceAt(lead: number): SplicePoint | undefined;
  /** Where the new play's first frame is in the ring (its record number, Ring.writeCount()). */
  spliceTo(record: number): PlayerStatus;
  /** The splice asked for is not made: the player plays on through the ring. */
  cancelSplice(): PlayerStatus;
  setListeners(count: number): PlayerStatus;
  addRtpSink(target: RtpTarget): RtpSinkInfo;
  removeRtpSink(target: RtpTarget): boolean;
  /** Connects (or reconnects, when anything changed) the session's Discord voice. */
  setVoice(state: VoiceServerState): Promise<VoiceEvent>;
  /** Leaves voice; the slot ends once no track is under way either. */
  leaveVoice(): boolean;
  stats(): WorkerSessionStats;
  /**
   * The session moves to another thread: the player leaves the scheduler between two wakes (so
   * at a frame boundary), its RTP sockets close, and it sends nothing more; its state is the
   * answer, for takeOver() on the next slot. Calls after it fail; close() ends the slot.
   * Undefined (nothing changed) while a splice is under way or with a voice connection.
   */
  handOff(): PlayerHandOff | undefined;
  /**
   * The player of a slot attached and not started goes on from another slot's hand-off: in its
   * status, on its deadline, with no prebuffer. Attach it and add its RTP targets first, so this
   * call, made between the two threads' frames, has nothing slow left to do.
   */
  takeOver(handOff: PlayerHandOff): PlayerStatus;
  /** Ends the slot's task (stop, or the session is gone). */
  close(): void;
  /** Debug only: throw inside this session's next tick, or kill the whole thread. */
  crash(kind: 'session' | 'thread'): void;
}

export type EgressMessage =
  | { kind: 'frames'; batch: ArrayBuffer; used: number }
  | { kind: 'state'; sid: number; status: PlayerStatus; reason?: string }
  | { kind: 'voice'; sid: number; voice: VoiceEvent };

/** Bytes of an egress entry's own header (sid, bytes). */
export const EGRESS_ENTRY_HEADER_BYTES = 8;
