/**
 * Lavalink's filters as ffmpeg chains, run through the real ffmpeg on a sine: each does to the
 * sound what Lavalink's does (a muted band is silent, rate doubles the pitch, channelMix swaps…).
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { FILTER_NAMES, filterChain, FilterError, parseFilters, playbackRate, type Sound } from '../../src/shared/audio-filters.js';
import { resolveFfmpeg } from '../../src/shared/ffmpeg.js';
import { channel, dominantFrequency, goertzel } from '../helpers/audio-analysis.js';

const ffmpeg = resolveFfmpeg().path;
const RATE = 48_000;

/** `seconds` of a sine at `hz` (left only when `leftOnly`), through the chain, as 48 kHz stereo s16le. */
function run(sound: Sound, hz: number, seconds = 2, leftOnly = false): Buffer {
  const source = leftOnly ? `sine=frequency=${hz}:duration=${seconds}[a];anullsrc=r=48000:cl=mono[b];[a][b]amerge=inputs=2` : `sine=frequency=${hz}:duration=${seconds}`;
  const chain = filterChain(sound);
  return execFileSync(ffmpeg, ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', source, ...(chain ? ['-af', chain] : []), '-ac', '2', '-ar', '48000', '-f', 's16le', 'pipe:1'], { maxBuffer: 64 << 20 });
}

const rms = (x: Float64Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / Math.max(1, x.length));
/** RMS of each `ms` window. */
function envelope(x: Float64Array, ms: number): number[] {
  const n = (RATE * ms) / 1000;
  const out: number[] = [];
  for (let i = 0; i + n <= x.length; i += n) out.push(rms(x.subarray(i, i + n)));
  return out;
}

describe('filterChain', () => {
  const plain = run({}, 1000);
  const plainLeft = rms(channel(plain, 2, 0));

  it('changes nothing without gain or filters', () => {
    expect(filterChain({})).toBeUndefined();
    expect(filterChain({ gain: 1, filters: {} })).toBeUndefined();
    expect(filterChain({ gain: 0.5 })).toMatch(/volume=0\.5$/);
  });

  it('equalizer: -0.25 mutes the band, 0.25 doubles it, other bands stay', () => {
    const muted = rms(channel(run({ filters: { equalizer: [{ band: 8, gain: -0.25 }] } }, 1000), 2, 0).subarray(RATE / 2));
    const doubled = rms(channel(run({ filters: { equalizer: [{ band: 8, gain: 0.25 }] } }, 1000), 2, 0).subarray(RATE / 2));
    const elsewhere = rms(channel(run({ filters: { equalizer: [{ band: 0, gain: -0.25 }] } }, 1000), 2, 0).subarray(RATE / 2));
    expect(muted / plainLeft).toBeLessThan(0.04);
    expect(doubled / plainLeft).toBeGreaterThan(1.9);
    expect(doubled / plainLeft).toBeLessThan(2.1);
    expect(elsewhere / plainLeft).toBeGreaterThan(0.95);
  });

  it('timescale: rate 2 doubles pitch and halves length; speed 2 halves length at the same pitch; pitch 1.5 keeps length', () => {
    const rate = run({ filters: { timescale: { rate: 2 } } }, 440);
    expect(rate.length / plain.length).toBeCloseTo(0.5, 1);
    expect(dominantFrequency(channel(rate, 2, 0).subarray(4800, 24_000))).toBeCloseTo(880, -1);
    const speed = run({ filters: { timescale: { speed: 2 } } }, 440);
    expect(speed.length / plain.length).toBeCloseTo(0.5, 1);
    expect(dominantFrequency(channel(speed, 2, 0).subarray(4800, 24_000))).toBeCloseTo(440, -1);
    const pitch = run({ filters: { timescale: { pitch: 1.5 } } }, 440);
    expect(pitch.length / plain.length).toBeCloseTo(1, 1);
    expect(dominantFrequency(channel(pitch, 2, 0).subarray(4800, 48_000))).toBeCloseTo(660, -1);
    expect(playbackRate({ timescale: { speed: 1.5, rate: 2, pitch: 3 } })).toBe(3);
  });

  it('tremolo modulates the level at its frequency; vibrato the pitch', () => {
    const trem = envelope(channel(run({ filters: { tremolo: { frequency: 4, depth: 1 } } }, 1000), 2, 0), 10);
    expect(Math.min(...trem) / Math.max(...trem)).toBeLessThan(0.2);
    const flat = envelope(channel(plain, 2, 0), 10).slice(1);
    expect(Math.min(...flat) / Math.max(...flat)).toBeGreaterThan(0.95);
    const vib = channel(run({ filters: { vibrato: { frequency: 5, depth: 1 } } }, 1000), 2, 0);
    // The carrier's power spreads into side bands: much less stays at exactly 1000 Hz.
    expect(goertzel(vib.subarray(RATE / 2), RATE, 1000) / goertzel(channel(plain, 2, 0).subarray(RATE / 2), RATE, 1000)).toBeLessThan(0.7);
  });

  it('rotation pans between left and right at its rate', () => {
    const out = run({ filters: { rotation: { rotationHz: 1 } } }, 1000);
    const left = envelope(channel(out, 2, 0), 50);
    const right = envelope(channel(out, 2, 1), 50);
    const i = left.indexOf(Math.max(...left));
    expect(right[i]! / left[i]!).toBeLessThan(0.3);
    const j = right.indexOf(Math.max(...right));
    expect(left[j]! / right[j]!).toBeLessThan(0.3);
  });

  it('channelMix routes left to right', () => {
    const source = run({}, 1000, 1, true);
    expect(rms(channel(source, 2, 1))).toBeLessThan(1);
    const swapped = run({ filters: { channelMix: { leftToLeft: 0, leftToRight: 1, rightToLeft: 0, rightToRight: 0 } } }, 1000, 1, true);
    expect(rms(channel(swapped, 2, 0))).toBeLessThan(1);
    expect(rms(channel(swapped, 2, 1)) / rms(channel(source, 2, 0))).toBeCloseTo(1, 1);
  });

  it('lowPass: smoothing 20 keeps 100 Hz and cuts 5 kHz', () => {
    const low = (hz: number) => rms(channel(run({ filters: { lowPass: { smoothing: 20 } } }, hz, 1), 2, 0).subarray(4800)) / rms(channel(run({}, hz, 1), 2, 0).subarray(4800));
    expect(low(100)).toBeGreaterThan(0.9);
    expect(low(5000)).toBeLessThan(0.15);
    expect(filterChain({ filters: { lowPass: { smoothing: 1 } } })).toBeUndefined();
  });
});

describe('parseFilters', () => {
  it('takes Lavalink filter objects and drops empty ones', () => {
    expect(parseFilters({ timescale: { speed: 1.2 }, tremolo: {}, equalizer: [], lowPass: null })).toEqual({ timescale: { speed: 1.2 } });
    expect(FILTER_NAMES).toContain('equalizer');
  });

  it('refuses values out of range and names the field', () => {
    const bad = (v: unknown) => () => parseFilters(v);
    expect(bad({ timescale: { speed: 0 } })).toThrow(/filters\.timescale\.speed/);
    expect(bad({ equalizer: [{ band: 15, gain: 0 }] })).toThrow(/band/);
    expect(bad({ equalizer: [{ band: 1, gain: 2 }] })).toThrow(/gain/);
    expect(bad({ vibrato: { frequency: 20 } })).toThrow(/vibrato\.frequency/);
    expect(bad({ channelMix: { leftToLeft: 'x' } })).toThrow(FilterError);
    expect(bad({ karaoke: { level: 1 } })).toThrow(/karaoke/);
  });
});
