/**
 * Figures the load scripts gather in several processes and add up in one. Latency percentiles
 * come from node:perf_hooks' HDR histogram (createHistogram), which records whole numbers: here
 * microseconds. A histogram cannot cross a process boundary, so a listener process counts its
 * latencies on the same grid (LatencyCounts, JSON) and the load test merges those counts into
 * one histogram. Also: exact percentiles of a list.
 */
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';

export interface Percentiles {
  count: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/**
 * Significant figures of a lateness histogram: 3 keeps 1 µs steps up to 2 ms and steps of at
 * most 0.1 % of the value above (8 µs at 10 ms), finer than the 0.01 ms the reports print.
 */
const LATENESS_FIGURES = 3;
/** Latencies above this (µs) are counted as this; the exact maximum is kept apart. */
const HIGHEST_US = 3_600_000_000;

/** A latency in ms as whole µs, shifted by one: the histogram records values from 1. */
const toValue = (ms: number) => Math.min(Math.round((ms > 0 ? ms : 0) * 1000), HIGHEST_US) + 1;

/**
 * The lowest value the HDR histogram of `figures` significant figures (lowest 1) files with
 * `value`: its sub-buckets hold 2^m values, m = ⌈log2(2 · 10^figures)⌉, and each bucket doubles
 * the step of the one before.
 */
export function hdrLowestEquivalent(value: number, figures: number): number {
  const subBucketBits = Math.ceil(Math.log2(2 * 10 ** figures));
  const bits = 32 - Math.clz32(value);
  const step = 2 ** Math.max(0, bits - subBucketBits);
  return Math.floor(value / step) * step;
}

/** [histogram value (µs + 1), count] of every non-empty bucket, and the exact sum and max in µs. */
export interface LatencyCountsJson {
  figures: number;
  buckets: [number, number][];
  sumUs: number;
  maxUs: number;
}

/** Latencies (ms) counted per bucket of the histogram they will be merged into: what a listener process sends. */
export class LatencyCounts {
  private readonly buckets = new Map<number, number>();
  private sumUs = 0;
  private maxUs = 0;

  constructor(readonly figures = LATENESS_FIGURES) {}

  record(ms: number): void {
    const value = toValue(ms);
    const bucket = hdrLowestEquivalent(value, this.figures);
    this.buckets.set(bucket, (this.buckets.get(bucket) ?? 0) + 1);
    this.sumUs += value - 1;
    if (value - 1 > this.maxUs) this.maxUs = value - 1;
  }

  toJSON(): LatencyCountsJson {
    return { figures: this.figures, buckets: [...this.buckets], sumUs: this.sumUs, maxUs: this.maxUs };
  }
}

/** Latencies in ms, in an HDR histogram of whole µs; exact count, mean and max. */
export class LatencyHistogram {
  private readonly hdr: RecordableHistogram;
  /** Exact, in whole µs. */
  sumUs = 0;
  maxUs = 0;

  constructor(readonly figures = LATENESS_FIGURES) {
    this.hdr = createHistogram({ lowest: 1, highest: HIGHEST_US + 1, figures });
  }

  get count(): number {
    return this.hdr.count;
  }

  record(ms: number): void {
    const value = toValue(ms);
    this.hdr.record(value);
    this.sumUs += value - 1;
    if (value - 1 > this.maxUs) this.maxUs = value - 1;
  }

  merge(other: LatencyHistogram | LatencyCountsJson): void {
    if (other.figures !== this.figures) throw new RangeError(`histograms differ in precision (${other.figures} vs ${this.figures} figures)`);
    if (other instanceof LatencyHistogram) this.hdr.add(other.hdr);
    else for (const [value, count] of other.buckets) for (let i = 0; i < count; i++) this.hdr.record(value);
    this.sumUs += other.sumUs;
    if (other.maxUs > this.maxUs) this.maxUs = other.maxUs;
  }

  /** The value at percentile p (0–100) in ms: the upper edge of its bucket, never above the maximum. */
  percentile(p: number): number {
    if (this.count === 0) return 0;
    return Math.min(this.hdr.percentile(p) - 1, this.maxUs) / 1000;
  }

  percentiles(): Percentiles {
    const n = this.count;
    return {
      count: n,
      p50: this.percentile(50),
      p99: this.percentile(99),
      p999: this.percentile(99.9),
      max: this.maxUs / 1000,
      mean: n === 0 ? 0 : this.sumUs / n / 1000,
    };
  }

  reset(): void {
    this.hdr.reset();
    this.sumUs = 0;
    this.maxUs = 0;
  }
}

/**
 * Lateness against a 20 ms schedule, as the load test counts it: from `first` on, `offsets` holds
 * each frame's arrival − 20 ms · k (k its place in its stream); each becomes its delay past the
 * most punctual of them, the schedule's anchor (in place).
 */
export function anchorOffsets(offsets: number[], first = 0): void {
  let anchor = Infinity;
  for (let i = first; i < offsets.length; i++) if (offsets[i]! < anchor) anchor = offsets[i]!;
  for (let i = first; i < offsets.length; i++) offsets[i] = offsets[i]! - anchor;
}

/** Exact percentiles of values (sorted in place). */
export function percentilesOf(values: Float64Array | number[]): Percentiles {
  const n = values.length;
  if (n === 0) return { count: 0, p50: 0, p99: 0, p999: 0, max: 0, mean: 0 };
  const sorted = values instanceof Float64Array ? values.sort() : Float64Array.from(values).sort();
  const at = (q: number) => sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))]!;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i]!;
  return { count: n, p50: at(0.5), p99: at(0.99), p999: at(0.999), max: sorted[n - 1]!, mean: sum / n };
}

/** A growable list of doubles (frame arrival times), without a JS array per element. */
export class DoubleList {
  data = new Float64Array(256);
  length = 0;

  push(v: number): void {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = v;
  }
}
