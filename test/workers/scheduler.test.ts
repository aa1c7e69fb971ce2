import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { Scheduler, type Pacer } from '../../src/workers/scheduler.js';

/** A pacer that wakes every `period` ms from `start`, `count` times, and records when it ran. */
function periodic(start: number, period: number, count: number) {
  const ran: number[] = [];
  const p: Pacer & { ran: number[] } = {
    wakeAt: Infinity,
    heapIndex: -1,
    ran,
    wake(now) {
      ran.push(now);
      return ran.length >= count ? Infinity : start + ran.length * period;
    },
  };
  return p;
}

describe('Scheduler', () => {
  it('runs many pacers on one timer, each on its own deadlines, never early, in deadline order', async () => {
    let wakes = 0;
    const s = new Scheduler(() => wakes++);
    const t0 = performance.now() + 5;
    const pacers = Array.from({ length: 20 }, (_, i) => periodic(t0 + i * 0.9, 20, 10));
    // Scheduled in reverse so the heap, not insertion order, decides.
    for (const p of [...pacers].reverse()) s.schedule(p, p === pacers[0] ? t0 : t0 + pacers.indexOf(p) * 0.9);
    await new Promise((r) => setTimeout(r, 20 * 10 + 100));
    expect(s.size).toBe(0);
    for (const [i, p] of pacers.entries()) {
      expect(p.ran).toHaveLength(10);
      for (const [k, at] of p.ran.entries()) {
        const deadline = t0 + i * 0.9 + k * 20;
        // Never more than the scheduler's slack early; lateness is the machine's business.
        expect(at).toBeGreaterThanOrEqual(deadline - 0.25);
      }
    }
    // Pacers due together share a wake: far fewer wakes than the 200 runs.
    expect(wakes).toBeLessThan(200);
    expect(wakes).toBeGreaterThan(0);
  });

  it('takes a pacer out with Infinity and puts it back', async () => {
    const s = new Scheduler(() => undefined);
    const p = periodic(performance.now(), 5, 1000);
    s.schedule(p, performance.now());
    await new Promise((r) => setTimeout(r, 30));
    s.schedule(p, Infinity);
    const count = p.ran.length;
    expect(count).toBeGreaterThan(0);
    expect(p.heapIndex).toBe(-1);
    await new Promise((r) => setTimeout(r, 30));
    expect(p.ran.length).toBe(count);
    s.schedule(p, performance.now());
    await new Promise((r) => setTimeout(r, 20));
    expect(p.ran.length).toBeGreaterThan(count);
    s.schedule(p, Infinity);
  });
});
