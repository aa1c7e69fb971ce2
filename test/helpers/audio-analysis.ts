/**
 * Small audio checks for tests: which frequency a stretch of PCM carries (Goertzel), and whether
 * it has a click (a sample-to-sample step larger than a sine of that frequency allows).
 * Input is s16le interleaved PCM as chorus moves it (48 kHz stereo by default).
 */

/** One channel of interleaved s16le PCM, as numbers. */
export function channel(pcm: Buffer, channels = 2, which = 0): Float64Array {
  const frames = Math.floor(pcm.length / (2 * channels));
  const out = new Float64Array(frames);
  for (let i = 0; i < frames; i++) out[i] = pcm.readInt16LE((i * channels + which) * 2);
  return out;
}

/** Power of `freq` in `samples` (Goertzel), normalised so a full-length sine of amplitude A gives A²/4. */
export function goertzel(samples: ArrayLike<number>, sampleRate: number, freq: number): number {
  const n = samples.length;
  if (n === 0) return 0;
  const w = (2 * Math.PI * freq) / sampleRate;
  const coeff = 2 * Math.cos(w);
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < n; i++) {
    const s0 = samples[i]! + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  const power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
  return power / (n * n);
}

/** The strongest frequency between `min` and `max` Hz: a coarse scan, then a finer one around the peak. */
export function dominantFrequency(samples: ArrayLike<number>, sampleRate = 48_000, min = 50, max = 4000): number {
  const scan = (from: number, to: number, step: number) => {
    let best = from;
    let bestPower = -1;
    for (let f = from; f <= to; f += step) {
      const p = goertzel(samples, sampleRate, f);
      if (p > bestPower) {
        bestPower = p;
        best = f;
      }
    }
    return best;
  };
  const coarse = scan(min, max, 10);
  return scan(Math.max(min, coarse - 10), Math.min(max, coarse + 10), 0.5);
}

/** Largest |x[i] - x[i-1]|. */
export function maxStep(samples: ArrayLike<number>): number {
  let max = 0;
  for (let i = 1; i < samples.length; i++) max = Math.max(max, Math.abs(samples[i]! - samples[i - 1]!));
  return max;
}

/** Largest |x[i]|. */
export function peak(samples: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < samples.length; i++) max = Math.max(max, Math.abs(samples[i]!));
  return max;
}

/** The largest step a sine of this peak amplitude and frequency makes between two samples. */
export function sineMaxStep(amplitude: number, freq: number, sampleRate = 48_000): number {
  return 2 * amplitude * Math.sin((Math.PI * freq) / sampleRate);
}

/**
 * A linear chirp, whose frequency tells the time: f(t) = f0 + slope·t Hz. A test plays it and
 * reads back from any stretch of what was heard where in the source that stretch came from.
 */
export interface Chirp {
  f0: number;
  /** Hz per second. */
  slope: number;
}

/** ffmpeg's aevalsrc expression for the chirp (phase 2π(f0·t + slope·t²/2)) at amplitude 0.5. */
export function chirpExpression({ f0, slope }: Chirp): string {
  return `0.5*sin(2*PI*(${f0}*t+${slope / 2}*t*t))`;
}

/** Seconds into the chirp where `samples` begin, from their dominant frequency (the window's middle). */
export function chirpTime(samples: ArrayLike<number>, { f0, slope }: Chirp, sampleRate = 48_000): number {
  const seconds = samples.length / sampleRate;
  const highest = Math.min(20_000, f0 + slope * 60);
  const f = dominantFrequency(samples, sampleRate, Math.max(50, f0 - 50), highest);
  return (f - f0) / slope - seconds / 2;
}
