/**
 * Opus packet lengths from the TOC byte (RFC 6716 §3.1, src/shared/opus-packet.ts): every config
 * and frame-count code by the table, and packets that real libopus made at 20, 40 and 60 ms.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { resolveFfmpeg } from '../../src/shared/ffmpeg.js';
import { OggPacketReader } from '../../src/shared/ogg.js';
import { opusPacketSamples } from '../../src/shared/opus-packet.js';

/** The Ogg Opus stream of `seconds` of a tone that libopus made with `frameMs` frames and `channels`. */
function libopus(frameMs: number, channels: number): { packets: Buffer[] } {
  const ogg = execFileSync(resolveFfmpeg().path, [
    '-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000:duration=1',
    '-ac', String(channels), '-c:a', 'libopus', '-frame_duration', String(frameMs), '-f', 'ogg', 'pipe:1',
  ]);
  const packets: Buffer[] = [];
  new OggPacketReader((b, s, e) => packets.push(Buffer.from(b.subarray(s, e)))).push(ogg);
  return { packets };
}

describe('Opus TOC', () => {
  it('frame length by config, frame count by code', () => {
    const toc = (config: number, code: number) => Uint8Array.of((config << 3) | code, 0x03);
    // SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms: one frame.
    expect([0, 1, 2, 3, 9, 12, 13, 16, 17, 18, 19, 31].map((c) => opusPacketSamples(toc(c, 0)))).toEqual([480, 960, 1920, 2880, 960, 480, 960, 120, 240, 480, 960, 960]);
    // Codes 1 and 2: two frames; code 3: the count in the next byte (3 here).
    expect(opusPacketSamples(toc(1, 1))).toBe(1920);
    expect(opusPacketSamples(toc(30, 2))).toBe(960);
    expect(opusPacketSamples(toc(18, 3))).toBe(1440);
    expect(opusPacketSamples(Uint8Array.of((18 << 3) | 3))).toBeUndefined();
    expect(opusPacketSamples(new Uint8Array(0))).toBeUndefined();
  });

  it('reads what libopus made: 20 ms packets are 960 samples, 40 and 60 ms ones are not', () => {
    for (const [ms, samples] of [[20, 960], [40, 1920], [60, 2880]] as const) {
      const { packets } = libopus(ms, 2);
      expect(packets.length).toBeGreaterThan(10);
      expect(new Set(packets.map((p) => opusPacketSamples(p)))).toEqual(new Set([samples]));
    }
  });
});
