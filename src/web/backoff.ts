/**
 * Reconnect delays: exponential from `initialMs` up to `maxMs`, each drawn at random from the
 * upper half of its step ("equal jitter"), so many pages that lost the same gateway do not all
 * come back in the same millisecond.
 */
export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
  factor?: number;
  random?: () => number;
}

export class Backoff {
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly factor: number;
  private readonly random: () => number;
  /** Delays handed out since the last reset. */
  attempts = 0;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? 250;
    this.maxMs = options.maxMs ?? 8000;
    this.factor = options.factor ?? 2;
    this.random = options.random ?? Math.random;
  }

  next(): number {
    const step = Math.min(this.maxMs, this.initialMs * this.factor ** this.attempts);
    this.attempts++;
    return Math.round(step / 2 + (this.random() * step) / 2);
  }

  reset(): void {
    this.attempts = 0;
  }
}
