/**
 * The session player on a fake clock (PlayerHost.now): prebuffer, the drift-free 20 ms cadence,
 * catch-up and re-anchoring after a stall, pause and resume, underruns and the end of a track.
 * The real threads, rings and listeners are tested end to end in test/main/gateway.
 */
import { MessageChannel } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/shared/config.js';
import { Ring } from '../../src/shared/ring.js';
import { Control, CONTROL_WORDS, type NoListenerBehavior, type PlayerStatus } from '../../src/shared/worker-messages.js';
import { EgressBatch } from '../../src/workers/egress-batch.js';
import { SessionPlayer, type PlayerHost } from '../../src/workers/session-player.js';

const T0 = 1000;

const channels: MessageChannel[] = [];
afterEach(() => {
  for (const c of channels.splice(0)) {
    c.port1.close();
    c.port2.close();
  }
});

/** A player whose clock is `clock.t`, with its ring and what it told the main thread. */
function setUp(opts: { prebufferFrames?: number; noListener?: NoListenerBehavior; listeners?: number } = {}) {
  const ring = Ring.create(64 * 1024);
  const control = new SharedArrayBuffer(CONTROL_WORDS * 4);
  const words = new Int32Array(control);
  const clock = { t: T0 };
  const statuses: PlayerStatus[] = [];
  const channel = new MessageChannel();
  channels.push(channel);
  const host: PlayerHost = {
    batch: new EgressBatch(channel.port1),
    scratch: new Uint8Array(ring.maxPayload),
    postStatus: (_sid, status) => statuses.push(status),
    now: () => clock.t,
    clockStart: (now) => now,
  };
  const player = new SessionPlayer(
    {
      sid: 1,
      sessionId: 'fake-clock',
      format: 'opus',
      ring: ring.buffer,
      control,
      prebufferFrames: opts.prebufferFrames ?? 5,
      noListener: opts.noListener ?? 'play',
      listeners: opts.listeners ?? 0,
      nextSeq: 0,
      nextTimestamp: 0,
      voiceUdpSilenceMs: loadConfig({}).CHORUS_VOICE_UDP_SILENCE_MS,
    },
    ring,
    ring.maxPayload,
    host,
    () => undefined,
  );
  /** When the player asked to be woken next. */
  let next = Infinity;
  /** Every time a frame went out (the clock at its wake). */
  const sentAt: number[] = [];
  const wake = () => {
    const before = words[Control.Sent]!;
    next = player.wake(clock.t);
    for (let i = before; i < words[Control.Sent]!; i++) sentAt.push(clock.t);
  };
  return {
    player,
    ring,
    clock,
    statuses,
    sentAt,
    counter: (c: number) => words[c]!,
    /** The status the player last reported to its host (what the gateway hears). */
    status: () => statuses.at(-1) ?? 'idle',
    feed: (frames: number) => {
      for (let i = 0; i < frames; i++) expect(ring.write(new Uint8Array(100).fill(i & 0xff))).toBe(true);
    },
    /** Sets what the player returned from a call that is not a wake. */
    asked: (at: number) => (next = at),
    get next() {
      return next;
    },
    /** Wakes the player whenever it asked, up to `until`. */
    runUntil: (until: number) => {
      while (next <= until) {
        clock.t = Math.max(clock.t, next);
        wake();
      }
      clock.t = Math.max(clock.t, until);
    },
    /** One wake at `at`, whatever the player asked (a late timer). */
    wakeAt: (at: number) => {
      clock.t = at;
      wake();
    },
  };
}

describe('SessionPlayer on a fake clock', () => {
  it('waits for its prebuffer, polling, then takes one frame every 20 ms from the moment it starts', () => {
    const p = setUp({ prebufferFrames: 5 });
    p.feed(3);
    p.asked(p.player.reset(false));
    expect(p.status()).toBe('buffering');
    p.runUntil(T0 + 50);
    expect(p.sentAt).toEqual([]);
    expect(p.status()).toBe('buffering');
    p.feed(47);
    p.runUntil(T0 + 60);
    const start = p.sentAt[0]!;
    expect(start).toBeGreaterThan(T0 + 50);
    expect(start).toBeLessThanOrEqual(T0 + 52);
    expect(p.status()).toBe('playing');
    p.runUntil(start + 200);
    expect(p.sentAt).toEqual(Array.from({ length: 11 }, (_, i) => start + 20 * i));
    expect(p.player.nextSeq).toBe(11);
    expect(p.counter(Control.Late)).toBe(0);
    expect(p.statuses).toEqual(['buffering', 'playing']);
  });

  it('a late wake does not move the clock: the next deadline is the last one plus 20 ms', () => {
    const p = setUp({ prebufferFrames: 1 });
    p.feed(20);
    p.asked(p.player.reset(false));
    p.runUntil(T0);
    expect(p.sentAt).toEqual([T0]);
    p.wakeAt(T0 + 27);
    expect(p.sentAt).toEqual([T0, T0 + 27]);
    expect(p.next).toBe(T0 + 40);
  });

  it('after a stall catches up, at most 10 frames a wake; more than 200 ms behind it re-anchors its clock', () => {
    const p = setUp({ prebufferFrames: 1 });
    p.feed(200);
    p.asked(p.player.reset(false));
    p.runUntil(T0);
    // 100 ms late: the frames due at +20 … +100 all go out at once, in order, and the clock stays.
    p.wakeAt(T0 + 100);
    expect(p.sentAt.filter((t) => t === T0 + 100)).toHaveLength(5);
    expect(p.next).toBe(T0 + 120);
    expect(p.counter(Control.Late)).toBe(3);
    // 600 ms late: 10 frames, and the clock starts again one frame from now instead of bursting 20 more.
    p.wakeAt(T0 + 700);
    expect(p.sentAt.filter((t) => t === T0 + 700)).toHaveLength(10);
    expect(p.counter(Control.Resyncs)).toBe(1);
    expect(p.next).toBe(T0 + 720);
  });

  it('pause holds the buffered frames; resume plays them at once, the sequence going on with no gap', () => {
    const p = setUp({ prebufferFrames: 5 });
    p.feed(30);
    p.asked(p.player.reset(false));
    p.runUntil(T0 + 100);
    const seqAtPause = p.player.nextSeq;
    const recordsAtPause = p.ring.records();
    p.asked(p.player.pause());
    expect(p.status()).toBe('paused');
    expect(p.next).toBe(Infinity);
    p.wakeAt(T0 + 500);
    expect(p.player.nextSeq).toBe(seqAtPause);
    expect(p.ring.records()).toBe(recordsAtPause);
    p.clock.t = T0 + 3000;
    p.asked(p.player.resume());
    expect(p.status()).toBe('playing');
    expect(p.next).toBe(T0 + 3000);
    p.runUntil(T0 + 3040);
    expect(p.sentAt.filter((t) => t >= T0 + 3000)).toEqual([T0 + 3000, T0 + 3020, T0 + 3040]);
    expect(p.player.nextSeq).toBe(seqAtPause + 3);
    expect(p.counter(Control.Underruns)).toBe(0);
    expect(p.statuses).toEqual(['buffering', 'playing', 'paused', 'playing']);
  });

  it('resume with nothing buffered waits for the prebuffer again', () => {
    const p = setUp({ prebufferFrames: 2 });
    p.asked(p.player.reset(true));
    expect(p.status()).toBe('paused');
    p.asked(p.player.resume());
    expect(p.status()).toBe('buffering');
  });

  it('an empty ring while playing is an underrun: counted, and buffering again until the prebuffer is back', () => {
    const p = setUp({ prebufferFrames: 3 });
    p.feed(3);
    p.asked(p.player.reset(false));
    p.runUntil(T0 + 60);
    expect(p.sentAt).toHaveLength(3);
    p.runUntil(T0 + 80);
    expect(p.status()).toBe('buffering');
    expect(p.counter(Control.Underruns)).toBe(1);
    p.feed(3);
    p.runUntil(T0 + 90);
    expect(p.status()).toBe('playing');
  });

  it('at the end of the stream plays out what is buffered, however little, then finishes', () => {
    const p = setUp({ prebufferFrames: 10 });
    p.feed(4);
    p.asked(p.player.reset(false));
    p.runUntil(T0 + 10);
    expect(p.sentAt).toEqual([]);
    p.asked(p.player.markEndOfStream());
    p.runUntil(T0 + 200);
    expect(p.sentAt).toHaveLength(4);
    expect(p.status()).toBe('finished');
    expect(p.next).toBe(Infinity);
  });

  it('with no one listening (noListener pause) it autopauses; a listener arriving plays on from the buffer', () => {
    const p = setUp({ prebufferFrames: 2, noListener: 'pause', listeners: 0 });
    p.feed(5);
    p.asked(p.player.reset(false));
    p.runUntil(T0 + 40);
    expect(p.status()).toBe('autopaused');
    expect(p.sentAt).toEqual([]);
    p.clock.t = T0 + 100;
    p.asked(p.player.setListeners(1));
    expect(p.status()).toBe('playing');
    p.runUntil(T0 + 140);
    expect(p.sentAt).toEqual([T0 + 100, T0 + 120, T0 + 140]);
  });
});
