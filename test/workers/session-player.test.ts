/**
 * The session player on a fake clock (PlayerHost.now): prebuffer, the drift-free 20 ms cadence,
 * catch-up and re-anchoring after a stall, pause and resume, underruns (and the schedule kept
 * after one) and the end of a track, splices, and a move to another thread (two players, two
 * clocks with their own origins).
 * The real threads, rings and listeners are tested end to end in test/main/gateway.
 */
import { MessageChannel } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/shared/config.js';
import { Ring } from '../../src/shared/ring.js';
import { Control, CONTROL_WORDS, type NoListenerBehavior, type PlayerHandOff, type PlayerStatus } from '../../src/shared/worker-messages.js';
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
function setUp(
  opts: {
    prebufferFrames?: number;
    noListener?: NoListenerBehavior;
    listeners?: number;
    /** The player's clock's zero, ms since the epoch (each thread has its own). */
    timeOrigin?: number;
    /** Where the clock starts. */
    t?: number;
    /** Takes over from another player's hand-off, on its ring and control words. */
    from?: { ring: Ring; control: SharedArrayBuffer; handOff: PlayerHandOff };
  } = {},
) {
  const ring = opts.from?.ring ?? Ring.create(64 * 1024);
  const control = opts.from?.control ?? new SharedArrayBuffer(CONTROL_WORDS * 4);
  const words = new Int32Array(control);
  const clock = { t: opts.t ?? T0 };
  const statuses: PlayerStatus[] = [];
  const channel = new MessageChannel();
  channels.push(channel);
  const host: PlayerHost = {
    batch: new EgressBatch(channel.port1),
    scratch: new Uint8Array(ring.maxPayload),
    postStatus: (_sid, status) => statuses.push(status),
    now: () => clock.t,
    timeOrigin: opts.timeOrigin ?? 0,
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
  /** The mark (first byte) of the last frame each wake that sent any took. */
  const played: number[] = [];
  const wake = () => {
    const before = words[Control.Sent]!;
    next = player.wake(clock.t);
    for (let i = before; i < words[Control.Sent]!; i++) sentAt.push(clock.t);
    if (words[Control.Sent]! > before) played.push(host.scratch[0]!);
  };
  if (opts.from) next = player.takeOver(opts.from.handOff);
  return {
    player,
    ring,
    control,
    clock,
    statuses,
    sentAt,
    played,
    counter: (c: number) => words[c]!,
    /** The status the player last reported to its host (what the gateway hears). */
    status: () => statuses.at(-1) ?? 'idle',
    feed: (frames: number) => {
      for (let i = 0; i < frames; i++) expect(ring.write(new Uint8Array(100).fill(i & 0xff))).toBe(true);
    },
    /** `frames` frames whose bytes are all `mark`. */
    feedMarked: (frames: number, mark: number) => {
      for (let i = 0; i < frames; i++) expect(ring.write(new Uint8Array(100).fill(mark))).toBe(true);
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

  /** A player with a prebuffer of 3 that played its 3 frames and found none for +60. */
  function underrunAt60() {
    const p = setUp({ prebufferFrames: 3 });
    p.feed(3);
    p.asked(p.player.reset(false));
    p.runUntil(T0 + 60);
    return p;
  }

  it('after an underrun, a feed that comes back in a burst takes back the gap: the schedule is kept', () => {
    const p = underrunAt60();
    // The frame due at +60 is missing: the feed is held up for 100 ms, then 10 frames come at once.
    expect(p.status()).toBe('buffering');
    p.runUntil(T0 + 160);
    p.feed(10);
    p.runUntil(T0 + 165);
    expect(p.status()).toBe('playing');
    // The frames due at +60 … +160 go out at once, the rest on the first schedule: +180, +200, …
    expect(p.sentAt.filter((t) => t > T0 + 40 && t <= T0 + 165)).toHaveLength(6);
    p.runUntil(T0 + 240);
    expect(p.sentAt.slice(-4)).toEqual([T0 + 180, T0 + 200, T0 + 220, T0 + 240]);
    expect(p.counter(Control.Underruns)).toBe(1);
    expect(p.counter(Control.Resyncs)).toBe(0);
  });

  it('after an underrun, a feed that only trickles back in restarts the clock from its prebuffer', () => {
    const p = underrunAt60();
    p.runUntil(T0 + 100);
    p.feed(3);
    p.runUntil(T0 + 103);
    // Only the prebuffer is back: one frame now, the next 20 ms later, none bunched.
    expect(p.status()).toBe('playing');
    const restart = p.sentAt.at(-1)!;
    expect(restart).toBeGreaterThanOrEqual(T0 + 100);
    p.runUntil(restart + 40);
    expect(p.sentAt.slice(-3)).toEqual([restart, restart + 20, restart + 40]);
  });

  it('after an underrun longer than 200 ms the clock restarts, whatever comes back', () => {
    const p = underrunAt60();
    p.runUntil(T0 + 400);
    p.feed(30);
    // Polled every 20 ms by now: it starts within one poll, sending one frame, not the 17 missed.
    p.runUntil(T0 + 420);
    const after = p.sentAt.filter((t) => t >= T0 + 400);
    expect(after).toHaveLength(1);
    expect(p.next).toBe(after[0]! + 20);
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

  describe('a splice (a sound change with no gap)', () => {
    const OLD = 1;
    const NEW = 2;

    /** Playing old frames, one a wake, `played` old frames taken by T0 + 20 × (played - 1). */
    function playing(played: number) {
      const p = setUp({ prebufferFrames: 1 });
      p.feedMarked(40, OLD);
      p.asked(p.player.reset(false));
      p.runUntil(T0 + 20 * (played - 1));
      expect(p.sentAt).toHaveLength(played);
      return p;
    }

    it('plays the old frames up to its cut, skips those after it, and goes on with the new play\'s first frame on the same clock', () => {
      const p = playing(5);
      const sent = p.counter(Control.Sent);
      const point = p.player.spliceAt(4)!;
      expect(point).toEqual({ cut: p.ring.removeCount() + 4, sent: sent + 4 });
      // Old frames still come after the cut until the engine has the new play; then its `ready`.
      p.feedMarked(3, OLD);
      const first = p.ring.writeCount();
      // Playing, it keeps its clock: the answer is its next wake as it was.
      p.player.spliceTo(first);
      p.feedMarked(20, NEW);
      p.runUntil(T0 + 80 + 20 * 10);
      expect(p.played).toEqual([...Array<number>(5 + 4).fill(OLD), ...Array<number>(6).fill(NEW)]);
      expect(p.sentAt).toEqual(Array.from({ length: 15 }, (_, i) => T0 + 20 * i));
      // The old frames after the cut, those in the ring at the splice and the 3 that came after, were never played.
      expect(p.ring.stats().flushed).toBe(40 - 9 + 3);
      expect(p.counter(Control.Underruns)).toBe(0);
      expect(p.statuses).toEqual(['buffering', 'playing']);
    });

    it('new frames not there at the cut are waited for as in an underrun; the old frames after the cut never play', () => {
      const p = playing(3);
      p.player.spliceAt(2);
      p.runUntil(T0 + 40 + 20 * 4);
      expect(p.played).toEqual(Array<number>(5).fill(OLD));
      expect(p.status()).toBe('buffering');
      expect(p.counter(Control.Underruns)).toBe(1);
      // Its place known but nothing of it in the ring yet: still waiting.
      p.asked(p.player.spliceTo(p.ring.writeCount()));
      p.runUntil(p.clock.t + 30);
      expect(p.played).toHaveLength(5);
      p.feedMarked(10, NEW);
      p.runUntil(p.clock.t + 60);
      expect(p.status()).toBe('playing');
      expect(p.played.length).toBeGreaterThan(6);
      expect(p.played.slice(5).every((mark) => mark === NEW)).toBe(true);
      expect(p.counter(Control.Underruns)).toBe(1);
    });

    it('paused during a splice: resume plays the rest of the old frames up to the cut, then the new ones', () => {
      const p = playing(4);
      p.player.spliceAt(5);
      p.runUntil(T0 + 60 + 40);
      expect(p.played).toHaveLength(6);
      p.asked(p.player.pause());
      expect(p.status()).toBe('paused');
      p.asked(p.player.spliceTo(p.ring.writeCount()));
      p.feedMarked(10, NEW);
      p.clock.t = T0 + 2000;
      p.asked(p.player.resume());
      expect(p.status()).toBe('playing');
      p.runUntil(T0 + 2000 + 20 * 6);
      expect(p.played).toEqual([...Array<number>(4 + 5).fill(OLD), ...Array<number>(4).fill(NEW)]);
      expect(p.counter(Control.Underruns)).toBe(0);
    });

    it('paused at the cut with the new play\'s place unknown: resume waits for it as a buffering player', () => {
      const p = playing(2);
      p.player.spliceAt(1);
      p.asked(p.player.pause());
      p.asked(p.player.resume());
      p.runUntil(T0 + 100);
      expect(p.played).toEqual([OLD, OLD, OLD]);
      expect(p.status()).toBe('buffering');
      p.asked(p.player.spliceTo(p.ring.writeCount()));
      p.feedMarked(1, NEW);
      p.runUntil(T0 + 140);
      expect(p.played.at(-1)).toBe(NEW);
    });

    it('one at a time, only while playing with the lead in the ring; cancelled or reset, every frame plays again', () => {
      const p = playing(2);
      expect(p.player.spliceAt(50)).toBeUndefined();
      expect(p.player.spliceAt(3)).toBeDefined();
      expect(p.player.spliceAt(3)).toBeUndefined();
      p.player.cancelSplice();
      p.runUntil(T0 + 20 * 9);
      expect(p.played).toEqual(Array<number>(10).fill(OLD));
      p.asked(p.player.pause());
      expect(p.player.spliceAt(3)).toBeUndefined();
      p.asked(p.player.resume());
      expect(p.player.spliceAt(3)).toBeDefined();
      // A new track (a seek) flushes the ring and forgets the splice.
      p.ring.clear();
      p.asked(p.player.reset(false));
      p.feedMarked(5, NEW);
      p.runUntil(p.clock.t + 100);
      expect(p.played.slice(10)).toEqual(Array<number>(5).fill(NEW));
    });
  });

  describe('moving to another thread (handOff, then takeOver by a player there)', () => {
    /** A player on thread A, playing frames marked 0, 1, 2, …; thread B's clock started 5 s after A's. */
    const A_ORIGIN = 1_700_000_000_000;
    const B_ORIGIN = A_ORIGIN + 5000;
    const onB = (t: number) => t + A_ORIGIN - B_ORIGIN;

    function playingOnA() {
      const a = setUp({ prebufferFrames: 1, timeOrigin: A_ORIGIN });
      a.feed(60);
      a.asked(a.player.reset(false));
      a.runUntil(T0 + 100);
      expect(a.sentAt).toEqual([T0, T0 + 20, T0 + 40, T0 + 60, T0 + 80, T0 + 100]);
      return a;
    }

    it('goes on with the next frame on the same deadline, translated to its own clock, with seq and timestamp running on', () => {
      const a = playingOnA();
      a.clock.t = T0 + 105;
      const handOff = a.player.handOff()!;
      expect(handOff).toMatchObject({ status: 'playing', deadline: A_ORIGIN + T0 + 120, nextSeq: 6, nextTimestamp: 6 * 960, held: false, endOfStream: false, rtp: [] });
      // The move took 3 ms: B's first wake is A's next deadline, on B's clock.
      const b = setUp({ prebufferFrames: 50, timeOrigin: B_ORIGIN, t: onB(T0 + 108), from: { ring: a.ring, control: a.control, handOff } });
      expect(b.player.current).toBe('playing');
      expect(b.next).toBe(onB(T0 + 120));
      b.runUntil(onB(T0 + 160));
      // No prebuffer waited for (50 frames were asked), no status posted: nothing changed for main.
      expect(b.sentAt).toEqual([onB(T0 + 120), onB(T0 + 140), onB(T0 + 160)]);
      expect(b.played).toEqual([6, 7, 8]);
      expect(b.statuses).toEqual([]);
      expect(b.player.nextSeq).toBe(9);
      expect(b.player.nextTimestamp).toBe(9 * 960);
      expect(b.counter(Control.Sent)).toBe(9);
    });

    it('a move slower than a frame sends the frames due at once, in order, none skipped', () => {
      const a = playingOnA();
      a.clock.t = T0 + 105;
      const handOff = a.player.handOff()!;
      const b = setUp({ prebufferFrames: 1, timeOrigin: B_ORIGIN, t: onB(T0 + 150), from: { ring: a.ring, control: a.control, handOff } });
      expect(b.next).toBe(onB(T0 + 120));
      b.wakeAt(onB(T0 + 150));
      expect(b.sentAt).toEqual([onB(T0 + 150), onB(T0 + 150)]);
      expect(b.player.nextSeq).toBe(8);
      expect(b.next).toBe(onB(T0 + 160));
    });

    it('moves paused or buffering as it was, with the end of the stream', () => {
      const a = playingOnA();
      a.asked(a.player.pause());
      a.asked(a.player.markEndOfStream());
      const paused = setUp({ timeOrigin: B_ORIGIN, t: onB(T0 + 110), from: { ring: a.ring, control: a.control, handOff: a.player.handOff()! } });
      expect(paused.player.current).toBe('paused');
      expect(paused.next).toBe(Infinity);
      paused.asked(paused.player.resume());
      paused.runUntil(onB(T0 + 2000));
      // The rest of the ring played out, then the end.
      expect(paused.player.nextSeq).toBe(60);
      expect(paused.statuses).toEqual(['playing', 'finished']);

      const c = setUp({ prebufferFrames: 5, timeOrigin: A_ORIGIN });
      c.asked(c.player.reset(false));
      c.runUntil(T0 + 10);
      const buffering = setUp({ prebufferFrames: 5, timeOrigin: B_ORIGIN, t: onB(T0 + 12), from: { ring: c.ring, control: c.control, handOff: c.player.handOff()! } });
      expect(buffering.player.current).toBe('buffering');
      expect(buffering.next).toBe(onB(T0 + 12));
      buffering.feed(5);
      buffering.runUntil(onB(T0 + 20));
      expect(buffering.statuses).toEqual(['playing']);
    });

    it('a move while buffering after an underrun keeps the schedule to take back', () => {
      const a = setUp({ prebufferFrames: 3, timeOrigin: A_ORIGIN });
      a.feed(3);
      a.asked(a.player.reset(false));
      a.runUntil(T0 + 70);
      expect(a.status()).toBe('buffering');
      const handOff = a.player.handOff()!;
      expect(handOff.missedDeadline).toBe(A_ORIGIN + T0 + 60);
      const b = setUp({ prebufferFrames: 3, timeOrigin: B_ORIGIN, t: onB(T0 + 80), from: { ring: a.ring, control: a.control, handOff } });
      b.feed(10);
      b.runUntil(onB(T0 + 82));
      // The frames due at +60 and +80 go out at once on B: the first schedule goes on.
      expect(b.sentAt).toEqual([onB(T0 + 80), onB(T0 + 80)]);
      expect(b.next).toBe(onB(T0 + 100));
    });

    it('is refused while a splice is under way', () => {
      const a = playingOnA();
      expect(a.player.spliceAt(3)).toBeDefined();
      expect(a.player.handOff()).toBeUndefined();
      a.asked(a.player.cancelSplice());
      expect(a.player.handOff()).toBeDefined();
    });
  });
});
