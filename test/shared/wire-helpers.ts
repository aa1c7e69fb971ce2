/**
 * Test helpers for the wire protocol: encode a list of units, decode chunks into a plain
 * comparable list, and check that a reported error is one of the typed ProtocolErrors.
 * Shared by protocol.test.ts, the fuzz properties and scripts/fuzz.ts.
 */
import {
  encodeEvent,
  encodeFrame,
  frameKey,
  LENGTH_BYTES,
  MAX_EVENT_BYTES,
  MAX_FRAME_BYTES,
  SESSION_ID_BYTES,
  sessionIdOfKey,
  WireDecoder,
  type ProtocolError,
  type WireEvent,
} from '../../src/shared/protocol.js';

export type Unit =
  | { kind: 'frame'; id: string; payload: Uint8Array }
  | { kind: 'event'; event: WireEvent };

/** What the decoder reported, in a form `toEqual` can compare. */
export type Decoded =
  | { kind: 'frame'; id: string; payload: string }
  | { kind: 'event'; event: WireEvent }
  | { kind: 'error'; error: ProtocolError };

export function encodeUnits(units: readonly Unit[]): Buffer {
  return Buffer.concat(units.map((u) => (u.kind === 'frame' ? encodeFrame(u.id, u.payload) : encodeEvent(u.event))));
}

/** The decoded form of units that are all valid. */
export function expectedOf(units: readonly Unit[]): Decoded[] {
  return units.map((u) =>
    u.kind === 'frame'
      ? { kind: 'frame', id: u.id, payload: Buffer.from(u.payload).toString('hex') }
      : { kind: 'event', event: knownDuration(u.event) },
  );
}

/** A ready's duration of 0 or less means unknown: it decodes without one. */
function knownDuration(event: WireEvent): WireEvent {
  if (event.type !== 'ready' || event.duration === undefined || event.duration > 0) return event;
  const { duration: _unknown, ...rest } = event;
  return rest;
}

/** Largest number of bytes the decoder may ever hold: one whole frame, length field included. */
export const DECODER_HOLD_CAP = LENGTH_BYTES + MAX_FRAME_BYTES;

export interface DecodeRun {
  out: Decoded[];
  decoder: WireDecoder;
  /** Largest bufferedBytes seen after any push. */
  maxBuffered: number;
  /** Reports made while the decoder was broken (there must be none). */
  afterFatal: number;
}

/**
 * A decoder that appends what it reports to `out`. `state.afterFatal` counts reports made after a
 * fatal error (there must be none until reset(); clear `state.fatal` when you reset).
 */
export function newDecoder(out: Decoded[]): { decoder: WireDecoder; state: { afterFatal: number; fatal: boolean } } {
  const state = { afterFatal: 0, fatal: false };
  const handlers = {
    frame(buf: Buffer, idStart: number, payloadStart: number, payloadEnd: number) {
      if (state.fatal) state.afterFatal++;
      out.push({
        kind: 'frame',
        id: sessionIdOfKey(frameKey(buf, idStart)),
        payload: buf.toString('hex', payloadStart, payloadEnd),
      });
      if (payloadStart !== idStart + SESSION_ID_BYTES || payloadEnd < payloadStart || payloadEnd > buf.length) {
        throw new Error(`frame bounds out of order: ${idStart} ${payloadStart} ${payloadEnd} in ${buf.length}`);
      }
    },
    event(event: WireEvent) {
      if (state.fatal) state.afterFatal++;
      out.push({ kind: 'event', event });
    },
    error(error: ProtocolError) {
      if (state.fatal) state.afterFatal++;
      if (error.fatal) state.fatal = true;
      out.push({ kind: 'error', error });
    },
  };
  return { decoder: new WireDecoder(handlers), state };
}

/** Feeds chunks to a new decoder, tracking how much it holds after each push. */
export function decodeChunks(chunks: Iterable<Uint8Array>): DecodeRun {
  const out: Decoded[] = [];
  const { decoder, state } = newDecoder(out);
  let maxBuffered = 0;
  for (const c of chunks) {
    decoder.push(Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength));
    maxBuffered = Math.max(maxBuffered, decoder.bufferedBytes);
  }
  return { out, decoder, maxBuffered, afterFatal: state.afterFatal };
}

/** Splits `bytes` at the given cut points (sorted, deduplicated inside). */
export function splitAt(bytes: Buffer, cuts: readonly number[]): Buffer[] {
  const points = [...new Set(cuts.filter((c) => c > 0 && c < bytes.length))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    chunks.push(bytes.subarray(prev, p));
    prev = p;
  }
  chunks.push(bytes.subarray(prev));
  return chunks;
}

export function* bytewise(bytes: Buffer): Generator<Buffer> {
  for (let i = 0; i < bytes.length; i++) yield bytes.subarray(i, i + 1);
}

/** Why `e` is not a well-formed ProtocolError, or undefined when it is one. */
export function protocolErrorProblem(e: unknown): string | undefined {
  if (typeof e !== 'object' || e === null) return 'not an object';
  const err = e as Record<string, unknown>;
  const keys = Object.keys(err).sort().join(',');
  switch (err.kind) {
    case 'frame-too-large':
      if (keys !== 'fatal,kind,length' || err.fatal !== true) return `bad shape ${keys}`;
      return Number.isInteger(err.length) && (err.length as number) > MAX_FRAME_BYTES ? undefined : `length ${String(err.length)}`;
    case 'frame-too-short':
      if (keys !== 'fatal,kind,length' || err.fatal !== true) return `bad shape ${keys}`;
      return Number.isInteger(err.length) && (err.length as number) >= 0 && (err.length as number) < SESSION_ID_BYTES
        ? undefined
        : `length ${String(err.length)}`;
    case 'event-too-long':
      if (keys !== 'bytes,fatal,kind' || err.fatal !== false) return `bad shape ${keys}`;
      return Number.isInteger(err.bytes) && (err.bytes as number) > MAX_EVENT_BYTES ? undefined : `bytes ${String(err.bytes)}`;
    case 'bad-json':
    case 'bad-event':
      if (keys !== 'fatal,kind,reason' || err.fatal !== false) return `bad shape ${keys}`;
      return typeof err.reason === 'string' && err.reason.length > 0 ? undefined : 'reason not a string';
    default:
      return `unknown kind ${String(err.kind)}`;
  }
}
