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

describe('WakeScheduler sleeping between wakes', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'], now: 1000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A doorbell on the fake clock: a sleep moves the clock on, unless `ringAt` falls inside it. */
  function fakeSleeper(opts: { mayBlock?: () => boolean; ringAt?: number } = {}) {
    const sleeps: number[] = [];
    let rings = 0;
    const sleeper = {
      mayBlock: opts.mayBlock ?? (() => true),
      bell: {
        get rings() {
          return rings;
        },
        sleepUnlessRung(seen: number, ms: number) {
          expect(seen).toBe(rings);
          sleeps.push(ms);
          const until = Date.now() + ms;
          if (opts.ringAt !== undefined && opts.ringAt <= until) {
            vi.setSystemTime(opts.ringAt);
            rings++;
            opts.ringAt = undefined;
            return true;
          }
          vi.setSystemTime(until);
          return false;
        },
      },
    };
    return { sleeper, sleeps };
  }

  /** A pacer on a 20 ms clock from 1020. */
  function cadence() {
    let deadline = 1020;
    return pacer(() => (deadline += 20));
  }

  it('serves the frames of MAX_AWAY_MS from one timer wake, sleeping to each deadline, then goes back to its event loop', () => {
    const { sleeper, sleeps } = fakeSleeper();
    let flushes = 0;
    const s = new WakeScheduler(() => flushes++, () => Date.now(), sleeper);
    const p = cadence();
    s.schedule(p, 1020);
    vi.advanceTimersByTime(20);
    // 1020, then asleep to 1040 … 1120: MAX_AWAY_MS (100) from the timer's wake.
    expect(p.ran).toEqual([1020, 1040, 1060, 1080, 1100, 1120]);
    expect(sleeps).toEqual([20, 20, 20, 20, 20]);
    expect(s.sleptWakes).toBe(5);
    // Each wake still flushes what it gathered.
    expect(flushes).toBe(6);
    // Back on the event loop: the next frame comes from the timer.
    expect(Date.now()).toBe(1120);
    vi.advanceTimersByTime(20);
    expect(p.ran.slice(6, 7)).toEqual([1140]);
    s.schedule(p, Infinity);
  });

  it('goes back to its event loop as soon as the doorbell rings', () => {
    const { sleeper, sleeps } = fakeSleeper({ ringAt: 1050 });
    const s = new WakeScheduler(() => undefined, () => Date.now(), sleeper);
    const p = cadence();
    s.schedule(p, 1020);
    vi.advanceTimersByTime(20);
    expect(p.ran).toEqual([1020, 1040]);
    expect(sleeps).toEqual([20, 20]);
    expect(Date.now()).toBe(1050);
    // The event loop takes the message that rang; the frame at 1060 comes from the timer, and the
    // thread sleeps between frames again from there.
    vi.advanceTimersByTime(10);
    expect(p.ran).toEqual([1020, 1040, 1060, 1080, 1100, 1120, 1140, 1160]);
    expect(sleeps).toEqual([20, 20, 20, 20, 20, 20, 20]);
    s.schedule(p, Infinity);
  });

  it('never sleeps while the thread needs its event loop, nor after a pacer leaves the schedule', () => {
    let block = false;
    const { sleeper, sleeps } = fakeSleeper({ mayBlock: () => block });
    const s = new WakeScheduler(() => undefined, () => Date.now(), sleeper);
    const p = cadence();
    s.schedule(p, 1020);
    vi.advanceTimersByTime(20);
    expect(p.ran).toEqual([1020]);
    expect(sleeps).toEqual([]);

    block = true;
    const leaving = pacer(() => Infinity);
    s.schedule(leaving, 1040);
    vi.advanceTimersByTime(20);
    // `leaving` ran and left in this wake: back to the loop, so what follows from it is not held up.
    expect(leaving.ran).toEqual([1040]);
    expect(p.ran).toEqual([1020, 1040]);
    expect(sleeps).toEqual([]);
    s.schedule(p, Infinity);
  });
});
