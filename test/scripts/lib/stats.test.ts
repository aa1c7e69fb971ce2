import { createHistogram } from 'node:perf_hooks';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { anchorOffsets, hdrLowestEquivalent, LatencyCounts, LatencyHistogram, percentilesOf } from '../../../scripts/lib/stats.js';

/** Latencies in ms as the listeners measure them: mostly a few ms, some far out. */
const latencies = fc.array(
  fc.oneof(fc.double({ min: 0, max: 20, noNaN: true }), fc.double({ min: 0, max: 5_000, noNaN: true }), fc.constant(0)),
  { minLength: 1, maxLength: 400 },
);

describe('hdrLowestEquivalent', () => {
  it('is the lowest value of the bucket node:perf_hooks files a value in', () => {
    const histograms = new Map([2, 3].map((f) => [f, createHistogram({ lowest: 1, highest: 3_600_000_001, figures: f })]));
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3_600_000_001 }), fc.constantFrom(2, 3), (value, figures) => {
        const h = histograms.get(figures)!;
        h.reset();
        h.record(value);
        // The histogram's min is the lowest equivalent value of the smallest value recorded.
        expect(hdrLowestEquivalent(value, figures)).toBe(h.min);
      }),
      { numRuns: 5000 },
    );
  });
});

describe('LatencyHistogram', () => {
  it('gives each percentile within its precision of the exact one, never above the max', () => {
    fc.assert(
      fc.property(latencies, (values) => {
        const h = new LatencyHistogram();
        for (const v of values) h.record(v);
        const got = h.percentiles();
        const exact = percentilesOf(values.map((v) => Math.round(v * 1000) / 1000));
        expect(got.count).toBe(exact.count);
        expect(got.max).toBeCloseTo(exact.max, 6);
        expect(got.mean).toBeCloseTo(exact.mean, 6);
        for (const key of ['p50', 'p99', 'p999'] as const) {
          // The upper edge of the exact value's bucket: at most 0.1 % (3 figures) above it.
          expect(got[key]).toBeGreaterThanOrEqual(exact[key] - 1e-9);
          expect(got[key]).toBeLessThanOrEqual(Math.min(exact.max, exact[key] * 1.001 + 0.001) + 1e-9);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('merges counts from other processes into the same figures as recording them here', () => {
    fc.assert(
      fc.property(fc.array(latencies, { minLength: 1, maxLength: 4 }), fc.constantFrom(2, 3), (parts, figures) => {
        const direct = new LatencyHistogram(figures);
        const merged = new LatencyHistogram(figures);
        for (const part of parts) {
          const counts = new LatencyCounts(figures);
          for (const v of part) {
            direct.record(v);
            counts.record(v);
          }
          merged.merge(JSON.parse(JSON.stringify(counts)));
        }
        expect(merged.percentiles()).toEqual(direct.percentiles());
      }),
      { numRuns: 200 },
    );
  });

  it('merges another histogram, and refuses one of another precision', () => {
    const a = new LatencyHistogram();
    const b = new LatencyHistogram();
    a.record(1);
    b.record(3);
    a.merge(b);
    expect(a.percentiles()).toMatchObject({ count: 2, p50: 1, p99: 3, max: 3, mean: 2 });
    expect(() => a.merge(new LatencyHistogram(2))).toThrow(RangeError);
  });

  it('reads zeros when empty and after a reset', () => {
    const h = new LatencyHistogram();
    expect(h.percentiles()).toEqual({ count: 0, p50: 0, p99: 0, p999: 0, max: 0, mean: 0 });
    h.record(12.5);
    h.reset();
    expect(h.percentiles()).toEqual({ count: 0, p50: 0, p99: 0, p999: 0, max: 0, mean: 0 });
  });
});

describe('anchorOffsets', () => {
  it('makes each offset from `first` on its delay past the most punctual, leaving those before alone', () => {
    // Frames k = 0…3 of a stream due every 20 ms from t = 100: on time, 3 ms late, 1 ms early (the anchor), 7 ms late.
    const arrivals = [100, 123, 139, 167];
    const offsets = [42, ...arrivals.map((t, k) => t - 20 * k)];
    anchorOffsets(offsets, 1);
    expect(offsets).toEqual([42, 1, 4, 0, 8]);
  });

  it('never gives a negative lateness, and a stream delayed as a whole is not late', () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: 0, max: 1000, noNaN: true }), { minLength: 1, maxLength: 100 }), fc.double({ min: 0, max: 1e6, noNaN: true }), (offsets, shift) => {
        const a = [...offsets];
        const b = offsets.map((o) => o + shift);
        anchorOffsets(a);
        anchorOffsets(b);
        expect(Math.min(...a)).toBe(0);
        for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i]!, 6);
      }),
    );
  });
});
