/**
 * fast-check properties of the shared decoders, run by the normal test suite (FUZZ_RUNS cases
 * each) and, with far more cases, by `npm run fuzz` (scripts/fuzz.ts).
 */
import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import {
  MAX_EVENT_BYTES,
  MAX_FRAME_BYTES,
  MAX_PAYLOAD_BYTES,
  PROTOCOL_VERSION,
  SESSION_ID_BYTES,
  type WireEvent,
} from '../../src/shared/protocol.js';
import { parseListenerAction, parseListenerFrame, writeListenerHeader } from '../../src/shared/listener-protocol.js';
import { Ring } from '../../src/shared/ring.js';
import {
  decodeChunks,
  DECODER_HOLD_CAP,
  encodeUnits,
  expectedOf,
  protocolErrorProblem,
  splitAt,
  type Decoded,
  type Unit,
} from './wire-helpers.js';

/** Cases per property in the normal test run. */
export const FUZZ_RUNS = 10_000;

/** Deterministic bytes: cheap to make large, and every byte value (0x0a, 0x7b…) occurs. */
export function filled(n: number, seed: number): Uint8Array {
  const p = new Uint8Array(n);
  for (let i = 0; i < n; i++) p[i] = (seed * 131 + i * 7 + (i >> 8)) & 0xff;
  return p;
}

// ---- arbitraries ----

const idChar = fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c));
/** A good session id: 1–24 printable ASCII, inner spaces allowed, none at either end, not `.` or `..`. */
export const sessionIdArb: fc.Arbitrary<string> = fc
  .oneof(
    fc.string({ unit: idChar, minLength: 1, maxLength: 24 }),
    fc
      .tuple(idChar, fc.string({ unit: fc.oneof(idChar, fc.constant(' ')), maxLength: 22 }), idChar)
      .map(([a, mid, b]) => a + mid + b),
  )
  .filter((id) => id !== '.' && id !== '..');

const payloadSizeArb = fc.oneof(
  { weight: 8, arbitrary: fc.nat(64) },
  { weight: 2, arbitrary: fc.nat(2000) },
  { weight: 1, arbitrary: fc.constantFrom(0, 1, MAX_PAYLOAD_BYTES - 1, MAX_PAYLOAD_BYTES) },
);

const frameArb: fc.Arbitrary<Unit> = fc
  .record({ id: sessionIdArb, n: payloadSizeArb, seed: fc.nat(255) })
  .map(({ id, n, seed }) => ({ kind: 'frame', id, payload: filled(n, seed) }));

/** Any text, including `{`, `}`, newlines, quotes, non-ASCII and lone surrogates. */
const textArb = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: fc.constantFrom('{', '}', '\n', '"', '\\', '\r', 'é', '🎵', ' ', 'a'), maxLength: 40 }),
);
const finiteArb = fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => (d === 0 ? 0 : d));
const secondsArb = fc.double({ min: 0, noNaN: true, noDefaultInfinity: true }).map((d) => (d === 0 ? 0 : d));

const eventArb: fc.Arbitrary<WireEvent> = fc.oneof(
  fc.record({ type: fc.constant('hello' as const), protocol: fc.integer({ min: 1, max: PROTOCOL_VERSION + 3 }), features: fc.array(textArb, { maxLength: 3 }) }),
  fc.record({ type: fc.constant('credit' as const), session_id: sessionIdArb, frames: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }) }),
  fc.record({ type: fc.constant('refused' as const), reason: textArb }),
  fc.constant({ type: 'alive' as const }),
  fc.record(
    {
      type: fc.constant('ready' as const),
      session_id: fc.oneof(sessionIdArb, textArb),
      duration: finiteArb,
      start_at: secondsArb,
      track_duration: secondsArb,
      play: fc.nat(),
    },
    { requiredKeys: ['type', 'session_id'] },
  ),
  fc.record({ type: fc.constant('finished' as const), session_id: fc.oneof(sessionIdArb, textArb), play: fc.nat() }, { requiredKeys: ['type', 'session_id'] }),
  fc.record(
    { type: fc.constant('error' as const), session_id: fc.oneof(sessionIdArb, textArb), message: textArb, play: fc.nat() },
    { requiredKeys: ['type', 'session_id', 'message'] },
  ),
).map((e) => ({ ...e }) as WireEvent); // fast-check's records have a null prototype; the decoder's do not

const unitArb: fc.Arbitrary<Unit> = fc.oneof(frameArb, eventArb.map((event): Unit => ({ kind: 'event', event })));

/** Cut points for a stream of `len` bytes: anywhere, or a cycle of tiny chunk sizes. */
type Chunking = { kind: 'cuts'; at: number[] } | { kind: 'sizes'; sizes: number[] };
const chunkingArb: fc.Arbitrary<Chunking> = fc.oneof(
  fc.record({ kind: fc.constant('cuts' as const), at: fc.array(fc.double({ min: 0, max: 1, noNaN: true }).map((x) => x * 0.999999), { maxLength: 12 }).map((a) => a.map((x) => Math.floor(x * 1e9))) }),
  fc.record({ kind: fc.constant('sizes' as const), sizes: fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 4 }) }),
);

export function chunk(bytes: Buffer, how: Chunking): Buffer[] {
  if (bytes.length === 0) return [bytes];
  if (how.kind === 'cuts') return splitAt(bytes, how.at.map((x) => x % bytes.length));
  // Cycling tiny sizes over a big stream makes many chunks: past 4 KiB, cut coarser.
  const out: Buffer[] = [];
  let i = 0;
  let k = 0;
  const scale = bytes.length > 4096 ? 257 : 1;
  while (i < bytes.length) {
    const n = how.sizes[k++ % how.sizes.length]! * scale;
    out.push(bytes.subarray(i, i + n));
    i += n;
  }
  return out;
}

// ---- wire decoder ----

/** Valid streams under any chunking decode to exactly the units that were encoded. */
export function decoderChunkingProperty(): fc.IPropertyWithHooks<[Unit[], Chunking]> {
  return fc.property(fc.array(unitArb, { maxLength: 12 }), chunkingArb, (units, how) => {
    const bytes = encodeUnits(units);
    const run = decodeChunks(chunk(bytes, how));
    if (!isDeepStrictEqual(run.out, expectedOf(units))) {
      throw new Error(`decoded differently:\n${JSON.stringify(run.out).slice(0, 2000)}`);
    }
    if (run.decoder.bufferedBytes !== 0) throw new Error(`holds ${run.decoder.bufferedBytes} bytes after whole units`);
    if (run.maxBuffered > DECODER_HOLD_CAP) throw new Error(`held ${run.maxBuffered} bytes`);
  });
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

/** Nesting depth of a JSON array: mostly shallow, sometimes deep enough to overflow a recursive walk. */
const deepNesting = fc.oneof({ weight: 30, arbitrary: fc.nat(50) }, { weight: 1, arbitrary: fc.constantFrom(10_000, 32_000) });

/** One segment of a hostile stream. */
const hostileSegmentArb: fc.Arbitrary<Buffer> = fc.oneof(
  // valid units between the garbage
  { weight: 4, arbitrary: unitArb.map((u) => encodeUnits([u])) },
  // random bytes
  { weight: 3, arbitrary: fc.uint8Array({ maxLength: 80 }).map((a) => Buffer.from(a)) },
  // a length over the cap, sometimes with what would follow
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.oneof(fc.integer({ min: MAX_FRAME_BYTES + 1, max: 0xffffffff }), fc.constantFrom(MAX_FRAME_BYTES + 1, 0x7fffffff, 0xffffffff, 0x0a0a0a0a)), fc.nat(40))
      .map(([len, tail]) => Buffer.concat([u32(len), Buffer.from(filled(tail, len & 0xff))])),
  },
  // a length shorter than the id, or a truncated id / payload (a frame cut anywhere)
  { weight: 2, arbitrary: fc.tuple(fc.nat(SESSION_ID_BYTES - 1), fc.nat(30)).map(([len, tail]) => Buffer.concat([u32(len), Buffer.alloc(tail, 0x61)])) },
  { weight: 2, arbitrary: fc.tuple(frameArb, fc.double({ min: 0, max: 1, noNaN: true })).map(([f, x]) => { const b = encodeUnits([f]); return b.subarray(0, Math.floor(x * b.length)); }) },
  // malformed JSON lines, and valid JSON that is not an event
  {
    weight: 3,
    arbitrary: fc.oneof(
      textArb.map((t) => Buffer.from('{' + t.replace(/\n/g, '') + '\n')),
      fc.tuple(eventArb, fc.nat()).map(([e, cut]) => {
        const s = JSON.stringify(e);
        const k = 1 + (cut % Math.max(1, s.length - 1));
        return Buffer.from(s.slice(0, k) + s.slice(k + 1) + '\n');
      }),
      fc.jsonValue({ maxDepth: 3 }).map((v) => Buffer.from('{"type":' + JSON.stringify(v ?? null) + ',"session_id":' + JSON.stringify(v ?? null) + '}\n')),
      fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }).map((o) => Buffer.from(JSON.stringify(o) + '\n')),
      deepNesting.map((d) => Buffer.from('{"type":' + '['.repeat(d) + ']'.repeat(d) + '}\n')),
    ),
  },
  // an event line near, at or over the 64 KiB cap, with or without its newline
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.integer({ min: MAX_EVENT_BYTES - 3, max: MAX_EVENT_BYTES + 3 }), fc.boolean())
      .map(([n, nl]) => Buffer.concat([Buffer.from('{'), Buffer.alloc(n - 1, 0x20), nl ? Buffer.from('\n') : Buffer.alloc(0)])),
  },
);

/** Reports with chunking-dependent detail removed (how far an over-long event had got). */
function normalized(out: Decoded[]): unknown[] {
  return out.map((d) => (d.kind === 'error' && d.error.kind === 'event-too-long' ? { kind: 'error', error: 'event-too-long' } : d));
}

/**
 * Hostile input (random bytes, oversized and undersized lengths, truncated ids, malformed JSON,
 * over-long events) never throws out of the decoder, never makes it hold more than one frame,
 * reports every problem as a typed ProtocolError, reports nothing after a fatal one, and reports
 * the same whatever the chunking.
 */
export function decoderHostileInputProperty(): fc.IPropertyWithHooks<[Buffer[], Chunking]> {
  return fc.property(fc.array(hostileSegmentArb, { minLength: 1, maxLength: 8 }), chunkingArb, (segments, how) => {
    const bytes = Buffer.concat(segments);
    const whole = decodeChunks([bytes]);
    const split = decodeChunks(chunk(bytes, how));
    for (const run of [whole, split]) {
      if (run.maxBuffered > DECODER_HOLD_CAP) throw new Error(`held ${run.maxBuffered} bytes, over the ${DECODER_HOLD_CAP}-byte cap`);
      if (run.afterFatal !== 0) throw new Error(`${run.afterFatal} reports after a fatal error`);
      let fatal = 0;
      for (const d of run.out) {
        if (d.kind === 'error') {
          const problem = protocolErrorProblem(d.error);
          if (problem) throw new Error(`untyped error ${JSON.stringify(d.error)}: ${problem}`);
          if (d.error.fatal) fatal++;
        } else if (d.kind === 'frame') {
          const n = d.payload.length / 2;
          if (n > MAX_PAYLOAD_BYTES) throw new Error(`frame payload of ${n} bytes`);
        }
      }
      if (run.decoder.broken !== fatal > 0) throw new Error(`broken=${run.decoder.broken} after ${fatal} fatal errors`);
      if (run.decoder.broken && run.decoder.bufferedBytes !== 0) throw new Error('a broken decoder holds bytes');
    }
    if (!isDeepStrictEqual(normalized(whole.out), normalized(split.out))) {
      throw new Error(`chunking changed the reports:\n${JSON.stringify(normalized(whole.out)).slice(0, 1500)}\n${JSON.stringify(normalized(split.out)).slice(0, 1500)}`);
    }
  });
}

// ---- listener protocol ----

const actionNames = ['play', 'pause', 'resume', 'stop', 'seek'] as const;
const anyJson = fc.jsonValue({ maxDepth: 2 });

/** Text a client might send: anything, JSON of any shape, and near-miss actions. */
const actionTextArb: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 60 }),
  fc.json({ maxDepth: 3 }),
  fc
    .record(
      {
        action: fc.oneof(fc.constantFrom(...actionNames, 'PLAY', 'toString', '__proto__', ''), anyJson),
        url: fc.oneof(fc.string({ maxLength: 20 }), anyJson),
        format: fc.oneof(fc.constantFrom('opus', 'web', 'pcm'), anyJson),
        seconds: fc.oneof(fc.double(), fc.integer(), fc.constantFrom(-1, 0, 1e308), anyJson),
        extra: anyJson,
      },
      { requiredKeys: [] },
    )
    .map((o) => JSON.stringify(o)),
  fc.constantFrom('{"action":"seek","seconds":1e999}', '{"__proto__":{"action":"stop"}}', '{"action":"play","url":"x","__proto__":null}', 'null', '[]', '"play"', '{'),
  deepNesting.map((d) => '{"action":' + '['.repeat(d) + ']'.repeat(d) + '}'),
);

/** Why `r` is not a well-formed result of parseListenerAction for `text`, or undefined. */
export function actionResultProblem(text: string, r: unknown): string | undefined {
  if (typeof r === 'string') return r.length > 0 ? undefined : 'empty reason';
  if (typeof r !== 'object' || r === null) return `result ${String(r)}`;
  const a = r as Record<string, unknown>;
  const keys = Object.keys(a).sort().join(',');
  let input: Record<string, unknown>;
  try {
    input = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return 'an action from text that is not JSON';
  }
  if (a.action !== input.action) return `action ${String(a.action)} from ${String(input.action)}`;
  switch (a.action) {
    case 'play':
      if (typeof a.url !== 'string' || a.url.length === 0 || a.url !== input.url) return 'bad url';
      if (keys === 'action,url') return input.format === undefined ? undefined : 'format lost';
      return keys === 'action,format,url' && typeof a.format === 'string' && a.format === input.format ? undefined : `keys ${keys}`;
    case 'pause':
    case 'resume':
    case 'stop':
      return keys === 'action' ? undefined : `keys ${keys}`;
    case 'seek':
      return keys === 'action,seconds' && typeof a.seconds === 'number' && Number.isFinite(a.seconds) && a.seconds >= 0 && a.seconds === input.seconds
        ? undefined
        : `bad seek ${JSON.stringify(a)}`;
    default:
      return `unknown action ${String(a.action)}`;
  }
}

/** Whether a JSON text is an action the gateway should accept (an oracle written from the spec). */
function shouldAccept(text: string): boolean {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return false;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const o = v as Record<string, unknown>;
  if (!Object.prototype.hasOwnProperty.call(o, 'action')) return false;
  switch (o.action) {
    case 'play':
      return typeof o.url === 'string' && o.url !== '' && (o.format === undefined || typeof o.format === 'string');
    case 'pause':
    case 'resume':
    case 'stop':
      return true;
    case 'seek':
      return typeof o.seconds === 'number' && Number.isFinite(o.seconds) && o.seconds >= 0;
    default:
      return false;
  }
}

/** parseListenerAction always answers with an action or a reason, never a throw, and agrees with the spec. */
export function listenerActionProperty(): fc.IPropertyWithHooks<[string]> {
  return fc.property(actionTextArb, (text) => {
    const r = parseListenerAction(text);
    const problem = actionResultProblem(text, r);
    if (problem) throw new Error(`${JSON.stringify(text).slice(0, 200)} → ${JSON.stringify(r)}: ${problem}`);
    if ((typeof r !== 'string') !== shouldAccept(text)) {
      throw new Error(`${JSON.stringify(text).slice(0, 200)} → ${JSON.stringify(r)}, expected ${shouldAccept(text) ? 'an action' : 'a refusal'}`);
    }
  });
}

/** Header values of any integer size come back as the value modulo 2^32, the payload untouched. */
export function listenerHeaderProperty(): fc.IPropertyWithHooks<[number, number, Uint8Array, number]> {
  const anyInt = fc.oneof(fc.nat({ max: 0xffffffff }), fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fc.integer({ min: -(2 ** 40), max: -1 }));
  return fc.property(anyInt, anyInt, fc.uint8Array({ maxLength: 64 }), fc.nat(8), (seq, ts, packet, offset) => {
    const msg = new Uint8Array(offset + 8 + packet.length).fill(0xcc);
    writeListenerHeader(msg, offset, seq, ts);
    msg.set(packet, offset + 8);
    const f = parseListenerFrame(msg.subarray(offset));
    const mod = (n: number) => ((n % 2 ** 32) + 2 ** 32) % 2 ** 32;
    if (!f || f.seq !== mod(seq) || f.timestamp !== mod(ts) || !isDeepStrictEqual(Buffer.from(f.payload), Buffer.from(packet))) {
      throw new Error(`header ${seq}/${ts} came back as ${f?.seq}/${f?.timestamp}`);
    }
    for (let i = 0; i < offset; i++) if (msg[i] !== 0xcc) throw new Error('wrote before the offset');
  });
}

// ---- ring (single thread, against a model queue) ----

/**
 * ring.writeDroppingOldest(rec), but first proves on a copy of the ring that it will terminate:
 * it loops until `write` succeeds, so a ring that refuses a record even when empty would hang the
 * whole test run instead of failing it.
 */
export function writeDroppingOldestOrFail(ring: Ring, rec: Uint8Array): number {
  const copy = new SharedArrayBuffer(ring.buffer.byteLength);
  new Uint8Array(copy).set(new Uint8Array(ring.buffer));
  const probe = new Ring(copy);
  probe.clear();
  if (!probe.write(rec)) {
    throw new Error(`writeDroppingOldest of ${rec.length} bytes would never return: the emptied ring (capacity ${ring.capacity}) refuses it`);
  }
  return ring.writeDroppingOldest(rec);
}

type RingOp =
  | { op: 'write'; n: number }
  | { op: 'writeDropping'; n: number }
  | { op: 'read' }
  | { op: 'clear' };

/**
 * Any sequence of ring operations behaves like a queue that drops its oldest entries on demand:
 * `write` fails only when the ring cannot take the record now (and then writes nothing), a
 * dropping write never fails, reads return records intact and in order, and the counters add up.
 * Ring capacities are small relative to records, so wraps, exact fits and "fits only after a
 * wrap" are all common.
 */
export function ringModelProperty(): fc.IPropertyWithHooks<[number, RingOp[]]> {
  const opArb: fc.Arbitrary<RingOp> = fc.oneof(
    { weight: 4, arbitrary: fc.nat(120).map((n) => ({ op: 'write' as const, n })) },
    { weight: 3, arbitrary: fc.nat(120).map((n) => ({ op: 'writeDropping' as const, n })) },
    { weight: 4, arbitrary: fc.constant({ op: 'read' as const }) },
    { weight: 1, arbitrary: fc.constant({ op: 'clear' as const }) },
  );
  return fc.property(fc.integer({ min: 8, max: 300 }), fc.array(opArb, { maxLength: 80 }), (cap, ops) => {
    const ring = Ring.create(cap);
    const model: Uint8Array[] = [];
    const counts = { written: 0, read: 0, dropped: 0, flushed: 0 };
    const dst = new Uint8Array(ring.capacity);
    let seed = 0;
    const fail = (msg: string): never => {
      throw new Error(`${msg} (capacity ${ring.capacity}, model holds ${model.length})`);
    };
    for (const o of ops) {
      if (o.op === 'write' || o.op === 'writeDropping') {
        const n = Math.min(o.n, ring.maxPayload);
        const rec = filled(n, ++seed);
        if (o.op === 'write') {
          const before = ring.stats();
          const freeBefore = ring.freeBytes();
          if (ring.write(rec)) {
            model.push(rec);
            counts.written++;
          } else {
            if (!isDeepStrictEqual(ring.stats(), before)) fail('a failed write changed the ring');
            if (model.length === 0) fail(`write of ${n} bytes failed on an empty ring`);
            // freeBytes() may count one record's worth of space a wrap would waste: a record
            // that needs at most half of it must fit.
            if (2 * (4 + ((n + 3) & ~3)) <= freeBefore) fail(`write of ${n} bytes failed with freeBytes ${freeBefore}`);
          }
        } else {
          const dropped = writeDroppingOldestOrFail(ring, rec);
          if (dropped > model.length) fail(`dropped ${dropped} of ${model.length}`);
          model.splice(0, dropped);
          model.push(rec);
          counts.written++;
          counts.dropped += dropped;
        }
      } else if (o.op === 'read') {
        const n = ring.readInto(dst);
        const want = model.shift();
        if (want === undefined) {
          if (n !== -1) fail(`read ${n} from an empty ring`);
        } else {
          if (n !== want.length) fail(`read ${n} bytes, expected ${want.length}`);
          if (!isDeepStrictEqual(Buffer.from(dst.subarray(0, n)), Buffer.from(want))) fail('record corrupted');
          counts.read++;
        }
      } else {
        counts.flushed += model.length;
        model.length = 0;
        ring.clear();
      }
      const s = ring.stats();
      if (s.records !== model.length) fail(`records ${s.records}`);
      if (ring.isEmpty() !== (model.length === 0)) fail(`isEmpty ${ring.isEmpty()}`);
      if (s.written !== counts.written || s.read !== counts.read || s.dropped !== counts.dropped || s.flushed !== counts.flushed) {
        fail(`stats ${JSON.stringify(s)} vs ${JSON.stringify(counts)}`);
      }
      const payloadBytes = model.reduce((a, r) => a + 4 + ((r.length + 3) & ~3), 0);
      if (s.usedBytes < payloadBytes || s.usedBytes >= s.capacityBytes) fail(`usedBytes ${s.usedBytes} for ${payloadBytes} of records`);
    }
  });
}

/** Every property, by name, for scripts/fuzz.ts. */
export const PROPERTIES = {
  'decoder: chunking of valid streams': decoderChunkingProperty,
  'decoder: hostile input': decoderHostileInputProperty,
  'listener: actions': listenerActionProperty,
  'listener: header round trip': listenerHeaderProperty,
  'ring: model': ringModelProperty,
} as const;
