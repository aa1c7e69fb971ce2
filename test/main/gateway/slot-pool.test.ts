/**
 * The gateway's session slots on real worker threads (src/main/gateway/slot-pool.ts, built in
 * dist/ because its threads run the built worker): a thread is reused once its session ended,
 * with nothing of that session left on it, and a crashed one never is; pre-warmed threads are
 * replaced; a dead thread fails calls at once; the slots started ahead follow the play rate within
 * their bound; plays beyond them are served in arrival order; k sessions share a thread; a
 * playing thread sleeps between frames and its doorbell brings a call in at once.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Slot, SlotPool } from '../../../src/main/gateway/slot-pool.js';
import { PrewarmTarget } from '../../../src/main/gateway/prewarm.js';
import { loadConfig } from '../../../src/shared/config.js';
import { Ring } from '../../../src/shared/ring.js';
import { CONTROL_WORDS, type SessionInit } from '../../../src/shared/worker-messages.js';
import { RtpReceiver } from '../../helpers/rtp-receiver.js';

// The pool's threads run the built worker, found beside the pool's own module: take it from dist/.
const BUILT_POOL: string = '../../../dist/main/gateway/slot-pool.js';
const { SlotPool: BuiltSlotPool, SlotEndedError } = (await import(BUILT_POOL)) as typeof import('../../../src/main/gateway/slot-pool.js');

const open: { close(): unknown }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pool(options: { sessionsPerThread?: number; prewarm?: number; prewarmMax?: number; maxSessions?: number }): SlotPool {
  const p = new BuiltSlotPool(
    { sessionsPerThread: options.sessionsPerThread ?? 1, prewarm: options.prewarm ?? 0, prewarmMax: options.prewarmMax ?? 0, maxSessions: options.maxSessions ?? 8 },
    () => undefined,
  );
  open.push(p);
  return p;
}

/** A session whose ring holds `frames` frames of one byte value. */
function session(sid: number, frames: number, fill: number): SessionInit {
  const ring = Ring.create(Ring.capacityFor(frames + 4, 64));
  for (let i = 0; i < frames; i++) ring.write(new Uint8Array(40).fill(fill));
  return {
    sid,
    sessionId: `s${sid}`,
    format: 'opus',
    ring: ring.buffer,
    control: new SharedArrayBuffer(CONTROL_WORDS * 4),
    prebufferFrames: 3,
    noListener: 'pause',
    listeners: 0,
    nextSeq: 0,
    nextTimestamp: 0,
    voiceUdpSilenceMs: loadConfig({}).CHORUS_VOICE_UDP_SILENCE_MS,
  };
}

async function waitUntil(what: string, ok: () => boolean, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Ends a slot as the gateway does: its task may end before close's answer comes back. */
async function close(slot: Slot): Promise<void> {
  await slot.call((api) => api.close()).catch(() => undefined);
  await slot.done;
}

async function receiver(): Promise<RtpReceiver> {
  const rx = await RtpReceiver.open('udp4');
  open.push(rx);
  return rx;
}

describe('SlotPool', () => {
  it('reuses the thread of a session that ended, with nothing of that session left on it', async () => {
    const slots = pool({});
    const rxA = await receiver();
    const a = await slots.attach(session(1, 20, 0xaa));
    await a.slot.call((api) => api.addRtpSink({ host: rxA.host, port: rxA.port }));
    await a.slot.call((api) => api.reset(false));
    await a.slot.call((api) => api.endOfStream());
    const ended = await a.slot.done;
    expect(ended.nextSeq).toBe(20);
    expect(rxA.packets).toHaveLength(20);

    const rxB = await receiver();
    const b = await slots.attach(session(2, 10, 0xbb));
    expect(b.threadId).toBe(a.threadId);
    const sink = await b.slot.call((api) => api.addRtpSink({ host: rxB.host, port: rxB.port }));
    await b.slot.call((api) => api.reset(false));
    await rxB.waitForPackets(10, 5000);
    await sleep(100);
    // B starts from its own seq and timestamp, sends only its own frames to its own target.
    expect(rxB.packets[0]!.seq).toBe(sink.stream.seqOffset & 0xffff);
    expect(rxB.packets[0]!.timestamp).toBe(sink.stream.timestampOffset >>> 0);
    expect(rxB.packets.every((p) => p.payload.every((byte) => byte === 0xbb))).toBe(true);
    expect(rxA.packets).toHaveLength(20);
    const stats = await b.slot.call((api) => api.stats());
    expect(stats.sent).toBe(10);
    expect(stats.rtp.map((r) => r.port)).toEqual([rxB.port]);
    expect(stats.voice).toBeUndefined();
    expect(stats.sendLatenessMs.count).toBe(10);
  });

  it('a playing thread sleeps between its frames, yet takes a call at once: the call rings its doorbell', async () => {
    const slots = pool({});
    const rx = await receiver();
    const { slot } = await slots.attach(session(1, 200, 0xcc));
    await slot.call((api) => api.addRtpSink({ host: rx.host, port: rx.port }));
    await slot.call((api) => api.reset(false));
    await rx.waitForPackets(30, 5000);
    expect((await slot.call((api) => api.stats())).threadWakesSlept).toBeGreaterThan(0);
    // Unrung, a call would often wait for the thread's next turn of its event loop, up to
    // MAX_AWAY_MS (100 ms): about a quarter of them here.
    const roundTrips: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now();
      await slot.call((api) => api.stats());
      roundTrips.push(performance.now() - t0);
      await sleep(7);
    }
    expect(roundTrips.filter((ms) => ms >= 50).length, `round trips ${roundTrips.map(Math.round).join(' ')} ms`).toBeLessThanOrEqual(2);
    // A pause lands before the next frame or so, not a sleep later.
    await slot.call((api) => api.pause());
    const atPause = rx.packets.length;
    await sleep(300);
    expect(rx.packets.length - atPause).toBeLessThanOrEqual(2);
    await close(slot);
  });

  it('serves plays beyond the ready slots in arrival order', async () => {
    // Two threads at most, one of them started ahead: the second play gets the slot started to
    // replace the first's, the third and fourth wait for a session to end.
    const slots = pool({ prewarm: 1, prewarmMax: 1, maxSessions: 1 });
    await waitUntil('a thread started ahead', () => slots.threads === 1);
    await sleep(500);
    const resolved: number[] = [];
    const attaches = [1, 2, 3, 4].map((sid) =>
      slots.attach(session(sid, 0, 0)).then((r) => {
        resolved.push(sid);
        return r;
      }),
    );
    const [first, second] = await Promise.all(attaches.slice(0, 2));
    await sleep(300);
    expect(resolved.sort()).toEqual([1, 2]);
    await close(second!.slot);
    const third = await attaches[2]!;
    await sleep(300);
    expect(resolved).toEqual([1, 2, 3]);
    expect(third.threadId).toBe(second!.threadId);
    await close(first!.slot);
    const fourth = await attaches[3]!;
    expect(resolved).toEqual([1, 2, 3, 4]);
    expect(fourth.threadId).toBe(first!.threadId);
  });

  it('keeps as many slots started ahead as the recent play rate needs, within its bound', async () => {
    const slots = pool({ prewarm: 1, prewarmMax: 3, maxSessions: 10 });
    await waitUntil('the floor of slots started ahead', () => slots.prewarmed === 1);
    expect(slots.prewarmTarget).toBe(1);
    const taken = await Promise.all([1, 2, 3, 4, 5].map((sid) => slots.attach(session(sid, 0, 0))));
    // Five plays in a second, bounded at three.
    expect(slots.prewarmTarget).toBe(3);
    await waitUntil('three slots started ahead', () => slots.prewarmed === 3);
    for (const t of taken) await close(t.slot);
    // Five seconds with no plays: back to the floor.
    await waitUntil('the floor again', () => slots.prewarmTarget === 1 && slots.prewarmed === 1, 10_000);
  });

  it('puts up to k sessions on one thread in shared mode', async () => {
    const slots = pool({ sessionsPerThread: 4, prewarm: 2, prewarmMax: 2 });
    const [a, b] = await Promise.all([slots.attach(session(1, 0, 0)), slots.attach(session(2, 0, 0))]);
    expect(a.threadId).toBe(b.threadId);
    expect(slots.threads).toBe(1);
  });
});

describe('SlotPool threads', () => {
  it('keeps its pre-warmed threads: an attach takes one, and another starts in its place', async () => {
    const p = pool({ prewarm: 1, maxSessions: 4 });
    await waitUntil('the pre-warmed thread', () => p.threads === 1);
    const { slot } = await p.attach(session(101, 0, 0));
    expect(slot.alive).toBe(true);
    await waitUntil('a new warm thread', () => p.threads === 2);
  });

  it('a call into a slot whose thread has died fails with SlotEndedError instead of waiting forever', async () => {
    const p = pool({ maxSessions: 2 });
    const { slot } = await p.attach(session(102, 0, 0));
    expect((await slot.call((api) => api.stats())).status).toBe('idle');
    await slot.call((api) => api.crash('thread')).catch(() => undefined);
    await expect(slot.done).rejects.toThrow();
    expect(slot.alive).toBe(false);
    await expect(slot.call((api) => api.stats())).rejects.toBeInstanceOf(SlotEndedError);
    // The pool goes on: the next session gets a thread of its own.
    const next = await p.attach(session(103, 0, 0));
    expect((await next.slot.call((api) => api.stats())).status).toBe('idle');
  });

  it('never gives a crashed thread to another session', async () => {
    const p = pool({ prewarm: 0, prewarmMax: 0, maxSessions: 1 });
    const crashed = await p.attach(session(104, 0, 0));
    await crashed.slot.call((api) => api.crash('thread')).catch(() => undefined);
    await expect(crashed.slot.done).rejects.toThrow();
    const next = await p.attach(session(105, 0, 0));
    expect(next.threadId).not.toBe(crashed.threadId);
    expect((await next.slot.call((api) => api.stats())).sent).toBe(0);
  });
});

describe('PrewarmTarget', () => {
  it('follows the busiest second of the last five, from its floor to its ceiling', () => {
    let now = 10_000;
    const target = new PrewarmTarget(2, 6, () => now);
    expect(target.value).toBe(2);
    for (let i = 0; i < 4; i++) target.note();
    expect(target.value).toBe(4);
    now += 1000;
    for (let i = 0; i < 9; i++) target.note();
    expect(target.value).toBe(6);
    now += 4500;
    // The second of nine plays is still within the five.
    expect(target.value).toBe(6);
    now += 1000;
    expect(target.value).toBe(2);
    now += 60_000;
    target.note();
    expect(target.value).toBe(2);
  });

  it('never keeps fewer than its floor, even with a ceiling below it', () => {
    const target = new PrewarmTarget(3, 1, () => 0);
    expect(target.value).toBe(3);
    expect(target.max).toBe(3);
  });
});
