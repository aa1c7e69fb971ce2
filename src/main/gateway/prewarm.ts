/**
 * How many session slots to keep started ahead of need: as many as plays came in the busiest
 * second of the last few, from a floor (plays may come any time) to a ceiling (memory). It rises
 * within the second a burst begins and falls only once the burst has been over for
 * RATE_SECONDS, so a steady rate keeps its threads and a pause of a second does not undo them.
 */
const RATE_SECONDS = 5;

export class PrewarmTarget {
  /** Plays per whole second, for the last RATE_SECONDS seconds (a ring). */
  private readonly counts = new Array<number>(RATE_SECONDS).fill(0);
  private second = -Infinity;

  constructor(
    readonly min: number,
    /** Raised to `min` if below it. */
    max: number,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    this.max = Math.max(min, max);
  }

  readonly max: number;

  /** A play took a slot now. */
  note(): void {
    this.advance();
    this.counts[this.second % RATE_SECONDS]!++;
  }

  /** Slots to keep started ahead now. */
  get value(): number {
    this.advance();
    return Math.min(this.max, Math.max(this.min, ...this.counts));
  }

  private advance(): void {
    const second = Math.floor(this.nowMs() / 1000);
    if (second <= this.second) return;
    const gone = Math.min(RATE_SECONDS, second - this.second);
    for (let i = 0; i < gone; i++) this.counts[(second - i) % RATE_SECONDS] = 0;
    this.second = second;
  }
}
