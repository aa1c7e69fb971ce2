/**
 * Ogg Opus pages: what the writer makes, real ffmpeg's `-f ogg -page_duration 20000` stream (what
 * natashi's engine sends), and the reader under any chunking, with bad input; its headers go to
 * the optional `header` callback.
 */
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isOpusHeader, MAX_OGG_PAGE_BYTES, oggCrc, OggOpusWriter, oggPage, OggPacketReader, parseOpusHead } from '../../src/shared/ogg.js';
import { resolveFfmpeg } from '../../src/shared/ffmpeg.js';
import { channel, dominantFrequency } from '../helpers/audio-analysis.js';

const require = createRequire(import.meta.url);
const { OpusEncoder } = require('@discordjs/opus') as typeof import('@discordjs/opus');

function readAll(chunks: Uint8Array[], maxPacket?: number): { packets: Buffer[]; reader: OggPacketReader } {
  const packets: Buffer[] = [];
  const reader = new OggPacketReader((b, s, e) => packets.push(Buffer.from(b.subarray(s, e))), maxPacket);
  for (const c of chunks) reader.push(c);
  return { packets, reader };
}

function cut(bytes: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size));
  return out;
}

function concat(parts: Uint8Array[]): Buffer {
  return Buffer.concat(parts.map((p) => Buffer.from(p)));
}

function ffmpegOgg(hz: number, seconds: number, channels = 2): Buffer {
  return execFileSync(resolveFfmpeg().path, [
    '-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', `sine=frequency=${hz}:sample_rate=48000:duration=${seconds}`,
    '-ac', String(channels), '-ar', '48000', '-c:a', 'libopus', '-b:a', '128000', '-frame_duration', '20', '-f', 'ogg', '-page_duration', '20000', 'pipe:1',
  ], { maxBuffer: 16 << 20 });
}

describe('Ogg pages', () => {
  it('the CRC is Ogg\'s (a known vector) and every written page carries its own', () => {
    expect(oggCrc(new TextEncoder().encode('123456789'))).toBe(0x89a1897f);
    const page = oggPage({ flags: 2, granule: 2 ** 33 + 5, serial: 0xdeadbeef, sequence: 7 }, new Uint8Array(600).fill(3));
    const view = new DataView(page.buffer);
    expect(view.getUint32(6, true) + view.getUint32(10, true) * 2 ** 32).toBe(2 ** 33 + 5);
    expect([...page.subarray(26, 30)]).toEqual([3, 255, 255, 90]);
    const stored = view.getUint32(22, true);
    view.setUint32(22, 0, true);
    expect(oggCrc(page)).toBe(stored);
  });

  it('writer to reader gives the packets back under any chunking, headers left out', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 1276 }), { minLength: 1, maxLength: 30 }), fc.integer({ min: 1, max: 5000 }), (sizes, chunk) => {
        const writer = new OggOpusWriter(42);
        const packets = sizes.map((n, i) => new Uint8Array(n).fill(i & 0xff));
        const stream = concat([...writer.headers(), ...packets.map((p) => writer.packet(p))]);
        const { packets: got, reader } = readAll(cut(stream, chunk));
        expect(got.map((p) => p.length)).toEqual(sizes);
        expect(got.every((p, i) => p.every((b) => b === (i & 0xff)))).toBe(true);
        expect(reader.counters).toMatchObject({ pages: sizes.length + 2, badPages: 0, skippedBytes: 0 });
      }),
      { numRuns: 300 },
    );
  });

  it('the headers are an OpusHead page (first of the stream) and an OpusTags page', () => {
    const [head, tags] = new OggOpusWriter(1, 312).headers();
    expect(head![5]).toBe(2);
    expect(isOpusHeader(head!, 28)).toBe(true);
    expect(Buffer.from(head!.subarray(28, 36)).toString()).toBe('OpusHead');
    expect(head![37]).toBe(2);
    expect(Buffer.from(head!).readUInt16LE(38)).toBe(312);
    expect(Buffer.from(tags!.subarray(28, 36)).toString()).toBe('OpusTags');
  });

  it('reads real ffmpeg Ogg Opus in 4096-byte reads: one 20 ms packet a page, decoding to the tone', () => {
    const ogg = ffmpegOgg(523, 1);
    const { packets, reader } = readAll(cut(ogg, 4096));
    expect(Math.abs(packets.length - 50)).toBeLessThanOrEqual(1);
    expect(reader.counters.badPages).toBe(0);
    const decoder = new OpusEncoder(48_000, 2);
    const pcm = Buffer.concat(packets.map((p) => decoder.decode(p)));
    expect(pcm.length).toBe(packets.length * 3840);
    expect(Math.abs(dominantFrequency(channel(pcm).subarray(4800)) - 523)).toBeLessThanOrEqual(2);
  });

  it('hands the OpusHead and OpusTags packets to `header`, in order, before any packet', () => {
    const order: string[] = [];
    const reader = new OggPacketReader(
      () => order.push('packet'),
      undefined,
      (b, s, e) => order.push(Buffer.from(b.subarray(s, Math.min(e, s + 8))).toString()),
    );
    for (const c of cut(ffmpegOgg(440, 0.1), 100)) reader.push(c);
    expect(order.slice(0, 3)).toEqual(['OpusHead', 'OpusTags', 'packet']);
    expect(order.filter((o) => o === 'packet').length).toBeGreaterThanOrEqual(5);
  });

  it('OpusHead: channels, pre-skip and mapping family; anything else is not one', () => {
    const heads = (channels: number) => {
      const found: Buffer[] = [];
      new OggPacketReader(() => undefined, undefined, (b, s, e) => found.push(Buffer.from(b.subarray(s, e)))).push(ffmpegOgg(440, 0.1, channels));
      return found;
    };
    const mono = parseOpusHead(heads(1)[0]!);
    expect(mono).toEqual({ channels: 1, preSkip: 312, mappingFamily: 0 });
    expect(parseOpusHead(heads(2)[0]!)?.channels).toBe(2);
    expect(parseOpusHead(heads(2)[1]!)).toBeUndefined();
    expect(parseOpusHead(Buffer.from('OpusHead'))).toBeUndefined();
  });

  it('joins a packet continued over pages, and drops one whose start was never seen', () => {
    const big = new Uint8Array(700).map((_, i) => i & 0xff);
    const p1 = oggPage({ flags: 0, granule: 0, serial: 1, sequence: 0 }, big.subarray(0, 510));
    // The first page ends with two lacing values of 255: the packet goes on.
    const first = concat([p1.subarray(0, 26), Uint8Array.of(2, 255, 255), p1.subarray(30)]);
    fixCrc(first);
    const second = concat([oggPage({ flags: 1, granule: 960, serial: 1, sequence: 1 }, big.subarray(510))]);
    const { packets } = readAll([first, second]);
    expect(packets).toEqual([Buffer.from(big)]);
    // Only the continuation: its tail is not a packet.
    const { packets: none } = readAll([second, oggPage({ flags: 0, granule: 0, serial: 1, sequence: 2 }, Uint8Array.of(9))]);
    expect(none).toEqual([Buffer.from([9])]);
  });

  it('skips garbage and pages with a bad CRC, and finds the next page', () => {
    const writer = new OggOpusWriter(5);
    const a = writer.packet(Uint8Array.of(1, 2, 3));
    const bad = Uint8Array.from(writer.packet(Uint8Array.of(4, 5, 6)));
    bad[bad.length - 1]! ^= 0xff;
    const c = writer.packet(Uint8Array.of(7, 8));
    const stream = concat([Buffer.from('garbage OggS nope'), a, bad, Buffer.from('O'), c]);
    for (const size of [1, 3, 7, stream.length]) {
      const { packets, reader } = readAll(cut(stream, size));
      expect(packets).toEqual([Buffer.from([1, 2, 3]), Buffer.from([7, 8])]);
      expect(reader.counters.badPages).toBe(1);
      expect(reader.counters.skippedBytes).toBeGreaterThan(0);
    }
  });

  it('a packet over the bound is dropped and counted; memory stays at one page and one packet', () => {
    const writer = new OggOpusWriter(9);
    const stream = concat([writer.packet(new Uint8Array(5000)), writer.packet(Uint8Array.of(1))]);
    const { packets, reader } = readAll(cut(stream, 1000), 2000);
    expect(packets).toEqual([Buffer.from([1])]);
    expect(reader.counters.oversizePackets).toBe(1);
    expect(MAX_OGG_PAGE_BYTES).toBe(65_307);
  });

  it('random bytes never throw', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 20 }), (chunks) => {
        readAll(chunks.map((c) => Uint8Array.from([0x4f, 0x67, 0x67, 0x53, 0, ...c])));
      }),
      { numRuns: 500 },
    );
  });
});

function fixCrc(page: Buffer): void {
  page.writeUInt32LE(0, 22);
  page.writeUInt32LE(oggCrc(page), 22);
}
