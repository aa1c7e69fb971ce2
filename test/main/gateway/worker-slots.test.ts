/**
 * The bridge (src/main/gateway/worker-slots.ts) on real worker threads and real UDP on loopback:
 * with no own thread booted, a play starts at once on a shared bridge slot, moves mid-track to
 * its own thread once that has booted, and an RTP receiver hears one stream across the move —
 * one SSRC, seq +1 and timestamp +960 every packet, every frame once, none twice. Controls around
 * the move all land; with no bridge a play waits for its own thread. The pools' threads run the
 * built worker (dist/), as in slot-pool.test.ts. The whole gateway with its bridge is in
 * the second half: a real engine and gateway, timed from the play request.
 */
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import type { GatewaySession } from '../../../src/main/gateway/session.js';
import type { SlotPool } from '../../../src/main/gateway/slot-pool.js';
import type { WorkerSlots } from '../../../src/main/gateway/worker-slots.js';
import type { EngineApi } from '../../../src/main/gateway/engine-api.js';
import { gatewayCounters } from '../../../src/main/gateway/counters.js';
import { loadConfig } from '../../../src/shared/config.js';
import { FRAME_SAMPLES } from '../../../src/shared/audio.js';
import { Redactor } from '../../../src/shared/redact.js';
import type { PlayerStatus } from '../../../src/shared/worker-messages.js';
import { cadence, continuity, formatCadence, RtpReceiver, type Received } from '../../helpers/rtp-receiver.js';
import { startStack, stopStack, type Stack } from '../../helpers/stack.js';
import { client } from '../../helpers/http.js';

// The pools' threads run the built worker, found beside the pool's own module: take them from dist/.
const BUILT = '../../../dist/main/gateway/';
const { SlotPool: BuiltSlotPool } = (await import(`${BUILT}slot-pool.js`)) as typeof import('../../../src/main/gateway/slot-pool.js');
const { WorkerSlots: BuiltWorkerSlots } = (await import(`${BUILT}worker-slots.js`)) as typeof import('../../../src/main/gateway/worker-slots.js');
const { GatewaySession: BuiltSession } = (await import(`${BUILT}session.js`)) as typeof import('../../../src/main/gateway/session.js');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const open: { close(): unknown }[] = [];
const timers: NodeJS.Timeout[] = [];
afterEach(async () => {
  for (const t of timers.splice(0)) clearInterval(t);
  for (const o of open.splice(0).reverse()) await o.close();
});

async function waitUntil(what: string, ok: () => boolean, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** A thread-per-session pool with nothing booted ahead, and (unless `bridge` is false) a bridge pool with slots started. */
async function setUp(bridge = true, prewarm = 0) {
  const own = new BuiltSlotPool({ sessionsPerThread: 1, prewarm, prewarmMax: prewarm, maxSessions: 8 }, () => undefined);
  open.push(own);
  if (prewarm > 0) await waitUntil('the own slots started ahead and ready', () => own.ready === prewarm);
  let shared: SlotPool | undefined;
  if (bridge) {
    shared = new BuiltSlotPool({ sessionsPerThread: 64, prewarm: 2, prewarmMax: 2, maxSessions: 8 }, () => undefined);
    open.push(shared);
    await waitUntil('the bridge slots started ahead', () => shared!.prewarmed === 2);
  }
  const engine = { control: async () => undefined } as unknown as EngineApi;
  const slots: WorkerSlots = new BuiltWorkerSlots(loadConfig({}), own, engine, () => false, shared);
  return { own, slots };
}

/**
 * A session whose track is fed as the engine would (frames numbered from 0 in their first four
 * bytes, the ring kept 25 frames ahead), heard by an RTP receiver from its first frame.
 */
async function playing(slots: WorkerSlots, id: string) {
  const rx = await RtpReceiver.open('udp4');
  open.push(rx);
  const session: GatewaySession = new BuiltSession(id, 1, 3000, 'wait', gatewayCounters(), new Redactor(), 20);
  let written = 0;
  const feed = () => {
    const ring = session.ring;
    if (!ring) return;
    while (ring.records() < 25) {
      const frame = new Uint8Array(60).fill(0x5a);
      new DataView(frame.buffer).setUint32(0, written);
      if (!ring.write(frame)) break;
      written++;
    }
  };
  session.keepRtpSink({ host: rx.host, port: rx.port });
  const t0 = performance.now();
  await session.exclusive(async () => {
    session.beginTrack({ url: 'tone:440', format: 'opus', startAt: 0 });
    feed();
    await slots.prepare(session, true, false);
  });
  timers.push(setInterval(feed, 5));
  await rx.waitForPackets(1, 5000);
  return { session, rx, firstFrameMs: rx.packets[0]!.at - t0 };
}

/** The frame number each packet carries. */
const numbers = (packets: readonly Received[]) => packets.map((p) => new DataView(p.payload.buffer, p.payload.byteOffset).getUint32(0));

async function threadOf(session: GatewaySession): Promise<number> {
  return (await session.slot!.call((api) => api.stats())).threadId;
}

describe('WorkerSlots with a bridge', () => {
  it('starts a play at once on the bridge and moves it to its own thread mid-track, the RTP stream going on as one', async () => {
    const { slots } = await setUp();
    const { session, rx, firstFrameMs } = await playing(slots, 'bridge-move');
    const bridgeSlot = session.slot!;
    const bridgeThread = await threadOf(session);
    expect(slots.bridgeCounters).toMatchObject({ sessions: 1, moves: 0 });
    await waitUntil('the move to its own thread', () => session.slot !== bridgeSlot);
    const movedAt = performance.now();
    expect(slots.bridgeCounters).toMatchObject({ sessions: 0, moves: 1, givenUp: 0 });
    const ownThread = await threadOf(session);
    expect(ownThread).not.toBe(bridgeThread);
    await sleep(600);
    await rx.waitForPackets(rx.packets.length + 5);
    const packets = [...rx.packets];
    const c = continuity(packets, FRAME_SAMPLES);
    const around = packets.filter((p) => Math.abs(p.at - movedAt) < 300);
    console.log(
      `bridge: play → first RTP frame ${firstFrameMs.toFixed(1)} ms; moved from thread ${bridgeThread} to ${ownThread} ` +
        `${(movedAt - packets[0]!.at).toFixed(0)} ms after the first frame; ${packets.length} packets; around the move ${formatCadence(cadence(around))}`,
    );
    expect(c.ssrcs).toHaveLength(1);
    expect(c.seqBreaks).toEqual([]);
    expect(c.timestampBreaks).toEqual([]);
    expect(numbers(packets)).toEqual(packets.map((_, i) => i));
    // The new thread's first packet is no talkspurt: a receiver has no reason to re-anchor.
    expect(packets.slice(1).filter((p) => p.marker)).toEqual([]);
    const stats = await session.slot!.call((api) => api.stats());
    expect(stats.status).toBe('playing');
    expect(stats.rtp.map((r) => r.ssrc)).toEqual(c.ssrcs);
    await session.exclusive(async () => session.releaseSlot());
  });

  it('pause, resume and a seek issued around the move all land, on whichever thread the session is', async () => {
    const { slots } = await setUp();
    const { session, rx } = await playing(slots, 'bridge-controls');
    const bridgeSlot = session.slot!;
    const answers: { action: string; status: PlayerStatus; moved: boolean }[] = [];
    const control = (action: 'pause' | 'resume') =>
      session.exclusive(async () => {
        const status = await session.slot!.call((api) => (action === 'pause' ? api.pause() : api.resume()));
        answers.push({ action, status, moved: session.slot !== bridgeSlot });
      });
    for (let i = 0; answers.filter((a) => a.moved).length < 4; i++) {
      if (i > 400) throw new Error('the session never moved');
      await control(i % 2 === 0 ? 'pause' : 'resume');
      await sleep(10);
    }
    expect(answers.some((a) => !a.moved)).toBe(true);
    for (const a of answers) expect(a.status, JSON.stringify(a)).toBe(a.action === 'pause' ? 'paused' : 'playing');
    // A seek: the same track from elsewhere, on the slot it has now.
    await session.exclusive(async () => {
      session.beginTrack({ url: 'tone:440', format: 'opus', startAt: 5 });
      await slots.prepare(session, false, false);
    });
    const atSeek = rx.packets.length;
    await rx.waitForPackets(atSeek + 10);
    // Paused now: nothing more goes out.
    await control('pause');
    await sleep(100);
    const atPause = rx.packets.length;
    await sleep(300);
    expect(rx.packets.length).toBe(atPause);
    const c = continuity(rx.packets, FRAME_SAMPLES);
    console.log(`bridge controls: ${answers.length} pause/resume (${answers.filter((a) => !a.moved).length} before the move), ${rx.packets.length} packets, gaps ${formatCadence(cadence(rx.packets))}`);
    expect(c.ssrcs).toHaveLength(1);
    expect(c.seqBreaks).toEqual([]);
    expect(c.timestampBreaks).toEqual([]);
    // Up to the seek every frame once, in order; after it the ring's new frames.
    const before = numbers(rx.packets.slice(0, atSeek));
    expect(before).toEqual(before.map((_, i) => i));
    await session.exclusive(async () => session.releaseSlot());
  });

  it('a session whose track ends on the bridge gives its own slot back', async () => {
    const { own, slots } = await setUp();
    const { session, rx } = await playing(slots, 'bridge-ends');
    const bridgeSlot = session.slot!;
    // Ended before its own thread came: released, as a stop does.
    await session.exclusive(async () => session.releaseSlot());
    await bridgeSlot.done;
    await waitUntil('the own slot given back', () => own.prewarmed === 1);
    expect(slots.bridgeCounters).toMatchObject({ sessions: 0, moves: 0 });
    const after = rx.packets.length;
    await sleep(200);
    expect(rx.packets.length).toBe(after);
  });
});

describe('WorkerSlots with no bridge', () => {
  it('a play takes the slot started ahead instead of waiting for another to start', async () => {
    const { own, slots } = await setUp(false, 1);
    let waits = 0;
    const take = own.take.bind(own);
    own.take = () => {
      waits++;
      return take();
    };
    const { session } = await playing(slots, 'warm');
    expect(waits).toBe(0);
    await session.exclusive(async () => session.releaseSlot());
  });

  it('a play waits for its own thread to boot', async () => {
    const { slots } = await setUp(false);
    const { session, firstFrameMs } = await playing(slots, 'no-bridge');
    const thread = await threadOf(session);
    console.log(`no bridge: play → first RTP frame ${firstFrameMs.toFixed(1)} ms (a thread boot)`);
    await sleep(300);
    expect(await threadOf(session)).toBe(thread);
    expect(slots.bridgeCounters).toEqual({ sessions: 0, moves: 0, givenUp: 0 });
    await session.exclusive(async () => session.releaseSlot());
  });
});

describe('the gateway with its bridge (a real engine, CHORUS_PREWARM_THREADS=0)', () => {
  let stack: Stack | undefined;
  afterEach(async () => {
    await stopStack(stack);
    stack = undefined;
  });

  /** A metric's value from /metrics. */
  async function metric(api: ReturnType<typeof client>, name: string): Promise<number> {
    const text = (await api('GET', '/metrics')).text;
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return Number(line?.split(' ')[1]);
  }

  /**
   * `n` plays at once on a fresh gateway, each heard by an RTP receiver: the thread boots they
   * wait for (or not) compete with the engine's ffmpegs. Each session's thread is read as soon as
   * its sink is added.
   */
  async function playTones(bridge: '0' | '1', n: number) {
    stack = await startStack({}, {}, { CHORUS_PREWARM_THREADS: '0', CHORUS_BRIDGE_THREAD: bridge, CHORUS_NO_LISTENER: 'play' });
    const api = client(stack.url);
    // The gateway's own threads (the bridge's) have booted.
    await sleep(1000);
    const plays = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const rx = await RtpReceiver.open('udp4');
        open.push(rx);
        const id = `gw-bridge${bridge}-${i}`;
        const t0 = performance.now();
        const play = await api('POST', `/sessions/${id}/play`, { url: `tone:${440 + 40 * i}?seconds=5` });
        expect(play.status, play.text).toBe(200);
        const add = await api('POST', `/sessions/${id}/rtp`, { host: rx.host, port: rx.port });
        expect(add.status, add.text).toBe(200);
        const firstThread = (await api('GET', `/sessions/${id}`)).json.worker?.threadId as number;
        await rx.waitForPackets(1);
        return { rx, id, firstThread, firstPacketMs: rx.packets[0]!.at - t0 };
      }),
    );
    return { api, plays };
  }

  const ms = (values: number[]) => values.map((v) => v.toFixed(0)).join(' ');

  it('plays on the bridge while threads boot, then each on a thread of its own, one RTP stream each throughout', async () => {
    const { api, plays } = await playTones('1', 4);
    const until = Date.now() + 10_000;
    while ((await metric(api, 'chorus_gateway_bridge_sessions')) > 0) {
      if (Date.now() > until) throw new Error('sessions stayed on the bridge');
      await sleep(20);
    }
    const moves = await metric(api, 'chorus_gateway_bridge_moves_total');
    expect(moves).toBeGreaterThanOrEqual(1);
    expect(await metric(api, 'chorus_gateway_bridge_moves_given_up_total')).toBe(0);
    let heardMoving = 0;
    for (const { rx, id, firstThread } of plays) {
      await rx.waitForPackets(rx.packets.length + 10);
      if ((await api('GET', `/sessions/${id}`)).json.worker?.threadId !== firstThread) heardMoving++;
      const c = continuity(rx.packets, FRAME_SAMPLES);
      expect(c.ssrcs, id).toHaveLength(1);
      expect(c.seqBreaks, id).toEqual([]);
      expect(c.timestampBreaks, id).toEqual([]);
    }
    const widest = Math.max(...plays.map((p) => cadence(p.rx.packets).max));
    console.log(
      `gateway, bridge: play request → first RTP packet ${ms(plays.map((p) => p.firstPacketMs))} ms; ${moves} moves, ` +
        `${heardMoving} of them while RTP was heard; widest packet gap ${widest.toFixed(1)} ms`,
    );
  });

  it('with CHORUS_BRIDGE_THREAD=0 plays wait for their own threads and stay there', async () => {
    const { api, plays } = await playTones('0', 4);
    console.log(`gateway, no bridge: play request → first RTP packet ${ms(plays.map((p) => p.firstPacketMs))} ms`);
    for (const { rx, id, firstThread } of plays) {
      await rx.waitForPackets(25);
      expect((await api('GET', `/sessions/${id}`)).json.worker?.threadId).toBe(firstThread);
      expect(continuity(rx.packets, FRAME_SAMPLES).seqBreaks).toEqual([]);
    }
    expect(await metric(api, 'chorus_gateway_bridge_moves_total')).toBe(0);
    expect(await metric(api, 'chorus_gateway_bridge_sessions')).toBe(0);
  });
});
