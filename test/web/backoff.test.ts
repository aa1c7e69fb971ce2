/** The web player's reconnect back-off (src/web/backoff.ts). */
import { describe, expect, it } from 'vitest';
import { Backoff } from '../../src/web/backoff.js';

describe('Backoff', () => {
  it('doubles up to the cap, each delay in the upper half of its step', () => {
    const low = new Backoff({ initialMs: 250, maxMs: 8000, random: () => 0 });
    const high = new Backoff({ initialMs: 250, maxMs: 8000, random: () => 1 });
    const lows = Array.from({ length: 8 }, () => low.next());
    const highs = Array.from({ length: 8 }, () => high.next());
    expect(highs).toEqual([250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
    expect(lows).toEqual(highs.map((h) => h / 2));
  });

  it('starts over after reset()', () => {
    const b = new Backoff({ random: () => 1 });
    b.next();
    b.next();
    b.reset();
    expect(b.next()).toBe(250);
    expect(b.attempts).toBe(1);
  });
});
