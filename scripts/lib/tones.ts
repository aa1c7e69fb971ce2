/**
 * The load scripts' tones: every session plays its own frequency, so a listener can tell its own
 * audio from another session's.
 *
 *   Frequencies  toneHz(i) = 300 Hz + 3.125 Hz · k, spread so sessions 0…1999 are 6.25 Hz apart
 *                (300 … 12 793.75 Hz) and sessions 2000…3999 sit half-way between them. Every
 *                one is a multiple of 3.125 Hz = 1 / (16 frames · 20 ms): a LOOP_FRAMES-frame
 *                stretch holds a whole number of cycles, so
 *                - the pre-encoded loop repeats without a phase jump, and
 *                - over a 16-frame window (15 360 samples) every tone sits exactly on a DFT bin,
 *                  so two sessions' tones are orthogonal: a listener's Goertzel power at its own
 *                  frequency is ~0.5 · mean square for its own audio and ~0 for anyone else's.
 *   Loop         a session's Opus packets: LOOP_FRAMES consecutive 20 ms frames of the tone,
 *                encoded once (after PREROLL_FRAMES to settle the encoder) with @discordjs/opus
 *                at 128 kb/s, complexity 0 (the packets are the size a real 128 kb/s stream has;
 *                complexity only changes the encoder's CPU cost, which the load scripts do not
 *                measure). The synthetic engine replays the loop; a listener holding the same
 *                packets checks every frame byte for byte (misrouted / content gap), and decodes
 *                a sample to check the frequency.
 *   Cache        encodes are slow on a small machine (~150 µs a frame), so loops are kept under
 *                artifacts/tone-cache/ (gitignored): a sweep to 2000 sessions encodes once.
 *
 * Encoding is deterministic (same libopus, same input, same settings), so a loop fetched from the
 * engine, read from the cache or encoded again is the same bytes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import opus from '@discordjs/opus';
import { CHANNELS, FRAME_SAMPLES, SAMPLE_RATE } from '../../src/shared/audio.js';

export const LOOP_FRAMES = 16;
export const PREROLL_FRAMES = 4;
export const TONE_BASE_HZ = 300;
/** One DFT bin of a LOOP_FRAMES window. */
export const TONE_BIN_HZ = SAMPLE_RATE / (LOOP_FRAMES * FRAME_SAMPLES);
/** Sessions with a frequency of their own; above this frequencies repeat (decoded checks weaken). */
export const DISTINCT_TONES = 4000;
export const TONE_BITRATE = 128_000;
export const TONE_AMPLITUDE = 0.3 * 32767;
const OPUS_SET_COMPLEXITY = 4010;
const CACHE_VERSION = 'v1';

/** Frequency of session number `index` (0-based). */
export function toneHz(index: number): number {
  const i = index % DISTINCT_TONES;
  const half = DISTINCT_TONES / 2;
  const bin = i < half ? 2 * i : 2 * (i - half) + 1;
  return TONE_BASE_HZ + TONE_BIN_HZ * bin;
}

/** The play URL of a tone (the real engine's syntax: `tone:<hz>[?seconds=n]`). */
export function toneUrl(hz: number, seconds?: number): string {
  return seconds === undefined ? `tone:${hz}` : `tone:${hz}?seconds=${seconds}`;
}

const TONE_URL = /^tone:(\d+(?:\.\d+)?)(?:\?seconds=(\d+(?:\.\d+)?))?$/;

/** Parses a `tone:` URL as the real engine does; undefined when it is not one it accepts. */
export function parseToneUrl(url: string, defaultSeconds = 30): { hz: number; seconds: number } | undefined {
  const m = TONE_URL.exec(url);
  if (!m) return undefined;
  const hz = Number(m[1]);
  const seconds = m[2] === undefined ? defaultSeconds : Number(m[2]);
  if (!(hz >= 1 && hz < 24_000) || !(seconds > 0 && seconds <= 86_400)) return undefined;
  return { hz, seconds };
}

/** s16le stereo PCM of frames [first, first + count) of a sine at `hz` (phase 0 at frame 0). */
export function tonePcm(hz: number, first: number, count: number): Buffer {
  const pcm = Buffer.allocUnsafe(count * FRAME_SAMPLES * CHANNELS * 2);
  const w = (2 * Math.PI * hz) / SAMPLE_RATE;
  for (let n = 0; n < count * FRAME_SAMPLES; n++) {
    const v = Math.round(TONE_AMPLITUDE * Math.sin(w * (first * FRAME_SAMPLES + n)));
    pcm.writeInt16LE(v, n * 4);
    pcm.writeInt16LE(v, n * 4 + 2);
  }
  return pcm;
}

/** Encodes a tone's loop: LOOP_FRAMES Opus packets (frames 0…15 after a pre-roll of -4…-1). */
export function encodeToneLoop(hz: number): Buffer[] {
  const encoder = new opus.OpusEncoder(SAMPLE_RATE, CHANNELS);
  encoder.setBitrate(TONE_BITRATE);
  encoder.applyEncoderCTL(OPUS_SET_COMPLEXITY, 0);
  const frameBytes = FRAME_SAMPLES * CHANNELS * 2;
  const pcm = tonePcm(hz, -PREROLL_FRAMES, PREROLL_FRAMES + LOOP_FRAMES);
  const out: Buffer[] = [];
  for (let f = 0; f < PREROLL_FRAMES + LOOP_FRAMES; f++) {
    const packet = encoder.encode(pcm.subarray(f * frameBytes, (f + 1) * frameBytes));
    if (f >= PREROLL_FRAMES) out.push(Buffer.from(packet));
  }
  return out;
}

/** Loop packets as bytes: u16be count, then per packet u16be length and the packet. */
export function serializeLoop(packets: readonly Buffer[]): Buffer {
  const size = 2 + packets.reduce((n, p) => n + 2 + p.length, 0);
  const out = Buffer.allocUnsafe(size);
  out.writeUInt16BE(packets.length, 0);
  let off = 2;
  for (const p of packets) {
    out.writeUInt16BE(p.length, off);
    p.copy(out, off + 2);
    off += 2 + p.length;
  }
  return out;
}

export function deserializeLoop(bytes: Buffer): Buffer[] {
  if (bytes.length < 2) throw new Error('tone loop: truncated');
  const count = bytes.readUInt16BE(0);
  const out: Buffer[] = [];
  let off = 2;
  for (let i = 0; i < count; i++) {
    if (off + 2 > bytes.length) throw new Error('tone loop: truncated');
    const len = bytes.readUInt16BE(off);
    if (off + 2 + len > bytes.length) throw new Error('tone loop: truncated');
    out.push(Buffer.from(bytes.subarray(off + 2, off + 2 + len)));
    off += 2 + len;
  }
  return out;
}

/** artifacts/tone-cache under the repository (this file is dist-scripts/scripts/lib/tones.js). */
export function defaultCacheDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return path.resolve(here, '../../../artifacts/tone-cache', `${CACHE_VERSION}-${TONE_BITRATE}-${LOOP_FRAMES}`);
}

/** Tone loops by frequency: memory, then the disk cache, then the encoder. */
export class ToneBank {
  private readonly loops = new Map<number, Buffer[]>();
  encoded = 0;
  fromDisk = 0;

  /** `cacheDir` undefined: the default; null: no disk cache. */
  constructor(private readonly cacheDir: string | null = defaultCacheDir()) {}

  get(hz: number): Buffer[] {
    let loop = this.loops.get(hz);
    if (loop) return loop;
    const file = this.cacheDir === null ? undefined : path.join(this.cacheDir, `${hz}.bin`);
    if (file !== undefined) {
      try {
        loop = deserializeLoop(fs.readFileSync(file));
        if (loop.length === LOOP_FRAMES) this.fromDisk++;
        else loop = undefined;
      } catch {
        loop = undefined;
      }
    }
    if (!loop) {
      loop = encodeToneLoop(hz);
      this.encoded++;
      if (file !== undefined) {
        try {
          fs.mkdirSync(this.cacheDir!, { recursive: true });
          const tmp = `${file}.${process.pid}.tmp`;
          fs.writeFileSync(tmp, serializeLoop(loop));
          fs.renameSync(tmp, file);
        } catch {
          // A read-only checkout still works, only slower to start.
        }
      }
    }
    this.loops.set(hz, loop);
    return loop;
  }

  /** Makes sure the loops of these frequencies are ready (encodes what is missing). */
  prepare(hzs: Iterable<number>, onProgress?: (done: number, total: number) => void): void {
    const list = [...hzs];
    let done = 0;
    for (const hz of list) {
      this.get(hz);
      done++;
      if (onProgress && done % 100 === 0) onProgress(done, list.length);
    }
  }
}
