/**
 * One timer per worker thread for all the sessions it paces: a min-heap of wake-up times, one
 * setTimeout armed for the earliest. Each session keeps its own deadline clock; the scheduler
 * only decides when to run it.
 *
 * With a sleeper, a wake whose next one is near sleeps in Atomics.wait on the thread's doorbell
 * instead of going back to the event loop: a timer wake through libuv and Node's callback
 * machinery costs several times what a frame's own work does. It goes back to the event loop
 * when the doorbell rings (main posted a message), when the sleeper says the thread needs its
 * loop (a connection being set up), when a session left the schedule, and at least every
 * MAX_AWAY_MS (socket errors, piscina's messages).
 */
import { performance } from 'node:perf_hooks';
import type { Doorbell } from '../shared/doorbell.js';

export interface Pacer {
  /**
   * Runs due work at `now` and returns the next wake-up time (Infinity: none until scheduled
   * again). It must not call schedule() itself.
   */
  wake(now: number): number;
  wakeAt: number;
  heapIndex: number;
}

/** Sessions due within this much of the earliest are served in the same wake. */
const SLACK_MS = 0.25;

/** Longest a thread stays away from its event loop, sleeping between wakes. */
export const MAX_AWAY_MS = 100;

export interface Sleeper {
  bell: Pick<Doorbell, 'rings' | 'sleepUnlessRung'>;
  /** False while something on the thread needs its event loop between frames. */
  mayBlock(): boolean;
}

export class WakeScheduler {
  private readonly heap: Pacer[] = [];
  private timer: NodeJS.Timeout | undefined;
  private armedFor = Infinity;
  /** The doorbell's count when the thread last went back to its event loop. */
  private seenRings: number;
  /** Wakes served while sleeping between them (not through the event loop): for stats. */
  sleptWakes = 0;

  constructor(
    /** Called after each wake, e.g. to post the frames gathered. */
    private readonly afterWake: () => void,
    /** The clock deadlines are read on (ms); a test's fake clock. */
    private readonly now: () => number = () => performance.now(),
    private readonly sleeper?: Sleeper,
  ) {
    this.seenRings = sleeper ? sleeper.bell.rings : 0;
  }

  get size(): number {
    return this.heap.length;
  }

  /** Sets when `p` next wants to run (Infinity removes it until set again). */
  schedule(p: Pacer, at: number): void {
    p.wakeAt = at;
    if (at === Infinity) {
      if (p.heapIndex >= 0) this.removeAt(p.heapIndex);
    } else if (p.heapIndex < 0) {
      p.heapIndex = this.heap.length;
      this.heap.push(p);
      this.up(p.heapIndex);
    } else {
      this.up(p.heapIndex);
      this.down(p.heapIndex);
    }
    this.arm();
  }

  private arm(): void {
    const first = this.heap[0];
    const at = first ? first.wakeAt : Infinity;
    if (at === this.armedFor) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = at;
    if (at === Infinity) return;
    // Timers have 1 ms granularity and never fire early; ceil so one wake is enough.
    this.timer = setTimeout(this.fire, Math.max(0, Math.ceil(at - this.now())));
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    this.armedFor = Infinity;
    const awayUntil = this.now() + MAX_AWAY_MS;
    while (this.runDue(this.now()) && this.sleepUntilDue(awayUntil)) this.sleptWakes++;
    if (this.sleeper) this.seenRings = this.sleeper.bell.rings;
    this.arm();
  };

  /** Runs the pacers due at `now`; false when one of them left the schedule. */
  private runDue(now: number): boolean {
    let stayed = true;
    for (;;) {
      const p = this.heap[0];
      if (!p || p.wakeAt > now + SLACK_MS) break;
      const next = p.wake(now);
      if (next === Infinity) {
        this.removeAt(0);
        stayed = false;
      } else {
        // Always strictly later than this wake, so the loop ends.
        p.wakeAt = Math.max(next, now + SLACK_MS + 1e-3);
        this.down(0);
      }
    }
    this.afterWake();
    return stayed;
  }

  /** Sleeps until the next wake is due; false when the thread should go back to its event loop. */
  private sleepUntilDue(awayUntil: number): boolean {
    const sleeper = this.sleeper;
    if (!sleeper || sleeper.bell.rings !== this.seenRings || !sleeper.mayBlock()) return false;
    const next = this.heap[0]?.wakeAt ?? Infinity;
    if (next > awayUntil) return false;
    const ms = next - this.now();
    return ms <= 0 || !sleeper.bell.sleepUnlessRung(this.seenRings, ms);
  }

  private removeAt(i: number): void {
    const p = this.heap[i]!;
    const last = this.heap.pop()!;
    p.heapIndex = -1;
    if (i < this.heap.length) {
      this.heap[i] = last;
      last.heapIndex = i;
      this.up(i);
      this.down(i);
    }
  }

  private up(i: number): void {
    const h = this.heap;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent]!.wakeAt <= h[i]!.wakeAt) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  private down(i: number): void {
    const h = this.heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && h[l]!.wakeAt < h[m]!.wakeAt) m = l;
      if (r < h.length && h[r]!.wakeAt < h[m]!.wakeAt) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }

  private swap(a: number, b: number): void {
    const h = this.heap;
    const pa = h[a]!;
    const pb = h[b]!;
    h[a] = pb;
    h[b] = pa;
    pa.heapIndex = b;
    pb.heapIndex = a;
  }
}
