/**
 * Listener protocol: what a WebSocket listener (the web player, a bot) receives and may send.
 * Browser-safe (no Node imports): the gateway, the web player and the tests all use this module.
 *
 *   Binary message  u32be seq · u32be timestamp · Opus packet
 *                   seq grows by 1 per frame of the session (a gap shows a loss or a skip);
 *                   timestamp counts 48 kHz samples of media time (+960 per frame), so it stays
 *                   continuous across pause/resume. Both wrap at 2^32.
 *   Text message    a JSON event: {"type":"state"|"ready"|"finished"|"error"|"voice","session":id,…}
 *                   "voice": the session's Discord voice connection changed; `rejoin: true` asks
 *                   the bot to rejoin the channel and PUT its new voice state (chorus cannot
 *                   reach Discord's gateway itself)
 *   Client → server a JSON action: {"action":"play","url":…,"format"?}, {"action":"pause"},
 *                   {"action":"resume"}, {"action":"stop"}, {"action":"seek","seconds":n}
 */
import type { SessionStateName } from './session-state.js';

/** The states a listener's `state` event names (src/shared/session-state.ts). */
export { SESSION_STATES, type SessionStateName } from './session-state.js';

export const LISTENER_HEADER_BYTES = 8;

/** Writes the 8-byte header in front of a packet. */
export function writeListenerHeader(dst: Uint8Array, offset: number, seq: number, timestamp: number): void {
  dst[offset] = seq >>> 24;
  dst[offset + 1] = seq >>> 16;
  dst[offset + 2] = seq >>> 8;
  dst[offset + 3] = seq;
  dst[offset + 4] = timestamp >>> 24;
  dst[offset + 5] = timestamp >>> 16;
  dst[offset + 6] = timestamp >>> 8;
  dst[offset + 7] = timestamp;
}

export interface ListenerFrame {
  seq: number;
  timestamp: number;
  /** A view into the message, not a copy. */
  payload: Uint8Array;
}

/** Reads a binary listener message; undefined when it is too short to be one. */
export function parseListenerFrame(message: Uint8Array): ListenerFrame | undefined {
  if (message.length < LISTENER_HEADER_BYTES) return undefined;
  const seq = ((message[0]! << 24) | (message[1]! << 16) | (message[2]! << 8) | message[3]!) >>> 0;
  const timestamp = ((message[4]! << 24) | (message[5]! << 16) | (message[6]! << 8) | message[7]!) >>> 0;
  return { seq, timestamp, payload: message.subarray(LISTENER_HEADER_BYTES) };
}

/** A session's Discord voice connection: connecting (or resuming), ready, or disconnected and why. */
export const VOICE_STATUSES = ['connecting', 'ready', 'disconnected'] as const;
export type VoiceStatus = (typeof VOICE_STATUSES)[number];

export type ListenerEvent =
  | { type: 'state'; session: string; state: SessionStateName; reason?: string }
  /** `duration`: the whole track's seconds; `startAt`: where in it this play starts (a seek's target). */
  | { type: 'ready'; session: string; duration?: number; startAt?: number }
  | { type: 'finished'; session: string }
  | { type: 'error'; session: string; message: string }
  | { type: 'voice'; session: string; status: VoiceStatus; reason?: string; closeCode?: number; rejoin?: boolean };

export type ListenerAction =
  | { action: 'play'; url: string; format?: string }
  | { action: 'pause' }
  | { action: 'resume' }
  | { action: 'stop' }
  | { action: 'seek'; seconds: number };

/** Parses a client's text message; a string is the reason it was refused. */
export function parseListenerAction(text: string): ListenerAction | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return 'message is not valid JSON';
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'message must be a JSON object';
  const v = value as Record<string, unknown>;
  switch (v.action) {
    case 'play':
      if (typeof v.url !== 'string' || v.url.length === 0) return 'play needs a non-empty "url" string';
      if (v.format !== undefined && typeof v.format !== 'string') return '"format" must be a string';
      return v.format === undefined ? { action: 'play', url: v.url } : { action: 'play', url: v.url, format: v.format };
    case 'pause':
    case 'resume':
    case 'stop':
      return { action: v.action };
    case 'seek':
      if (typeof v.seconds !== 'number' || !Number.isFinite(v.seconds) || v.seconds < 0) {
        return 'seek needs "seconds", a number ≥ 0';
      }
      return { action: 'seek', seconds: v.seconds };
    default:
      return 'unknown action; expected play, pause, resume, stop or seek';
  }
}
