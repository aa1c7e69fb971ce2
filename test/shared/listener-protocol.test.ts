import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  LISTENER_HEADER_BYTES,
  parseListenerAction,
  parseListenerFrame,
  writeListenerHeader,
} from '../../src/shared/listener-protocol.js';
import { FUZZ_RUNS, listenerActionProperty, listenerHeaderProperty } from './properties.js';

describe('listener frame header', () => {
  it.each([
    [0, 0],
    [1, 960],
    [0x7fffffff, 0x80000000], // around 2^31, where signed shifts go negative
    [0x80000000, 0xfffffc40],
    [0xffffffff, 0xffffffff],
    [0x01020304, 0xa0b0c0d0],
  ])('round-trips seq %i and timestamp %i, big-endian', (seq, timestamp) => {
    const msg = new Uint8Array(LISTENER_HEADER_BYTES + 3);
    writeListenerHeader(msg, 0, seq, timestamp);
    msg.set([9, 8, 7], LISTENER_HEADER_BYTES);
    const view = new DataView(msg.buffer);
    expect(view.getUint32(0)).toBe(seq);
    expect(view.getUint32(4)).toBe(timestamp);
    expect(parseListenerFrame(msg)).toEqual({ seq, timestamp, payload: new Uint8Array([9, 8, 7]) });
  });

  it('wraps counters at 2^32: seq + 1 after 0xffffffff is 0, and so is 2^32 itself', () => {
    const msg = new Uint8Array(LISTENER_HEADER_BYTES);
    writeListenerHeader(msg, 0, 2 ** 32, 2 ** 32 + 960);
    expect(parseListenerFrame(msg)).toMatchObject({ seq: 0, timestamp: 960 });
    writeListenerHeader(msg, 0, -1, 2 ** 33 - 1);
    expect(parseListenerFrame(msg)).toMatchObject({ seq: 0xffffffff, timestamp: 0xffffffff });
    // a player computing the gap across the wrap sees exactly one frame
    const a = parseListenerFrame(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]))!;
    const b = parseListenerFrame(Uint8Array.from([0, 0, 0, 0, 0, 0, 3, 0xc0]))!;
    expect((b.seq - a.seq) >>> 0).toBe(1);
    expect(b.timestamp).toBe(960);
  });

  it('writes at an offset and leaves the bytes around it alone', () => {
    const msg = new Uint8Array(20).fill(0xaa);
    writeListenerHeader(msg, 5, 0x11223344, 0x55667788);
    expect(Array.from(msg.subarray(0, 5))).toEqual([0xaa, 0xaa, 0xaa, 0xaa, 0xaa]);
    expect(Array.from(msg.subarray(5, 13))).toEqual([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    expect(Array.from(msg.subarray(13))).toEqual(Array(7).fill(0xaa));
  });

  it('the payload is a view into the message, and a header alone is a frame with an empty payload', () => {
    const msg = new Uint8Array(LISTENER_HEADER_BYTES + 2);
    const f = parseListenerFrame(msg)!;
    msg[LISTENER_HEADER_BYTES] = 42;
    expect(f.payload[0]).toBe(42);
    expect(parseListenerFrame(new Uint8Array(LISTENER_HEADER_BYTES))!.payload).toHaveLength(0);
  });

  it.each([0, 1, 7])('a message of %i bytes is too short to be a frame', (n) => {
    expect(parseListenerFrame(new Uint8Array(n))).toBeUndefined();
  });

  it(`round-trips any integer header modulo 2^32 (${FUZZ_RUNS} cases)`, () => {
    fc.assert(listenerHeaderProperty(), { numRuns: FUZZ_RUNS });
  });
});

describe('listener actions', () => {
  it.each([
    ['{"action":"play","url":"tone:440"}', { action: 'play', url: 'tone:440' }],
    ['{"action":"play","url":"https://x/y.mp3","format":"web"}', { action: 'play', url: 'https://x/y.mp3', format: 'web' }],
    ['{"action":"pause"}', { action: 'pause' }],
    ['{"action":"resume","ignored":true}', { action: 'resume' }],
    ['{"action":"stop"}', { action: 'stop' }],
    ['{"action":"seek","seconds":0}', { action: 'seek', seconds: 0 }],
    ['{"action":"seek","seconds":12.5}', { action: 'seek', seconds: 12.5 }],
    ['  {"action":"stop"}\n', { action: 'stop' }],
  ])('accepts %s', (text, want) => {
    expect(parseListenerAction(text)).toEqual(want);
  });

  it.each([
    ['', /not valid JSON/],
    ['{', /not valid JSON/],
    ['play', /not valid JSON/],
    ['null', /JSON object/],
    ['[{"action":"stop"}]', /JSON object/],
    ['"stop"', /JSON object/],
    ['42', /JSON object/],
    ['{}', /unknown action/],
    ['{"action":"PLAY","url":"x"}', /unknown action/],
    ['{"action":"toString"}', /unknown action/],
    ['{"action":["stop"]}', /unknown action/],
    ['{"__proto__":{"action":"stop"}}', /unknown action/],
    ['{"action":"play"}', /url/],
    ['{"action":"play","url":""}', /url/],
    ['{"action":"play","url":7}', /url/],
    ['{"action":"play","url":"x","format":5}', /format/],
    ['{"action":"play","url":"x","format":null}', /format/],
    ['{"action":"seek"}', /seconds/],
    ['{"action":"seek","seconds":"5"}', /seconds/],
    ['{"action":"seek","seconds":-1}', /seconds/],
    ['{"action":"seek","seconds":1e999}', /seconds/],
    ['{"action":"seek","seconds":null}', /seconds/],
  ])('refuses %s with a reason', (text, why) => {
    const r = parseListenerAction(text);
    expect(typeof r).toBe('string');
    expect(r).toMatch(why);
  });

  it('refuses deeply nested JSON without throwing', () => {
    const deep = '{"action":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}';
    expect(parseListenerAction(deep)).toMatch(/unknown action/);
  });

  it(`answers any text with an action or a reason, never a throw, as the spec says (${FUZZ_RUNS} cases)`, () => {
    fc.assert(listenerActionProperty(), { numRuns: FUZZ_RUNS });
  });
});
