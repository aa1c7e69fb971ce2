/**
 * Wire protocol between engine and gateway: the seed's format plus a negotiated credit extension.
 *
 *   Audio frame  u32be length · session id (24 bytes) · payload
 *                `length` counts the id plus the payload, so it is 24 + payload bytes and at most
 *                MAX_FRAME_BYTES (64 KiB). The id is ASCII, right-padded with spaces to 24 bytes.
 *                Payload: one Opus packet (formats `opus`, `web`) or 20 ms of s16le PCM (`pcm`).
 *                natashi's dialect (no `hello`) sends `opus`/`web` as an Ogg Opus byte stream cut
 *                into payloads anywhere (src/shared/ogg.ts); a gateway tells it by its "OggS".
 *   Event        one JSON object followed by "\n":
 *                {"type":"ready"|"finished"|"error","session_id":…,"duration"?:s,"message"?:text}
 *                It is real JSON, so strings may hold `{`, `}` or an escaped newline. chorus
 *                writes `{` and `}` inside strings as \u007b and \u007d, so a reader that finds
 *                an event's end by counting braces (natashi's) still finds it, and cuts an
 *                `error` message to MAX_EVENT_MESSAGE_CHARS (marked as cut), so no event it writes
 *                passes the line cap. A reader skips a line over the cap (to its newline) as one
 *                bad event.
 *                `duration` (as the seed) is the seconds this play gives, from its start to its end.
 *                A `ready` may also carry "start_at" (where in the source the play starts) and
 *                "track_duration" (the whole source's length): a seek to 15 s into a 30 s track
 *                is start_at 15, duration 15, track_duration 30. Both optional (a seed omits them).
 *   Extension    an engine that supports it first sends
 *                {"type":"hello","protocol":2,"features":["credit"]}
 *                and only then may the gateway write back
 *                {"type":"credit","session_id":…,"frames":n}
 *                an additive window in frames. Without any credit the engine paces at real time.
 *                Session events may carry "play": n, the engine's play counter for that id, so a
 *                gateway can tell the frames and events of a replaced play from the new one's.
 *                With the "next" feature, a play queued by POST /session/:id/next follows the
 *                current one on the wire: its last frame, its `finished` (play n), the next
 *                play's `ready` (play n+1), the next play's first frame, on the same credit.
 *                With the "alive" feature, the gateway writes {"type":"alive"} at once, then
 *                whenever it has written nothing else for ALIVE_EVERY_MS, so its silence means
 *                it is stuck.
 *   Admission    an engine serves one gateway at a time. It answers a new connection within
 *                ADMIT_WITHIN_MS with `hello` (admitted) or with
 *                {"type":"refused","reason":text}
 *                and a close, when another gateway is connected and healthy (see
 *                src/main/engine/socket-server.ts). `hello` therefore also says "admitted".
 *
 * A reader tells a frame from an event by the first byte: `{` (0x7b) starts an event, anything
 * else is the first byte of a length. The 64 KiB cap keeps every valid length far below
 * 0x7b000000, so the rule is unambiguous; a longer length is a protocol error, never a reason to
 * buffer. An event line over its cap is not: its newline still ends it, so it is skipped unread.
 */

import { cutText } from './cut-text.js';

export const SESSION_ID_BYTES = 24;
export const LENGTH_BYTES = 4;
export const FRAME_HEADER_BYTES = LENGTH_BYTES + SESSION_ID_BYTES;
/** Largest value of the length field (id + payload). */
export const MAX_FRAME_BYTES = 64 * 1024;
export const MAX_PAYLOAD_BYTES = MAX_FRAME_BYTES - SESSION_ID_BYTES;
/** Longest event line, newline excluded. */
export const MAX_EVENT_BYTES = 64 * 1024;
/**
 * Longest `error` message the engine writes, in UTF-16 units: even escaped at 6 bytes a unit it
 * keeps the line far under MAX_EVENT_BYTES.
 */
export const MAX_EVENT_MESSAGE_CHARS = 2000;
export const PROTOCOL_VERSION = 2;
export const FEATURE_CREDIT = 'credit';
/**
 * The engine takes `POST /session/:id/next`: a play queued behind the current one whose frames
 * follow its last frame with none missing and none added (a gapless track change).
 */
export const FEATURE_NEXT = 'next';
/** The gateway says `alive` when it has been quiet for ALIVE_EVERY_MS: its silence then means it is stuck. */
export const FEATURE_ALIVE = 'alive';
/**
 * How often at least a gateway that was offered `alive` writes something. A credit line counts:
 * a gateway that plays anything speaks every 20 ms anyway.
 */
export const ALIVE_EVERY_MS = 500;
/**
 * An engine answers every new connection (`hello` or `refused`) within this long: a connection
 * facing a current gateway is held this long before the engine decides, so that a liveness probe
 * (connect, then close) costs the current gateway nothing.
 */
export const ADMIT_WITHIN_MS = 250;
/** Why an engine refuses a connection while its current gateway is healthy. */
export const REFUSED_HEALTHY_GATEWAY = 'another gateway is connected and healthy';

const OPEN_BRACE = 0x7b;
const NEWLINE = 0x0a;
const SPACE = 0x20;

/**
 * The one session id rule: 1–24 bytes of printable ASCII (0x20–0x7e), no leading or trailing
 * space. Returns why an id is refused, or undefined when it is good. Ids are never truncated:
 * two long ids sharing a 24-byte prefix would get each other's audio.
 */
export function sessionIdError(id: unknown): string | undefined {
  if (typeof id !== 'string') return 'session id must be a string';
  if (id.length === 0) return 'session id is empty';
  if (id.length > SESSION_ID_BYTES) {
    return `session id is ${id.length} characters; at most ${SESSION_ID_BYTES} are allowed`;
  }
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) {
      return `session id has a character outside printable ASCII at position ${i}`;
    }
  }
  if (id.charCodeAt(0) === SPACE || id.charCodeAt(id.length - 1) === SPACE) {
    return 'session id has a leading or trailing space';
  }
  // In a URL path they are dot segments: /sessions/../play is /play, so such a session could never be played.
  if (id === '.' || id === '..') return `session id may not be "${id}" (a dot segment in a URL path)`;
  return undefined;
}

/** The id as it travels: space-padded to 24 characters. Also the key a reader can match frames by. */
export function paddedSessionId(id: string): string {
  return id.padEnd(SESSION_ID_BYTES, ' ');
}

/** The 24-byte padded id of a frame, as a latin1 string, without trimming (cheap map key). */
export function frameKey(buf: Buffer, idStart: number): string {
  return buf.toString('latin1', idStart, idStart + SESSION_ID_BYTES);
}

/** A padded key back to its session id. */
export function sessionIdOfKey(key: string): string {
  return key.trimEnd();
}

interface IdEntry<T> {
  bytes: Uint8Array;
  value: T;
  next: IdEntry<T> | undefined;
}

/**
 * Finds what a frame belongs to from its 24 id bytes without making a string per frame (the
 * demux's hot path): an FNV-1a hash of the bytes picks a bucket, then the bytes are compared, so
 * two ids never share an entry however their hashes fall.
 */
export class FrameIdTable<T> {
  private readonly buckets = new Map<number, IdEntry<T>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  set(sessionId: string, value: T): void {
    const bytes = Buffer.from(paddedSessionId(sessionId), 'latin1');
    const h = hashId(bytes, 0);
    for (let e = this.buckets.get(h); e; e = e.next) {
      if (sameId(e.bytes, bytes, 0)) {
        e.value = value;
        return;
      }
    }
    this.buckets.set(h, { bytes, value, next: this.buckets.get(h) });
    this.count++;
  }

  delete(sessionId: string): boolean {
    const bytes = Buffer.from(paddedSessionId(sessionId), 'latin1');
    const h = hashId(bytes, 0);
    let prev: IdEntry<T> | undefined;
    for (let e = this.buckets.get(h); e; prev = e, e = e.next) {
      if (!sameId(e.bytes, bytes, 0)) continue;
      if (prev) prev.next = e.next;
      else if (e.next) this.buckets.set(h, e.next);
      else this.buckets.delete(h);
      this.count--;
      return true;
    }
    return false;
  }

  /** The value for the id at buf[idStart, idStart + 24), if any. */
  get(buf: Uint8Array, idStart: number): T | undefined {
    for (let e = this.buckets.get(hashId(buf, idStart)); e; e = e.next) {
      if (sameId(e.bytes, buf, idStart)) return e.value;
    }
    return undefined;
  }
}

function hashId(buf: Uint8Array, at: number): number {
  let h = 0x811c9dc5;
  for (let k = 0; k < SESSION_ID_BYTES; k++) h = Math.imul(h ^ buf[at + k]!, 0x01000193);
  return h | 0;
}

function sameId(id: Uint8Array, buf: Uint8Array, at: number): boolean {
  for (let k = 0; k < SESSION_ID_BYTES; k++) if (id[k] !== buf[at + k]) return false;
  return true;
}

/** Writes the 28-byte frame header at `offset`. `paddedId` comes from paddedSessionId. */
export function writeFrameHeader(
  target: Buffer,
  offset: number,
  paddedId: string,
  payloadBytes: number,
): void {
  if (payloadBytes > MAX_PAYLOAD_BYTES) {
    throw new RangeError(`payload of ${payloadBytes} bytes exceeds the ${MAX_PAYLOAD_BYTES}-byte cap`);
  }
  // A longer id would be cut to its first 24 bytes (two ids sharing a prefix would get each
  // other's audio); a shorter one would leave stale bytes in the header.
  if (paddedId.length !== SESSION_ID_BYTES) {
    throw new RangeError(`padded session id must be ${SESSION_ID_BYTES} characters, not ${paddedId.length}`);
  }
  target.writeUInt32BE(SESSION_ID_BYTES + payloadBytes, offset);
  target.write(paddedId, offset + LENGTH_BYTES, SESSION_ID_BYTES, 'latin1');
}

/** One whole frame in a new buffer. */
export function encodeFrame(sessionId: string, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  writeFrameHeader(out, 0, paddedSessionId(sessionId), payload.length);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}

export interface ReadyEvent {
  type: 'ready';
  session_id: string;
  /** Seconds this play gives (start_at to its end). */
  duration?: number;
  /** Seconds into the source where this play starts. */
  start_at?: number;
  /** Seconds of the whole source. */
  track_duration?: number;
  play?: number;
}
export interface FinishedEvent {
  type: 'finished';
  session_id: string;
  play?: number;
}
export interface ErrorEvent {
  type: 'error';
  session_id: string;
  message: string;
  play?: number;
}
export interface HelloEvent {
  type: 'hello';
  protocol: number;
  features: string[];
}
export interface CreditEvent {
  type: 'credit';
  session_id: string;
  frames: number;
}
/**
 * Engine → gateway, instead of `hello`, then the engine closes the connection: another gateway
 * holds the engine and is healthy. The refused gateway retries with its back-off.
 */
export interface RefusedEvent {
  type: 'refused';
  reason: string;
}
/** Gateway → engine, with the `alive` feature: "still here" after ALIVE_EVERY_MS of quiet. */
export interface AliveEvent {
  type: 'alive';
}
export type SessionEvent = ReadyEvent | FinishedEvent | ErrorEvent;
export type WireEvent = SessionEvent | HelloEvent | CreditEvent | RefusedEvent | AliveEvent;

export function encodeEvent(event: WireEvent): Buffer {
  const fitted = event.type === 'error' ? { ...event, message: cutMessage(event.message) } : event;
  return Buffer.from(escapeBracesInStrings(JSON.stringify(fitted)) + '\n', 'utf8');
}

/** A message cut to MAX_EVENT_MESSAGE_CHARS, marker included, saying how much was cut. */
export function cutMessage(message: string): string {
  return message.length <= MAX_EVENT_MESSAGE_CHARS ? message : cutText(message, MAX_EVENT_MESSAGE_CHARS - 40);
}

/**
 * JSON text with every `{` and `}` inside a string written as \u007b and \u007d: the same
 * value to a JSON parser, and braces only where the structure has them.
 */
export function escapeBracesInStrings(json: string): string {
  let out = '';
  let inString = false;
  let from = 0;
  for (let i = 0; i < json.length; i++) {
    const c = json.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
      else if (c === OPEN_BRACE || c === 0x7d) {
        out += json.slice(from, i) + (c === OPEN_BRACE ? '\\u007b' : '\\u007d');
        from = i + 1;
      }
    } else if (c === 0x22) inString = true;
  }
  return out + json.slice(from);
}

export const HELLO: HelloEvent = { type: 'hello', protocol: PROTOCOL_VERSION, features: [FEATURE_CREDIT, FEATURE_NEXT, FEATURE_ALIVE] };
export const ALIVE: AliveEvent = { type: 'alive' };

/**
 * What went wrong in a stream. A fatal error means framing is lost: the decoder ignores all
 * further input until reset(), and the connection should be dropped.
 */
export type ProtocolError =
  | { kind: 'frame-too-large'; fatal: true; length: number }
  | { kind: 'frame-too-short'; fatal: true; length: number }
  | { kind: 'event-too-long'; fatal: false; bytes: number }
  | { kind: 'bad-json'; fatal: false; reason: string }
  | { kind: 'bad-event'; fatal: false; reason: string };

export function describeProtocolError(err: ProtocolError): string {
  switch (err.kind) {
    case 'frame-too-large':
      return `frame length ${err.length} exceeds the ${MAX_FRAME_BYTES}-byte cap`;
    case 'frame-too-short':
      return `frame length ${err.length} is shorter than the ${SESSION_ID_BYTES}-byte session id`;
    case 'event-too-long':
      return `event line longer than ${MAX_EVENT_BYTES} bytes (${err.bytes} seen): skipped to its newline`;
    case 'bad-json':
      return `event is not valid JSON: ${err.reason}`;
    case 'bad-event':
      return `event is not understood: ${err.reason}`;
  }
}

export interface DecoderHandlers {
  /**
   * One audio frame. `buf` is only valid during the call: the id is buf[idStart, idStart+24)
   * (frameKey() reads it) and the payload is buf[payloadStart, payloadEnd). Copy what you keep.
   */
  frame(buf: Buffer, idStart: number, payloadStart: number, payloadEnd: number): void;
  event(event: WireEvent): void;
  error(err: ProtocolError): void;
}

const enum Pending {
  None,
  Frame,
  Event,
  /** Inside an event line over the cap: dropped up to its newline. */
  SkipLine,
}

/**
 * Streaming decoder. Accepts any chunking. A unit (frame or event) that lies inside one chunk is
 * handed out in place; only a unit split across chunks is copied, into one scratch buffer of
 * fixed size, so memory never exceeds the frame cap whatever the input.
 */
export class WireDecoder {
  private readonly scratch = Buffer.allocUnsafe(Math.max(LENGTH_BYTES + MAX_FRAME_BYTES, MAX_EVENT_BYTES));
  private pending = Pending.None;
  private pendingBytes = 0;
  /** For a pending frame, the total bytes it needs (header included) once its length is known. */
  private frameTotal = 0;
  private failed = false;

  constructor(private readonly handlers: DecoderHandlers) {}

  /** True after a fatal error; push() ignores input until reset(). */
  get broken(): boolean {
    return this.failed;
  }

  /** Bytes held for a unit split across chunks (bounded by the frame cap). */
  get bufferedBytes(): number {
    return this.pendingBytes;
  }

  reset(): void {
    this.pending = Pending.None;
    this.pendingBytes = 0;
    this.frameTotal = 0;
    this.failed = false;
  }

  push(chunk: Buffer): void {
    if (this.failed) return;
    let off = 0;
    if (this.pending !== Pending.None) {
      off =
        this.pending === Pending.Event
          ? this.continueEvent(chunk)
          : this.pending === Pending.SkipLine
            ? this.continueSkip(chunk)
            : this.continueFrame(chunk);
      if (this.failed || (this.pending as Pending) !== Pending.None) return;
    }
    const end = chunk.length;
    while (off < end) {
      if (chunk[off] === OPEN_BRACE) {
        const nl = chunk.indexOf(NEWLINE, off);
        if (nl < 0) {
          if (end - off > MAX_EVENT_BYTES) return this.skipLine(end - off);
          this.stash(Pending.Event, chunk, off, end);
          return;
        }
        if (nl - off > MAX_EVENT_BYTES) this.handlers.error({ kind: 'event-too-long', fatal: false, bytes: nl - off });
        else this.emitEvent(chunk, off, nl);
        off = nl + 1;
        continue;
      }
      if (end - off < LENGTH_BYTES) {
        this.stash(Pending.Frame, chunk, off, end);
        return;
      }
      const length = chunk.readUInt32BE(off);
      if (!this.lengthOk(length)) return;
      const total = LENGTH_BYTES + length;
      if (end - off < total) {
        this.frameTotal = total;
        this.stash(Pending.Frame, chunk, off, end);
        return;
      }
      this.handlers.frame(chunk, off + LENGTH_BYTES, off + FRAME_HEADER_BYTES, off + total);
      off += total;
    }
  }

  private lengthOk(length: number): boolean {
    if (length > MAX_FRAME_BYTES) {
      this.fail({ kind: 'frame-too-large', fatal: true, length });
      return false;
    }
    if (length < SESSION_ID_BYTES) {
      this.fail({ kind: 'frame-too-short', fatal: true, length });
      return false;
    }
    return true;
  }

  /** The event line under way passed the cap with `seen` bytes: report it once, drop the rest. */
  private skipLine(seen: number): void {
    this.pending = Pending.SkipLine;
    this.pendingBytes = 0;
    this.handlers.error({ kind: 'event-too-long', fatal: false, bytes: seen });
  }

  private continueSkip(chunk: Buffer): number {
    const nl = chunk.indexOf(NEWLINE);
    if (nl < 0) return chunk.length;
    this.pending = Pending.None;
    return nl + 1;
  }

  private stash(kind: Pending, chunk: Buffer, from: number, to: number): void {
    if (kind === Pending.Frame && to - from < LENGTH_BYTES) this.frameTotal = 0;
    chunk.copy(this.scratch, 0, from, to);
    this.pending = kind;
    this.pendingBytes = to - from;
  }

  /** Returns the offset in `chunk` just past what was consumed. */
  private continueEvent(chunk: Buffer): number {
    const nl = chunk.indexOf(NEWLINE);
    const take = nl < 0 ? chunk.length : nl;
    if (this.pendingBytes + take > MAX_EVENT_BYTES) {
      this.skipLine(this.pendingBytes + take);
      if (nl < 0) return chunk.length;
      this.pending = Pending.None;
      return nl + 1;
    }
    chunk.copy(this.scratch, this.pendingBytes, 0, take);
    this.pendingBytes += take;
    if (nl < 0) return chunk.length;
    this.pending = Pending.None;
    const bytes = this.pendingBytes;
    this.pendingBytes = 0;
    this.emitEvent(this.scratch, 0, bytes);
    return nl + 1;
  }

  private continueFrame(chunk: Buffer): number {
    let off = 0;
    if (this.frameTotal === 0) {
      const take = Math.min(LENGTH_BYTES - this.pendingBytes, chunk.length);
      chunk.copy(this.scratch, this.pendingBytes, 0, take);
      this.pendingBytes += take;
      off = take;
      if (this.pendingBytes < LENGTH_BYTES) return off;
      const length = this.scratch.readUInt32BE(0);
      if (!this.lengthOk(length)) return chunk.length;
      this.frameTotal = LENGTH_BYTES + length;
    }
    const take = Math.min(this.frameTotal - this.pendingBytes, chunk.length - off);
    chunk.copy(this.scratch, this.pendingBytes, off, off + take);
    this.pendingBytes += take;
    off += take;
    if (this.pendingBytes === this.frameTotal) {
      const total = this.frameTotal;
      this.pending = Pending.None;
      this.pendingBytes = 0;
      this.frameTotal = 0;
      this.handlers.frame(this.scratch, LENGTH_BYTES, FRAME_HEADER_BYTES, total);
    }
    return off;
  }

  private emitEvent(buf: Buffer, start: number, end: number): void {
    let value: unknown;
    try {
      value = JSON.parse(buf.toString('utf8', start, end));
    } catch (err) {
      this.handlers.error({ kind: 'bad-json', fatal: false, reason: (err as Error).message });
      return;
    }
    const checked = checkWireEvent(value);
    if (typeof checked === 'string') this.handlers.error({ kind: 'bad-event', fatal: false, reason: checked });
    else this.handlers.event(checked);
  }

  private fail(err: ProtocolError): void {
    this.failed = true;
    this.pending = Pending.None;
    this.pendingBytes = 0;
    this.handlers.error(err);
  }
}

/** A parsed JSON value as a WireEvent, or the reason it is not one. */
export function checkWireEvent(value: unknown): WireEvent | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object';
  const v = value as Record<string, unknown>;
  switch (v.type) {
    case 'hello':
      if (typeof v.protocol !== 'number') return 'hello without a numeric protocol';
      return {
        type: 'hello',
        protocol: v.protocol,
        features: Array.isArray(v.features) ? v.features.filter((f): f is string => typeof f === 'string') : [],
      };
    case 'refused':
      return { type: 'refused', reason: typeof v.reason === 'string' ? v.reason : 'no reason given' };
    case 'alive':
      return ALIVE;
    case 'credit': {
      const id = v.session_id;
      if (typeof id !== 'string' || sessionIdError(id)) return 'credit with a bad session_id';
      if (!Number.isSafeInteger(v.frames) || (v.frames as number) <= 0) return 'credit frames must be a positive integer';
      return { type: 'credit', session_id: id, frames: v.frames as number };
    }
    case 'ready':
    case 'finished':
    case 'error': {
      const id = v.session_id;
      if (typeof id !== 'string') return `${v.type} without a session_id`;
      const play = Number.isSafeInteger(v.play) ? { play: v.play as number } : {};
      if (v.type === 'finished') return { type: 'finished', session_id: id, ...play };
      if (v.type === 'error') {
        const message = typeof v.message === 'string' ? v.message : 'unknown error';
        return { type: 'error', session_id: id, message, ...play };
      }
      const ready: ReadyEvent = { type: 'ready', session_id: id, ...play };
      // 0 (natashi's word for unknown) and absent both mean unknown.
      if (typeof v.duration === 'number' && Number.isFinite(v.duration) && v.duration > 0) ready.duration = v.duration;
      if (isSeconds(v.start_at)) ready.start_at = v.start_at;
      if (isSeconds(v.track_duration)) ready.track_duration = v.track_duration;
      return ready;
    }
    default:
      // Only a string type is quoted: stringifying any other value (a deeply nested array fits
      // in one 64 KiB line) can overflow the stack and throw out of the decoder.
      return `unknown event type ${typeof v.type === 'string' ? JSON.stringify(v.type.slice(0, 40)) : typeof v.type}`;
  }
}

/** A number of seconds an event may carry: finite and not negative (anything else is left out). */
function isSeconds(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0;
}
