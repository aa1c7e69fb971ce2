/**
 * Figures the load scripts gather in several processes and add up in one: a fixed-memory
 * latency histogram that travels as JSON (sparse buckets), and exact percentiles of a list.
 */

export interface Percentiles {
  count: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

export interface HistogramJson {
  resolution: number;
  limit: number;
  /** [bucket index, count] for non-empty buckets. */
  buckets: [number, number][];
  count: number;
  sum: number;
  max: number;
}

/** Buckets of `resolution` ms up to `limit` ms, then one overflow bucket; exact max and sum. */
export class LatencyHistogram {
  private readonly counts: Uint32Array;
  count = 0;
  sum = 0;
  max = 0;

  constructor(
    readonly resolution = 0.05,
    readonly limit = 5000,
  ) {
    this.counts = new Uint32Array(Math.ceil(limit / resolution) + 1);
  }

  record(value: number): void {
    const v = value > 0 ? value : 0;
    const i = Math.min(Math.floor(v / this.resolution), this.counts.length - 1);
    this.counts[i]!++;
    this.count++;
    this.sum += v;
    if (v > this.max) this.max = v;
  }

  /** The value at quantile q: the upper edge of its bucket (never above the maximum). */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) return i === this.counts.length - 1 ? this.max : Math.min((i + 1) * this.resolution, this.max);
    }
    return this.max;
  }

  percentiles(): Percentiles {
    return {
      count: this.count,
      p50: this.quantile(0.5),
      p99: this.quantile(0.99),
      p999: this.quantile(0.999),
      max: this.max,
      mean: this.count === 0 ? 0 : this.sum / this.count,
    };
  }

  merge(other: LatencyHistogram | HistogramJson): void {
    if (other.resolution !== this.resolution || other.limit !== this.limit) throw new RangeError('histograms differ in shape');
    if (other instanceof LatencyHistogram) {
      for (let i = 0; i < this.counts.length; i++) this.counts[i]! += other.counts[i]!;
    } else {
      for (const [i, c] of other.buckets) this.counts[i]! += c;
    }
    this.count += other.count;
    this.sum += other.sum;
    if (other.max > this.max) this.max = other.max;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sum = 0;
    this.max = 0;
  }

  toJSON(): HistogramJson {
    const buckets: [number, number][] = [];
    for (let i = 0; i < this.counts.length; i++) if (this.counts[i]! > 0) buckets.push([i, this.counts[i]!]);
    return { resolution: this.resolution, limit: this.limit, buckets, count: this.count, sum: this.sum, max: this.max };
  }

  static fromJSON(json: HistogramJson): LatencyHistogram {
    const h = new LatencyHistogram(json.resolution, json.limit);
    h.merge(json);
    return h;
  }
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
