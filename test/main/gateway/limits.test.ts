/** The token bucket behind CHORUS_PLAY_RATE and the refusal log (src/main/gateway/limits.ts), on a clock of our own. */
import { describe, expect, it } from 'vitest';
import { PlayRate, RefusedError, Refusals, TokenBucket } from '../../../src/main/gateway/limits.js';

describe('TokenBucket', () => {
  it('gives a burst of its capacity, then one per 1/rate s, and says how long to wait', () => {
    const b = new TokenBucket(3, 3, 0);
    expect([b.take(0), b.take(0), b.take(0)]).toEqual([0, 0, 0]);
    expect(b.take(0)).toBe(334); // a third of a second for the next token
    expect(b.take(100)).toBe(234); // a refusal takes nothing
    expect(b.take(334)).toBe(0);
    expect(b.take(334)).toBe(333); // 1.002 tokens at 334 ms: 0.002 left after the take
    // Idle for long, it holds no more than its capacity.
    expect([b.take(60_000), b.take(60_000), b.take(60_000), b.take(60_000) > 0]).toEqual([0, 0, 0, true]);
  });

  it('does not run backwards when the clock does', () => {
    const b = new TokenBucket(1, 1, 1000);
    expect(b.take(1000)).toBe(0);
    expect(b.take(500)).toBeGreaterThan(0);
    expect(b.take(2000)).toBe(0);
  });
});

describe('PlayRate', () => {
  it('keeps one bucket per session: one session refused, another not; a 429 with Retry-After in whole seconds', () => {
    let now = 0;
    const rate = new PlayRate(2, () => now);
    const a = {};
    const b = {};
    rate.take(a, 'a');
    rate.take(a, 'a');
    const err = (() => {
      try {
        rate.take(a, 'a');
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(RefusedError);
    expect(err).toMatchObject({ kind: 'play_rate', status: 429, headers: { 'retry-after': '1' }, message: 'too many plays for session "a" (CHORUS_PLAY_RATE=2 per second); try again in 0.5 s' });
    expect(() => rate.take(b, 'b')).not.toThrow();
    now = 500;
    expect(() => rate.take(a, 'a')).not.toThrow();
  });
});

describe('Refusals', () => {
  it('counts every refusal by kind but logs at most 5 lines per kind per 10 s', () => {
    const refusals = new Refusals();
    const lines: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string) => (lines.push(String(chunk)), true)) as typeof process.stderr.write;
    try {
      for (let i = 0; i < 50; i++) refusals.note(new RefusedError('auth', 401, 'a token is required'), {}, 1000 + i);
      refusals.note(new RefusedError('body', 413, 'too big'), {}, 1100);
      refusals.note(new RefusedError('auth', 401, 'a token is required'), {}, 11_000);
    } finally {
      process.stderr.write = write;
    }
    expect(refusals.counts.auth).toBe(51);
    expect(refusals.counts.body).toBe(1);
    expect(lines.filter((l) => l.includes('kind=auth'))).toHaveLength(6);
    expect(lines.at(-1)).toMatch(/refused: a token is required kind=auth status=401 suppressed=45/);
  });
});
