import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  checkWireEvent,
  describeProtocolError,
  encodeEvent,
  encodeFrame,
  FRAME_HEADER_BYTES,
  frameKey,
  FrameIdTable,
  HELLO,
  LENGTH_BYTES,
  MAX_EVENT_BYTES,
  MAX_EVENT_MESSAGE_CHARS,
  MAX_FRAME_BYTES,
  MAX_PAYLOAD_BYTES,
  paddedSessionId,
  SESSION_ID_BYTES,
  sessionIdError,
  sessionIdOfKey,
  writeFrameHeader,
  WireDecoder,
  type ProtocolError,
  type WireEvent,
} from '../../src/shared/protocol.js';
import { isDeepStrictEqual } from 'node:util';
import {
  bytewise,
  decodeChunks,
  DECODER_HOLD_CAP,
  encodeUnits,
  expectedOf,
  newDecoder,
  protocolErrorProblem,
  splitAt,
  type Decoded,
  type Unit,
} from './wire-helpers.js';
import { NatashiReader } from '../helpers/natashi-engine.js';
import { decoderChunkingProperty, decoderHostileInputProperty, FUZZ_RUNS } from './properties.js';

function payload(n: number, seed: number): Uint8Array {
  const p = new Uint8Array(n);
  for (let i = 0; i < n; i++) p[i] = (seed * 131 + i * 7) & 0xff;
  return p;
}

/** A little of everything: ids of every length, payloads holding `{` and `\n`, every event type. */
const MIXED: Unit[] = [
  { kind: 'event', event: HELLO },
  { kind: 'frame', id: 'guild-1', payload: payload(40, 1) },
  { kind: 'event', event: { type: 'ready', session_id: 'guild-1', duration: 2.5, play: 3 } },
  { kind: 'event', event: { type: 'ready', session_id: 'guild-2', duration: 15, start_at: 15, track_duration: 30 } },
  { kind: 'frame', id: 'x'.repeat(24), payload: new Uint8Array([0x7b, 0x0a, 0x7b, 0x7d, 0x0a, 0x00]) },
  { kind: 'frame', id: 'a', payload: new Uint8Array(0) },
  {
    kind: 'event',
    event: { type: 'error', session_id: 'guild-1', message: 'ffmpeg said {"a":1}\n} and {\n héllo — 日本語 🎵 "quoted" \\ done' },
  },
  { kind: 'frame', id: '~!@#$%^&*()_+`-=[]{}|;:', payload: payload(300, 2) },
  { kind: 'event', event: { type: 'credit', session_id: 'guild-1', frames: 50 } },
  { kind: 'event', event: { type: 'finished', session_id: 'guild-1' } },
  { kind: 'frame', id: 'web user 7', payload: payload(3, 3) },
];

describe('wire protocol round trip', () => {
  const bytes = encodeUnits(MIXED);
  const expected = expectedOf(MIXED);

  it('decodes a mixed stream in one chunk', () => {
    const run = decodeChunks([bytes]);
    expect(run.out).toEqual(expected);
    expect(run.decoder.bufferedBytes).toBe(0);
  });

  it('decodes identically when split in two at every byte offset', () => {
    for (let cut = 1; cut < bytes.length; cut++) {
      const run = decodeChunks(splitAt(bytes, [cut]));
      if (!isDeepStrictEqual(run.out, expected)) {
        expect({ cut, out: run.out }).toEqual({ cut, out: expected });
      }
      expect(run.decoder.bufferedBytes).toBe(0);
    }
  });

  it('decodes identically when split in three at every pair of offsets around each unit boundary', () => {
    // every offset × every offset is quadratic in the stream; near every unit boundary is where
    // the states change (length, id, payload, event), so take all pairs within 12 bytes of one.
    const boundaries: number[] = [];
    let at = 0;
    for (const u of MIXED) {
      boundaries.push(at);
      at += u.kind === 'frame' ? FRAME_HEADER_BYTES + u.payload.length : encodeEvent(u.event).length;
    }
    const near = [...new Set(boundaries.flatMap((b) => Array.from({ length: 25 }, (_, i) => b - 12 + i)))].filter(
      (c) => c > 0 && c < bytes.length,
    );
    let runs = 0;
    for (const a of near) {
      for (const b of near) {
        if (b <= a) continue;
        const run = decodeChunks(splitAt(bytes, [a, b]));
        if (!isDeepStrictEqual(run.out, expected)) {
          expect({ a, b, out: run.out }).toEqual({ a, b, out: expected });
        }
        runs++;
      }
    }
    expect(runs).toBeGreaterThan(1000);
  });

  it('decodes identically one byte at a time', () => {
    const run = decodeChunks(bytewise(bytes));
    expect(run.out).toEqual(expected);
  });

  it('decodes the largest frame (64 KiB length) whole, split and byte by byte, holding at most one frame', () => {
    const big: Unit[] = [
      { kind: 'frame', id: 'big', payload: payload(MAX_PAYLOAD_BYTES, 9) },
      { kind: 'event', event: { type: 'finished', session_id: 'big' } },
      { kind: 'frame', id: 'big', payload: payload(MAX_PAYLOAD_BYTES, 10) },
    ];
    const stream = encodeUnits(big);
    expect(stream.readUInt32BE(0)).toBe(MAX_FRAME_BYTES);
    const want = expectedOf(big);
    for (const cuts of [[], [1], [3], [4], [27], [28], [29], [MAX_FRAME_BYTES + 3], [100, 200, 70_000, 70_050]]) {
      const run = decodeChunks(splitAt(stream, cuts));
      expect(run.out).toEqual(want);
      expect(run.maxBuffered).toBeLessThanOrEqual(DECODER_HOLD_CAP);
    }
    const run = decodeChunks(bytewise(stream));
    expect(run.out).toEqual(want);
    expect(run.maxBuffered).toBe(DECODER_HOLD_CAP - 1);
  });

  it('round-trips event text with braces, newlines, quotes and non-ASCII', () => {
    const messages = [
      '{',
      '}',
      '}{',
      '\n',
      '\n{"type":"finished","session_id":"a"}\n',
      'line one\nline two\r\n',
      'naïve café — 日本語 — 🎵🎶 — \u2028\u2029',
      '"\\"\\\\',
      '\u0000\u001f\u007f',
    ];
    const units: Unit[] = messages.map((message, i) => ({
      kind: 'event',
      event: { type: 'error', session_id: `s${i}`, message },
    }));
    for (const chunks of [[encodeUnits(units)], [...bytewise(encodeUnits(units))]]) {
      const run = decodeChunks(chunks);
      expect(run.out).toEqual(expectedOf(units));
    }
    // The encoder writes exactly one newline per event, the terminator.
    for (const u of units) {
      const line = encodeEvent((u as { event: WireEvent }).event);
      expect(line.indexOf(0x0a)).toBe(line.length - 1);
    }
  });

  it('hands a frame that lies inside one chunk out in place, and copies only a split one', () => {
    const stream = encodeUnits([{ kind: 'frame', id: 'inplace', payload: payload(10, 4) }]);
    const seen: Buffer[] = [];
    const decoder = new WireDecoder({ frame: (b) => seen.push(b), event() {}, error() {} });
    decoder.push(stream);
    decoder.push(stream.subarray(0, 5));
    decoder.push(stream.subarray(5));
    expect(seen).toHaveLength(2);
    expect(seen[0]).toBe(stream);
    expect(seen[1]).not.toBe(stream);
  });
});

describe('wire protocol errors', () => {
  function header(length: number): Buffer {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(length >>> 0);
    return b;
  }
  const good = encodeFrame('after', payload(5, 5));

  /** Records every Buffer allocation the decoder asks for while `fn` runs. */
  function allocations(fn: () => void): number[] {
    const sizes: number[] = [];
    const B = Buffer as unknown as Record<string, (...args: unknown[]) => unknown>;
    const names = ['alloc', 'allocUnsafe', 'allocUnsafeSlow', 'concat', 'from'] as const;
    const saved = names.map((n) => B[n]!);
    names.forEach((n, i) => {
      B[n] = function (this: unknown, ...args: unknown[]) {
        const a = args[0];
        sizes.push(typeof a === 'number' ? a : Array.isArray(a) ? -1 : 0);
        return saved[i]!.apply(this, args);
      };
    });
    try {
      fn();
    } finally {
      names.forEach((n, i) => (B[n] = saved[i]!));
    }
    return sizes;
  }

  it.each([
    ['0x7fffffff', 0x7fffffff],
    ['0xffffffff', 0xffffffff],
    ['cap + 1', MAX_FRAME_BYTES + 1],
    ['newline as first byte (a blank line)', 0x0a000000],
  ])('a length of %s is a fatal frame-too-large error, with nothing allocated or held', (_name, length) => {
    for (const chunks of [[header(length)], [...bytewise(header(length))], [Buffer.concat([header(length), Buffer.alloc(100)])]]) {
      const out: Decoded[] = [];
      const { decoder } = newDecoder(out);
      const held: number[] = [];
      const before = process.memoryUsage().arrayBuffers;
      const sizes = allocations(() => {
        for (const c of chunks) {
          decoder.push(c);
          held.push(decoder.bufferedBytes);
        }
      });
      const grown = process.memoryUsage().arrayBuffers - before;
      expect(sizes).toEqual([]);
      expect(grown).toBeLessThan(1 << 20);
      expect(Math.max(...held)).toBeLessThan(LENGTH_BYTES);
      expect(out).toEqual([{ kind: 'error', error: { kind: 'frame-too-large', fatal: true, length } }]);
      expect(decoder.broken).toBe(true);
      expect(decoder.bufferedBytes).toBe(0);
    }
  });

  it('a length of exactly 64 KiB is a frame, not an error', () => {
    const run = decodeChunks([encodeFrame('edge', new Uint8Array(MAX_PAYLOAD_BYTES))]);
    expect(run.out).toHaveLength(1);
    expect(run.out[0]!.kind).toBe('frame');
  });

  it.each([0, 1, 23])('a length of %i (shorter than the id) is a fatal frame-too-short error', (length) => {
    for (const chunks of [[header(length), good], [...bytewise(Buffer.concat([header(length), good]))]]) {
      const run = decodeChunks(chunks);
      expect(run.out).toEqual([{ kind: 'error', error: { kind: 'frame-too-short', fatal: true, length } }]);
      expect(run.decoder.broken).toBe(true);
    }
  });

  it('a length of exactly 24 is a frame with an empty payload', () => {
    const run = decodeChunks([Buffer.concat([header(24), Buffer.from(paddedSessionId('empty'))])]);
    expect(run.out).toEqual([{ kind: 'frame', id: 'empty', payload: '' }]);
  });

  it('bad JSON and events it does not understand are non-fatal: decoding continues', () => {
    const lines = [
      '{not json}',
      '{"type":"ready","session_id":"a"',
      '{}',
      '{"type":"launch","session_id":"a"}',
      '{"type":"ready"}',
      '{"type":"credit","session_id":"a","frames":0}',
      '{"type":"credit","session_id":"a","frames":1.5}',
      '{"type":"credit","session_id":"' + 'x'.repeat(25) + '","frames":1}',
      '{"type":"hello","protocol":"2"}',
      '{"type":' + '['.repeat(30_000) + ']'.repeat(30_000) + '}',
      '{"type":{"toString":1}}',
    ];
    const stream = Buffer.concat([...lines.flatMap((l) => [Buffer.from(l + '\n'), good])]);
    for (const chunks of [[stream], splitAt(stream, [7, 500, 30_000, 60_001])]) {
      const run = decodeChunks(chunks);
      const kinds = run.out.map((d) => (d.kind === 'error' ? d.error.kind : d.kind));
      expect(kinds).toEqual([
        'bad-json', 'frame',
        'bad-json', 'frame',
        'bad-event', 'frame',
        'bad-event', 'frame',
        'bad-event', 'frame',
        'bad-event', 'frame',
        'bad-event', 'frame',
        'bad-event', 'frame',
        'bad-event', 'frame',
        'bad-event', 'frame',
        'bad-event', 'frame',
      ]);
      for (const d of run.out) {
        if (d.kind === 'error') {
          expect(protocolErrorProblem(d.error)).toBeUndefined();
          expect(describeProtocolError(d.error)).not.toMatch(/\n/);
        }
      }
      expect(run.decoder.broken).toBe(false);
    }
  });

  it('ready keeps start_at and track_duration when they are seconds; a seed ready with duration only stays as it was', () => {
    expect(checkWireEvent({ type: 'ready', session_id: 's', duration: 15, start_at: 15, track_duration: 30 })).toEqual({
      type: 'ready',
      session_id: 's',
      duration: 15,
      start_at: 15,
      track_duration: 30,
    });
    expect(checkWireEvent({ type: 'ready', session_id: 's', duration: 15 })).toEqual({ type: 'ready', session_id: 's', duration: 15 });
    expect(checkWireEvent({ type: 'ready', session_id: 's', start_at: -1, track_duration: 'long' })).toEqual({ type: 'ready', session_id: 's' });
  });

  it('an unknown event type is described briefly, whatever the type holds', () => {
    expect(checkWireEvent({ type: 'x'.repeat(1000) })).toBe(`unknown event type "${'x'.repeat(40)}"`);
    expect(checkWireEvent({ type: 7 })).toBe('unknown event type number');
    let deep: unknown = [];
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expect(checkWireEvent({ type: deep })).toBe('unknown event type object');
    expect(checkWireEvent({})).toBe('unknown event type undefined');
  });

  it('an event line of exactly 64 KiB is parsed; one byte more is one skipped bad event, and decoding goes on', () => {
    const head = '{"type":"finished","session_id":"pad"';
    const exact = head + ' '.repeat(MAX_EVENT_BYTES - head.length - 1) + '}';
    expect(exact.length).toBe(MAX_EVENT_BYTES);
    const after = encodeEvent({ type: 'finished', session_id: 'next' });
    for (const cuts of [[], [1], [MAX_EVENT_BYTES - 1], [MAX_EVENT_BYTES], [40_000, 50_000]]) {
      const ok = decodeChunks(splitAt(Buffer.from(exact + '\n'), cuts));
      expect(ok.out).toEqual([{ kind: 'event', event: { type: 'finished', session_id: 'pad' } }]);
      const tooLong = decodeChunks(splitAt(Buffer.concat([Buffer.from(exact + ' \n'), after]), cuts));
      expect(tooLong.out).toEqual([
        { kind: 'error', error: { kind: 'event-too-long', fatal: false, bytes: MAX_EVENT_BYTES + 1 } },
        { kind: 'event', event: { type: 'finished', session_id: 'next' } },
      ]);
      expect(tooLong.decoder.broken).toBe(false);
    }
  });

  it('an event far over 64 KiB is skipped to its newline, in one chunk or in many, holding at most the cap', () => {
    const long = Buffer.from('{"type":"error","session_id":"a","message":"' + 'z'.repeat(200_000) + '"}\n');
    const next = Buffer.concat([encodeEvent({ type: 'ready', session_id: 'b' }), encodeFrame('b', payload(10, 9))]);
    const bytes = Buffer.concat([long, next]);
    for (const chunks of [[bytes], splitAt(bytes, [10, 30_000, 65_000, 65_536, 65_537, 100_000, 200_040]), [...bytewise(bytes)]]) {
      const run = decodeChunks(chunks);
      expect(run.out).toHaveLength(3);
      const d = run.out[0]!;
      expect(d.kind === 'error' && d.error.kind).toBe('event-too-long');
      expect(d.kind === 'error' && d.error.fatal).toBe(false);
      expect(run.out[1]).toEqual({ kind: 'event', event: { type: 'ready', session_id: 'b' } });
      expect(run.out[2]).toMatchObject({ kind: 'frame', id: 'b' });
      expect(run.maxBuffered).toBeLessThanOrEqual(MAX_EVENT_BYTES);
      expect(run.decoder.broken).toBe(false);
      expect(run.decoder.bufferedBytes).toBe(0);
    }
  });

  it('an over-long line with no newline yet holds nothing while it is skipped', () => {
    const run = decodeChunks([Buffer.from('{"type":"error","message":"'), ...Array.from({ length: 40 }, () => Buffer.alloc(16_384, 0x41))]);
    expect(run.out).toHaveLength(1);
    expect(run.decoder.bufferedBytes).toBe(0);
    expect(run.maxBuffered).toBeLessThanOrEqual(MAX_EVENT_BYTES);
  });

  it('after a fatal error input is ignored until reset(), then decoding starts afresh', () => {
    const out: Decoded[] = [];
    const { decoder, state } = newDecoder(out);
    // a frame cut short, so that the decoder holds a partial unit when the bad length comes
    decoder.push(good.subarray(0, 10));
    decoder.push(Buffer.concat([good.subarray(10), header(0x7fffffff)]));
    expect(decoder.broken).toBe(true);
    const valid = encodeUnits(MIXED);
    decoder.push(valid);
    decoder.push(Buffer.from('{"type":"finished","session_id":"a"}\n'));
    expect(decoder.bufferedBytes).toBe(0);
    expect(out).toEqual([
      { kind: 'frame', id: 'after', payload: Buffer.from(payload(5, 5)).toString('hex') },
      { kind: 'error', error: { kind: 'frame-too-large', fatal: true, length: 0x7fffffff } },
    ]);
    expect(state.afterFatal).toBe(0);

    decoder.reset();
    state.fatal = false;
    out.length = 0;
    expect(decoder.broken).toBe(false);
    for (const c of bytewise(valid)) decoder.push(c);
    expect(out).toEqual(expectedOf(MIXED));
  });

  it('reset() drops a partly received unit', () => {
    const out: Decoded[] = [];
    const { decoder } = newDecoder(out);
    decoder.push(good.subarray(0, 20));
    expect(decoder.bufferedBytes).toBe(20);
    decoder.reset();
    expect(decoder.bufferedBytes).toBe(0);
    decoder.push(good);
    expect(out).toEqual([{ kind: 'frame', id: 'after', payload: Buffer.from(payload(5, 5)).toString('hex') }]);
  });

  it('every error kind has a one-line description', () => {
    const errors: ProtocolError[] = [
      { kind: 'frame-too-large', fatal: true, length: 70_000 },
      { kind: 'frame-too-short', fatal: true, length: 3 },
      { kind: 'event-too-long', fatal: false, bytes: 70_000 },
      { kind: 'bad-json', fatal: false, reason: 'Unexpected token' },
      { kind: 'bad-event', fatal: false, reason: 'unknown event type "x"' },
    ];
    for (const e of errors) {
      expect(protocolErrorProblem(e)).toBeUndefined();
      expect(describeProtocolError(e)).toMatch(/^[^\n]+$/);
    }
  });
});

describe('session ids', () => {
  const printable = Array.from({ length: 0x7f - 0x20 }, (_, i) => String.fromCharCode(0x20 + i)).join('');
  const punctuation = printable.replace(/[A-Za-z0-9 ]/g, '');

  it.each([
    ['one character', 'a'],
    ['exactly 24 bytes', 'abcdefghijklmnopqrstuvwx'],
    ['a Discord snowflake', '123456789012345678'],
    ['inner spaces', 'web user 7'],
    ['punctuation, first 24', punctuation.slice(0, 24)],
    ['punctuation, the rest', punctuation.slice(24)],
    ['a single tilde (0x7e)', '~'],
    ['a single bang (0x21)', '!'],
  ])('accepts %s', (_name, id) => {
    expect(sessionIdError(id)).toBeUndefined();
    // and it survives the wire: padded, framed, decoded, trimmed
    const run = decodeChunks([encodeFrame(id, new Uint8Array([1]))]);
    expect(run.out).toEqual([{ kind: 'frame', id, payload: '01' }]);
    expect(sessionIdOfKey(paddedSessionId(id))).toBe(id);
  });

  it('accepts every printable ASCII character that is not a space in any position', () => {
    for (const c of printable.slice(1)) {
      if (c !== '.') expect(sessionIdError(c)).toBeUndefined();
      expect(sessionIdError(`a${c}b`)).toBeUndefined();
    }
  });

  it.each([
    ['25 bytes', 'abcdefghijklmnopqrstuvwxy', /25 characters/],
    ['far too long', 'x'.repeat(1000), /1000 characters/],
    ['empty', '', /empty/],
    ['a control character', 'ab\u0001c', /position 2/],
    ['a tab', 'a\tb', /position 1/],
    ['a dot segment', '.', /may not be "\."/],
    ['a double-dot segment', '..', /may not be "\.\."/],
    ['a newline', 'a\n', /position 1/],
    ['NUL', '\u0000', /position 0/],
    ['DEL (0x7f)', 'ab\u007f', /position 2/],
    ['Latin-1 (é)', 'café', /position 3/],
    ['emoji', 'a🎵', /position 1/],
    ['a lone surrogate', 'a\ud800', /position 1/],
    ['a leading space', ' abc', /leading or trailing space/],
    ['a trailing space', 'abc ', /leading or trailing space/],
    ['only a space', ' ', /leading or trailing space/],
    ['24 spaces', ' '.repeat(24), /leading or trailing space/],
  ])('refuses %s', (_name, id, why) => {
    expect(sessionIdError(id)).toMatch(why);
  });

  it.each([undefined, null, 42, ['a'], { id: 'a' }])('refuses a non-string (%s)', (id) => {
    expect(sessionIdError(id)).toBe('session id must be a string');
  });

  it('agrees with the rule "1–24 printable ASCII, no leading or trailing space, not a dot segment" on random strings', () => {
    const rule = (s: string) => /^[\x21-\x7e]([\x20-\x7e]{0,22}[\x21-\x7e])?$/.test(s) && s !== '.' && s !== '..';
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ maxLength: 30 }), fc.string({ unit: 'binary', maxLength: 30 }), fc.string({ unit: fc.constantFrom(' ', 'a', '~', '.', '\u007f', '\u001f'), maxLength: 26 })),
        (s) => (sessionIdError(s) === undefined) === rule(s),
      ),
      { numRuns: 5000 },
    );
  });

  it('frame headers never truncate an id nor leave stale bytes', () => {
    const target = Buffer.alloc(FRAME_HEADER_BYTES, 0xee);
    expect(() => writeFrameHeader(target, 0, paddedSessionId('x'.repeat(25)), 1)).toThrow(RangeError);
    expect(() => writeFrameHeader(target, 0, 'short', 1)).toThrow(RangeError);
    expect(() => encodeFrame('abcdefghijklmnopqrstuvwxyz', new Uint8Array(1))).toThrow(RangeError);
    expect(() => encodeFrame('a', new Uint8Array(MAX_PAYLOAD_BYTES + 1))).toThrow(RangeError);
    writeFrameHeader(target, 0, paddedSessionId('ok'), 7);
    expect(target.readUInt32BE(0)).toBe(SESSION_ID_BYTES + 7);
    expect(frameKey(target, LENGTH_BYTES)).toBe('ok' + ' '.repeat(22));
  });
});

describe('FrameIdTable', () => {
  it('finds each session from a frame\'s id bytes, and nothing for an id it does not hold', () => {
    const table = new FrameIdTable<number>();
    const ids = ['a', 'guild-1', 'x'.repeat(24), 'with space', '~!@#$%^&*()'];
    ids.forEach((id, i) => table.set(id, i));
    for (const [i, id] of ids.entries()) {
      const frame = encodeFrame(id, Buffer.from('payload'));
      expect(table.get(frame, 4)).toBe(i);
    }
    expect(table.get(encodeFrame('guild-2', Buffer.alloc(1)), 4)).toBeUndefined();
    // A prefix of a held id is another id.
    expect(table.get(encodeFrame('guild-', Buffer.alloc(1)), 4)).toBeUndefined();
    expect(table.size).toBe(ids.length);
  });

  it('keeps two ids whose hashes collide apart, through set, get and delete', () => {
    // These two share an FNV-1a hash of their padded bytes (found by search), so they share a bucket.
    const [a, b] = ['guild-515696', 'guild-1007693'];
    const table = new FrameIdTable<string>();
    table.set(a, 'A');
    table.set(b, 'B');
    expect(table.get(encodeFrame(a, Buffer.alloc(0)), 4)).toBe('A');
    expect(table.get(encodeFrame(b, Buffer.alloc(0)), 4)).toBe('B');
    table.set(a, 'A2');
    expect(table.size).toBe(2);
    expect(table.delete(a)).toBe(true);
    expect(table.get(encodeFrame(a, Buffer.alloc(0)), 4)).toBeUndefined();
    expect(table.get(encodeFrame(b, Buffer.alloc(0)), 4)).toBe('B');
    expect(table.delete(a)).toBe(false);
    expect(table.delete(b)).toBe(true);
    expect(table.size).toBe(0);
  });
});

describe('wire protocol properties (fast-check)', () => {
  it(`random chunkings of valid streams decode the same units (${FUZZ_RUNS} cases)`, () => {
    fc.assert(decoderChunkingProperty(), { numRuns: FUZZ_RUNS });
  });

  it(`hostile input never throws, holds at most the frame cap and reports typed errors (${FUZZ_RUNS} cases)`, () => {
    fc.assert(decoderHostileInputProperty(), { numRuns: FUZZ_RUNS });
  });
});

/** Events and frames as natashi's brace-counting reader sees them. */
function braceCountingRead(bytes: Buffer): { events: unknown[]; frames: { id: string; length: number }[] } {
  const reader = new NatashiReader();
  reader.push(bytes);
  const frames = [...reader.read.payloads].flatMap(([id, list]) => list.map((p) => ({ id, length: 24 + p.length })));
  return { events: reader.read.events, frames };
}

describe('events a brace-counting reader survives', () => {
  const messages = [
    'cannot open no}such.wav',
    '{"nested": {"json": [1, {}]}} }}}} {{{',
    'quote " backslash \\ newline \n brace } end',
    '}',
    '{',
  ];

  it('writes `{` and `}` inside strings as \\u007b / \\u007d: the JSON is the same, the brace count right', () => {
    const units = messages.flatMap((message, i) => [
      encodeEvent({ type: 'error', session_id: `s${i}`, message }),
      encodeFrame(`s${i}`, payload(100 + i, i)),
    ]);
    const bytes = Buffer.concat([encodeEvent(HELLO), ...units]);
    const read = braceCountingRead(bytes);
    expect(read.events).toEqual([HELLO, ...messages.map((message, i) => ({ type: 'error', session_id: `s${i}`, message }))]);
    expect(read.frames).toEqual(messages.map((_, i) => ({ id: `s${i}`, length: 24 + 100 + i })));
    for (const unit of units.filter((u) => u[0] === 0x7b)) {
      const line = unit.toString('utf8');
      expect(line.split('{').length - 1).toBe(1);
      expect(line.split('}').length - 1).toBe(1);
    }
    // The reader is strict enough to matter: plain JSON text loses it the stream.
    const plain = Buffer.concat([Buffer.from(JSON.stringify({ type: 'error', session_id: 's', message: 'no}such.wav' }) + '\n'), encodeFrame('s', payload(10, 1))]);
    expect(() => braceCountingRead(plain)).toThrow();
  });

  it('the shared decoder reads the escaped events back to the same values', () => {
    const out: Decoded[] = [];
    const { decoder } = newDecoder(out);
    for (const [i, message] of messages.entries()) decoder.push(encodeEvent({ type: 'error', session_id: `s${i}`, message }));
    expect(out).toEqual(messages.map((message, i) => ({ kind: 'event', event: { type: 'error', session_id: `s${i}`, message } })));
  });

  it('cuts a long error message, says so, and keeps the line far under the cap whatever the characters', () => {
    for (const unit of ['u', '\u0001', '日', '🎵', '{']) {
      const message = unit.repeat(70_000);
      const line = encodeEvent({ type: 'error', session_id: 'long', message });
      expect(line.length).toBeLessThan(MAX_EVENT_BYTES);
      const out: Decoded[] = [];
      newDecoder(out).decoder.push(line);
      const event = out[0]!.kind === 'event' ? (out[0]!.event as { message: string }) : undefined;
      expect(event?.message.length).toBeLessThanOrEqual(MAX_EVENT_MESSAGE_CHARS);
      expect(event?.message).toMatch(/… \[cut: \d+ more characters\]$/);
      expect(message.startsWith(event!.message.replace(/… \[cut: \d+ more characters\]$/, ''))).toBe(true);
    }
    const short = 'x'.repeat(MAX_EVENT_MESSAGE_CHARS);
    expect(JSON.parse(encodeEvent({ type: 'error', session_id: 'a', message: short }).toString()).message).toBe(short);
  });
});

it("a ready's duration of 0 (natashi's unknown) or absent is unknown; a positive one is kept", () => {
  expect(checkWireEvent({ type: 'ready', session_id: 'a', duration: 0 })).toEqual({ type: 'ready', session_id: 'a' });
  expect(checkWireEvent({ type: 'ready', session_id: 'a' })).toEqual({ type: 'ready', session_id: 'a' });
  expect(checkWireEvent({ type: 'ready', session_id: 'a', duration: 12.5 })).toEqual({ type: 'ready', session_id: 'a', duration: 12.5 });
});
