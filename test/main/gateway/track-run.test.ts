/**
 * One track's run, without processes: the credit it grants the engine (ring + in flight never
 * more than the ring holds, in batches, none before the engine took the play), and which frames
 * it takes into the ring (only once the track's own `ready` has come).
 */
import { describe, expect, it } from 'vitest';
import { framesIn, maxPayloadBytes } from '../../../src/shared/audio.js';
import { Ring } from '../../../src/shared/ring.js';
import { TrackRun } from '../../../src/main/gateway/track-run.js';
import { gatewayCounters } from '../../../src/main/gateway/counters.js';
import { ringBytes } from '../../../src/main/gateway/session.js';

const RING_MS = 1000;
const RING_FRAMES = framesIn(RING_MS);
/** The largest payload a frame may carry: what the credit must leave room for. */
const LARGEST = Buffer.alloc(maxPayloadBytes('opus'), 7);

function run(): { run: TrackRun; ring: Ring; counters: ReturnType<typeof gatewayCounters> } {
  const ring = Ring.create(ringBytes(RING_MS, 'opus'));
  const counters = gatewayCounters();
  const r = new TrackRun({ url: 'tone:440', format: 'opus', startAt: 0 }, 'credit', ring, RING_MS, counters);
  return { run: r, ring, counters };
}

/** The engine sends `n` frames of the largest size under credit. */
function send(r: TrackRun, n: number, payload = LARGEST): void {
  for (let i = 0; i < n; i++) r.acceptFrame(payload, 0, payload.length, true);
}

describe('credit', () => {
  it('grants nothing before the engine took the play', () => {
    const { run: r } = run();
    expect(r.grantCredit()).toBe(0);
  });

  it('grants what the ring can hold, counts it in flight, and grants nothing more until frames drain', () => {
    const { run: r, ring, counters } = run();
    r.answer(1);
    r.takeReady(1);
    const first = r.grantCredit();
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThanOrEqual(RING_FRAMES);
    expect(r.inFlight).toBe(first);
    expect(r.grantCredit()).toBe(0);
    // The engine sends every frame granted, each as large as a packet can be: the ring takes them all.
    send(r, first);
    expect(counters.framesOverrun).toBe(0);
    expect(ring.records()).toBe(first);
    expect(r.inFlight).toBe(0);
    expect(r.grantCredit()).toBe(0);
    // The worker drains the ring: what it frees is granted again, never past the ring.
    while (ring.skip());
    const again = r.grantCredit();
    expect(again).toBeGreaterThan(0);
    send(r, again);
    expect(counters.framesOverrun).toBe(0);
    expect(ring.records()).toBeLessThanOrEqual(RING_FRAMES);
  });

  it('grants in batches: a frame or two freed in a full ring is not worth a credit line', () => {
    const { run: r, ring } = run();
    r.answer(1);
    r.takeReady(1);
    send(r, r.grantCredit());
    ring.skip();
    expect(r.grantCredit()).toBe(0);
  });

  it('grants a small amount when the ring runs low with nothing in flight', () => {
    const { run: r, ring } = run();
    r.answer(1);
    r.takeReady(1);
    send(r, r.grantCredit());
    while (ring.records() > 1) ring.skip();
    expect(r.grantCredit()).toBeGreaterThan(0);
  });

  it('forgets the credit of a lost connection: the new engine window starts at zero', () => {
    const { run: r } = run();
    r.answer(1);
    const first = r.grantCredit();
    r.forgetCredit();
    expect(r.inFlight).toBe(0);
    expect(r.grantCredit()).toBe(first);
  });

  it('waits for the engine while frames are granted and the input has not ended', () => {
    const { run: r } = run();
    r.answer(1);
    r.takeReady(1);
    expect(r.awaitsEngine(true)).toBe(false);
    r.grantCredit();
    expect(r.awaitsEngine(true)).toBe(true);
    // Without credit the engine paces itself: the track waits for it as long as it plays.
    expect(r.awaitsEngine(false)).toBe(true);
    r.endInput();
    expect(r.awaitsEngine(true)).toBe(false);
  });
});

describe('intake', () => {
  it('refuses frames until the ready of this play has come, then routes them', () => {
    const { run: r, ring, counters } = run();
    r.answer(2);
    send(r, 1, Buffer.from([1, 2, 3]));
    expect(counters.framesStale).toBe(1);
    // The ready of the play this one replaced is not this track's.
    expect(r.takeReady(1)).toBe(false);
    send(r, 1, Buffer.from([1, 2, 3]));
    expect(counters.framesStale).toBe(2);
    expect(r.takeReady(2)).toBe(true);
    send(r, 1, Buffer.from([1, 2, 3]));
    expect(counters.framesRouted).toBe(1);
    expect(ring.records()).toBe(1);
  });

  it('takes a ready that comes before the play answer, unless the answer shows it was older', () => {
    const { run: r, counters } = run();
    expect(r.takeReady(3)).toBe(true);
    r.answer(4);
    send(r, 1, Buffer.from([1]));
    expect(counters.framesStale).toBe(1);
    expect(r.accepting).toBe(false);
  });

  it('refuses a payload larger than an Opus packet, without harm to the ring', () => {
    const { run: r, ring, counters } = run();
    r.answer(undefined);
    r.takeReady(undefined);
    const big = Buffer.alloc(maxPayloadBytes('opus') + 1);
    r.acceptFrame(big, 0, big.length, false);
    expect(counters.framesOversize).toBe(1);
    expect(ring.records()).toBe(0);
  });

  it('tells an earlier play\'s events apart: by play number, or without numbers by the ready', () => {
    const numbered = run().run;
    numbered.answer(5);
    expect(numbered.isStale(4)).toBe(true);
    expect(numbered.isStale(5)).toBe(false);
    const seed = run().run;
    seed.answer(undefined);
    expect(seed.isStale(undefined)).toBe(true);
    seed.takeReady(undefined);
    expect(seed.isStale(undefined)).toBe(false);
  });
});
