import { performance } from 'node:perf_hooks';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { WakeScheduler, type Pacer } from '../../src/workers/scheduler.js';

/** A pacer that records each wake and asks for the next one `next(now)` returns. */
function pacer(next: (now: number) => number) {
  const ran: number[] = [];
  const p: Pacer & { ran: number[] } = {
    wakeAt: Infinity,
    heapIndex: -1,
    ran,
    wake(now) {
      ran.push(now);
      return next(now);
    },
  };
  return p;
}

/** A pacer that wakes every `period` ms from `start`, `count` times. */
function periodic(start: number, period: number, count: number) {
  let runs = 0;
  return pacer(() => (++runs >= count ? Infinity : start + runs * period));
}

describe('WakeScheduler', () => {
  it('runs many pacers on one timer, each on its own deadlines, never early, in deadline order', async () => {
    let wakes = 0;
    const s = new WakeScheduler(() => wakes++);
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
    const s = new WakeScheduler(() => undefined);
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

describe('WakeScheduler on a fake clock', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'], now: 1000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('wakes each pacer at its deadline, never before; pacers due within the slack share one wake', () => {
    let wakes = 0;
    const s = new WakeScheduler(() => wakes++, () => Date.now());
    const a = pacer(() => Infinity);
    const b = pacer(() => Infinity);
    const c = pacer(() => Infinity);
    s.schedule(b, 1025);
    s.schedule(a, 1020);
    s.schedule(c, 1020.2);
    vi.advanceTimersByTime(19);
    expect([a.ran, b.ran, c.ran]).toEqual([[], [], []]);
    vi.advanceTimersByTime(1);
    expect(a.ran).toEqual([1020]);
    expect(c.ran).toEqual([1020]);
    expect(b.ran).toEqual([]);
    expect(wakes).toBe(1);
    vi.advanceTimersByTime(5);
    expect(b.ran).toEqual([1025]);
    expect(wakes).toBe(2);
    expect(s.size).toBe(0);
  });

  it('keeps a drift-free 20 ms cadence: the next deadline is the pacer\'s, not now + 20', () => {
    let deadline = 1020;
    const p = pacer(() => (deadline += 20));
    const s = new WakeScheduler(() => undefined, () => Date.now());
    s.schedule(p, deadline);
    vi.advanceTimersByTime(20 * 50);
    expect(p.ran).toHaveLength(50);
    expect(p.ran.map((t, i) => t - (1020 + 20 * i))).toEqual(new Array(50).fill(0));
  });

  it('a pacer that asks to run again at once runs on a later wake, so one wake always ends', () => {
    let wakes = 0;
    const p = pacer((now) => now);
    const s = new WakeScheduler(() => wakes++, () => Date.now());
    s.schedule(p, 1001);
    vi.advanceTimersByTime(1);
    expect(p.ran).toEqual([1001]);
    expect(wakes).toBe(1);
    vi.advanceTimersByTime(1);
    expect(p.ran).toEqual([1001, 1002]);
    s.schedule(p, Infinity);
  });

  it('moving a pacer earlier re-arms the timer; Infinity takes it out', () => {
    const p = pacer(() => Infinity);
    const s = new WakeScheduler(() => undefined, () => Date.now());
    s.schedule(p, 1100);
    s.schedule(p, 1010);
    vi.advanceTimersByTime(10);
    expect(p.ran).toEqual([1010]);
    s.schedule(p, 1050);
    s.schedule(p, Infinity);
    expect(p.heapIndex).toBe(-1);
    vi.advanceTimersByTime(100);
    expect(p.ran).toEqual([1010]);
  });
});
