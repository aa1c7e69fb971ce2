/**
 * Shapes of the gateway's HTTP API answers, shared by the gateway, the web player and the load
 * scripts (browser-safe: no Node imports).
 */
import type { VoiceStatus } from './listener-protocol.js';
import type { SessionStateName } from './session-state.js';

export interface SessionSummary {
  id: string;
  state: SessionStateName;
  /** Why the session is in its state, when it says (error message, 'idle timeout', …). */
  reason?: string;
  url?: string;
  /** What the track is, when the session's queue started it (its tags, or the resolver's names). */
  title?: string;
  author?: string;
  artworkUrl?: string;
  /** The track's start in seconds (a seek's target) and its whole length, once known. */
  startAt?: number;
  /** Seconds into the track the listeners have reached, counted in frames delivered (exact to 20 ms). */
  position?: number;
  duration?: number;
  format: string;
  /** Frames in the ring now, and how many it holds. */
  ringFrames: number;
  ringCapacityFrames: number;
  listeners: number;
  rtpSinks: number;
  /** Frames the worker took from the ring and delivered, since the session began. */
  sent: number;
  /** Frames the worker sent more than one frame time after their deadline. */
  late: number;
  /** Ticks that found the ring empty while playing. */
  underruns: number;
  /** Times the worker's clock fell so far behind (a stalled thread) that it started again from now. */
  resyncs: number;
  /** Frames dropped on ring overflow (only with a seed engine that ignores credits). */
  dropped: number;
  /** Frames skipped for slow listeners under CHORUS_SLOW_LISTENER=drop. */
  skipped: number;
  /** The session's Discord voice connection, if it has one (live figures: GET /sessions/:id's `voice`). */
  voice?: { guildId: string; channelId: string; endpoint: string; status: VoiceStatus; reason?: string; closeCode?: number; rejoin?: boolean };
}

export interface SessionsResponse {
  sessions: SessionSummary[];
  /** Worker threads alive now. */
  threads: number;
  sessionsPerThread: number;
  engineConnected: boolean;
}

/** The answer to POST /sessions/:id/play. */
export interface PlayResponse {
  session: SessionSummary;
  /** With CHORUS_TOKEN set: lets a WebSocket listen to this session (and no other). */
  listenToken?: string;
}

export interface ErrorResponse {
  error: string;
}
