/**
 * Fixed-size histogram of non-negative values (milliseconds, say) with 0.1-unit buckets up to
 * `limit`, then one overflow bucket; the exact maximum is kept. Constant memory whatever the
 * count, so a worker can record every frame for hours.
 */
export interface Percentiles {
  count: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
}

export class Histogram {
  private readonly buckets: Uint32Array;
  private readonly resolution: number;
  count = 0;
  max = 0;

  constructor(
    private readonly limit = 1000,
    resolution = 0.1,
  ) {
    this.resolution = resolution;
    this.buckets = new Uint32Array(Math.ceil(limit / resolution) + 1);
  }

  record(value: number): void {
    const v = value > 0 ? value : 0;
    const i = Math.min(Math.floor(v / this.resolution), this.buckets.length - 1);
    this.buckets[i]!++;
    this.count++;
    if (v > this.max) this.max = v;
  }

  /** The value at quantile q (0..1): the upper edge of its bucket, or the maximum past `limit`. */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      seen += this.buckets[i]!;
      if (seen >= rank) return i === this.buckets.length - 1 ? this.max : Math.min((i + 1) * this.resolution, this.max);
    }
    return this.max;
  }

  merge(other: Histogram): void {
    if (other.buckets.length !== this.buckets.length) throw new RangeError('histograms differ in shape');
    for (let i = 0; i < this.buckets.length; i++) this.buckets[i]! += other.buckets[i]!;
    this.count += other.count;
    if (other.max > this.max) this.max = other.max;
  }

  percentiles(): Percentiles {
    return { count: this.count, p50: this.quantile(0.5), p99: this.quantile(0.99), p999: this.quantile(0.999), max: this.max };
  }
}
