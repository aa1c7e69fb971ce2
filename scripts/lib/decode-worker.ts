/**
 * A listener process's decoding thread: checks that a stretch of a session's Opus packets carries
 * that session's tone. Decoding costs ~100 µs a frame on a small machine, so it runs here, off the
 * thread that timestamps frames, and only on a sample of stretches (the byte-for-byte check in the
 * listener covers every frame when the engine is synthetic).
 *
 *   in   { id, hz, packets: ArrayBuffer[] }   WARMUP + WINDOW consecutive packets (transferred)
 *   out  { id, hz, ratio }                    Goertzel power at hz / mean square, left channel,
 *                                             over the WINDOW frames after a fresh decoder's
 *                                             WARMUP: ~0.5 for the session's own tone, ~0 for
 *                                             any other session's (tones.ts: exact DFT bins)
 */
import { parentPort } from 'node:worker_threads';
import opus from '@discordjs/opus';
import { CHANNELS, FRAME_SAMPLES, SAMPLE_RATE } from '../../src/shared/audio.js';

export const DECODE_WARMUP_FRAMES = 2;
export const DECODE_WINDOW_FRAMES = 16;
/** A check passes at this ratio or more (own tone ~0.5, another session's ~0). */
export const DECODE_PASS_RATIO = 0.3;

export interface DecodeRequest {
  id: string;
  hz: number;
  packets: ArrayBuffer[];
}

export interface DecodeAnswer {
  id: string;
  hz: number;
  ratio: number;
  error?: string;
}

/** Goertzel power at `hz` over `x`, divided by the mean square of `x`. */
export function toneRatio(x: Float64Array, hz: number): number {
  const n = x.length;
  const coeff = 2 * Math.cos((2 * Math.PI * hz) / SAMPLE_RATE);
  let s1 = 0;
  let s2 = 0;
  let energy = 0;
  for (let i = 0; i < n; i++) {
    const v = x[i]!;
    energy += v * v;
    const s0 = v + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  if (energy === 0) return 0;
  const power = (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (n * n);
  return power / (energy / n);
}

function check(req: DecodeRequest): DecodeAnswer {
  const decoder = new opus.OpusEncoder(SAMPLE_RATE, CHANNELS);
  const left = new Float64Array(DECODE_WINDOW_FRAMES * FRAME_SAMPLES);
  let at = 0;
  req.packets.forEach((ab, i) => {
    const pcm = decoder.decode(Buffer.from(ab));
    if (i < DECODE_WARMUP_FRAMES) return;
    const samples = Math.min(FRAME_SAMPLES, pcm.length / (2 * CHANNELS));
    for (let s = 0; s < samples && at < left.length; s++) left[at++] = pcm.readInt16LE(s * 2 * CHANNELS);
  });
  return { id: req.id, hz: req.hz, ratio: toneRatio(left.subarray(0, at), req.hz) };
}

parentPort?.on('message', (req: DecodeRequest) => {
  let answer: DecodeAnswer;
  try {
    answer = check(req);
  } catch (err) {
    answer = { id: req.id, hz: req.hz, ratio: 0, error: (err as Error).message };
  }
  parentPort!.postMessage(answer);
});
