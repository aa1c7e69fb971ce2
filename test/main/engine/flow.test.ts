/**
 * Flow through the engine: pause/resume lose and repeat nothing, credit windows are honoured to
 * the frame, a session with no gateway buffers a bounded amount while its ffmpeg waits (and
 * nothing is dropped), the gateway connection is replaced and dropped as the protocol says, and
 * an idle session is stopped and says so.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { resolveFfmpeg } from '../../../src/shared/ffmpeg.js';
import { channel, maxStep, peak, sineMaxStep } from '../../helpers/audio-analysis.js';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';
import { api, decodeOpus, FakeGateway, sleep } from './fake-gateway.js';

afterEach(() => FakeGateway.closeAll());

/** What ffmpeg itself makes of a tone, padded to whole 20 ms frames: the bytes a pcm play must carry. */
function referenceTone(hz: number, seconds: number): Buffer {
  const out = spawnSync(resolveFfmpeg().path, [
    '-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', `sine=frequency=${hz}:sample_rate=48000:duration=${seconds}`,
    '-ac', '2', '-ar', '48000', '-f', 's16le', 'pipe:1',
  ], { maxBuffer: 64 * 1024 * 1024 });
  const pcm = out.stdout;
  const padded = Buffer.alloc(Math.ceil(pcm.length / 3840) * 3840);
  pcm.copy(padded);
  return padded;
}

/** utime + stime of a process, in clock ticks. */
function cpuTicks(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

describe('engine flow', () => {
  let engine: EngineFixture;
  beforeAll(async () => {
    engine = await startEngineFixture();
  });
  afterAll(async () => {
    await engine?.stop();
  });

  it('pause stops the flow at once and resume continues at the exact next frame (pcm, byte for byte)', async () => {
    const gw = await FakeGateway.connect(engine.socketPath);
    await api(engine.url, 'POST', '/session/pr/play', { url: 'tone:440?seconds=2', format: 'pcm' });
    const log = gw.log('pr');
    await gw.waitFor(() => log.frames.length >= 30, 5000, '30 frames');
    const paused = await api(engine.url, 'POST', '/session/pr/pause');
    expect(paused.body.state).toBe('paused');
    const pausedAt = performance.now();
    await sleep(600);
    const duringPause = log.frames.filter((f) => f.at > pausedAt + 5).length;
    expect(duringPause).toBe(0);
    expect((await api(engine.url, 'GET', '/session/pr/status')).body).toMatchObject({ state: 'paused', ffmpeg_pid: expect.any(Number) });
    expect((await api(engine.url, 'POST', '/session/pr/resume')).body.state).toBe('streaming');
    await gw.waitForEvent('pr', 'finished', 5000);

    const received = Buffer.concat(log.frames.map((f) => f.payload!));
    expect(log.frames.length).toBe(100);
    expect(received.equals(referenceTone(440, 2))).toBe(true);
    await gw.close();
  });

  it('pause holds an Opus session even with credit to spare, and resume gives every frame once with no click', async () => {
    const gw = await FakeGateway.connect(engine.socketPath);
    gw.credit('nobody', 1);
    await api(engine.url, 'POST', '/session/po/play', { url: 'tone:440?seconds=2' });
    await gw.waitForEvent('po', 'ready');
    gw.credit('po', 30);
    const log = gw.log('po');
    await gw.waitFor(() => log.frames.length === 30, 5000, '30 frames');
    await api(engine.url, 'POST', '/session/po/pause');
    gw.credit('po', 1000);
    await sleep(300);
    expect(log.frames.length).toBe(30);
    await api(engine.url, 'POST', '/session/po/resume');
    await gw.waitForEvent('po', 'finished', 5000);
    expect(log.frames.length).toBe(100);
    const audio = channel(decodeOpus(log.frames.map((f) => f.payload!))).subarray(960, 98 * 960);
    expect(maxStep(audio)).toBeLessThan(sineMaxStep(peak(audio), 440) * 1.2 + 40);
    await gw.close();
  });

  it('honours credit windows exactly, additive per session, and a new play starts from 0', async () => {
    const gw = await FakeGateway.connect(engine.socketPath);
    gw.credit('nobody', 1); // any credit line switches this connection to credit mode
    await api(engine.url, 'POST', '/session/cw/play', { url: 'tone:440?seconds=10' });
    await gw.waitForEvent('cw', 'ready');
    const log = gw.log('cw');
    await sleep(200);
    expect(log.frames.length).toBe(0);
    gw.credit('cw', 7);
    await gw.waitFor(() => log.frames.length >= 7, 5000, '7 frames');
    await sleep(200);
    expect(log.frames.length).toBe(7);
    gw.credit('cw', 13);
    for (let i = 0; i < 5; i++) gw.credit('cw', 1);
    await gw.waitFor(() => log.frames.length >= 25, 5000, '25 frames');
    await sleep(200);
    expect(log.frames.length).toBe(25);
    expect((await api(engine.url, 'GET', '/session/cw/status')).body).toMatchObject({ frames_sent: 25, credit: 0 });

    gw.credit('cw', 50); // left over when the play is replaced: must not carry over
    await gw.waitFor(() => log.frames.length >= 75, 5000, '75 frames');
    gw.credit('cw', 5);
    await sleep(50);
    await api(engine.url, 'POST', '/session/cw/play', { url: 'tone:550?seconds=10' });
    await gw.waitFor(() => log.events.filter((e) => e.type === 'ready').length === 2, 5000, 'second ready');
    await sleep(200);
    expect(log.framesOfPlay(2).length).toBe(0);
    gw.credit('cw', 10);
    await gw.waitFor(() => log.framesOfPlay(2).length >= 10, 5000, '10 frames of play 2');
    await sleep(200);
    expect(log.framesOfPlay(2).length).toBe(10);
    await api(engine.url, 'POST', '/session/cw/stop');
    await gw.close();
  });

  it('a second connection is refused while the first gateway is healthy; a protocol error drops the connection', async () => {
    const first = await FakeGateway.connect(engine.socketPath);
    first.credit('nobody', 1); // a gateway that speaks
    const second = await FakeGateway.ask(engine.socketPath);
    expect(second.refused).toBe('another gateway is connected and healthy');
    await second.closed;
    expect(first.socket.destroyed).toBe(false);
    expect((await api(engine.url, 'GET', '/health')).body.gateway_connected).toBe(true);

    const header = Buffer.alloc(4);
    header.writeUInt32BE(0x00ffffff); // a length far over the 64 KiB cap
    first.socket.write(header);
    await first.closed;
    const metrics = (await api(engine.url, 'GET', '/metrics')).body as string;
    expect(metrics).toMatch(/^chorus_engine_protocol_errors_total 1$/m);

    const third = await FakeGateway.connect(engine.socketPath);
    await api(engine.url, 'POST', '/session/after/play', { url: 'tone:440?seconds=0.2' });
    await third.waitForEvent('after', 'finished', 5000);
    expect(third.log('after').frames.length).toBe(10);
    await third.close();
  });
});

describe('engine flow with no gateway', () => {
  let engine: EngineFixture;
  beforeAll(async () => {
    engine = await startEngineFixture({ CHORUS_ENGINE_BUFFER_MS: '200' });
  });
  afterAll(async () => {
    await engine?.stop();
  });

  it('buffers a bounded amount while ffmpeg waits on its pipe, then delivers everything to a gateway', async () => {
    const play = await api(engine.url, 'POST', '/session/nb/play', { url: 'tone:440?seconds=20' });
    expect(play.status).toBe(200);
    const pid: number = play.body.ffmpeg_pid;
    await sleep(700);
    const before = (await api(engine.url, 'GET', '/session/nb/status')).body;
    const ticks = cpuTicks(pid);
    await sleep(500);
    const after = (await api(engine.url, 'GET', '/session/nb/status')).body;
    // 200 ms is 10 frames; one more ffmpeg read (≤ 64 KiB, 17 frames) may land on top.
    expect(before.frames_queued).toBeGreaterThanOrEqual(10);
    expect(before.frames_queued).toBeLessThanOrEqual(10 + 17);
    expect(after.frames_made).toBe(before.frames_made);
    expect(after.state).toBe('streaming');
    expect(cpuTicks(pid)).toBe(ticks); // blocked on its pipe, not spinning
    expect(fs.existsSync(`/proc/${pid}`)).toBe(true);

    const gw = await FakeGateway.connect(engine.socketPath);
    gw.credit('nb', 100_000);
    await gw.waitForEvent('nb', 'finished', 10_000);
    const log = gw.log('nb');
    expect(log.units[0]?.event?.type).toBe('ready');
    expect(log.frames.length).toBe(1000);
    await gw.close();
  });

});

describe('engine idle timeout', () => {
  let engine: EngineFixture;
  beforeAll(async () => {
    engine = await startEngineFixture({ CHORUS_IDLE_TIMEOUT_S: '1' });
  });
  afterAll(async () => {
    await engine?.stop();
  });

  it('stops a session paused longer than CHORUS_IDLE_TIMEOUT_S and says so with an error event', async () => {
    const gw = await FakeGateway.connect(engine.socketPath);
    await api(engine.url, 'POST', '/session/idle/play', { url: 'tone:440?seconds=30' });
    await gw.waitForEvent('idle', 'ready');
    await api(engine.url, 'POST', '/session/idle/pause');
    const event = await gw.waitForEvent('idle', 'error', 4000);
    expect(event).toMatchObject({ message: expect.stringMatching(/paused for 1 s.*CHORUS_IDLE_TIMEOUT_S/) });
    expect((await api(engine.url, 'GET', '/session/idle/status')).body).toMatchObject({
      state: 'stopped',
      reason: 'idle: paused for 1 s',
      ffmpeg_pid: null,
    });
    await gw.close();
  });

  it('does not time out a session whose frames are being taken', async () => {
    const gw = await FakeGateway.connect(engine.socketPath);
    await api(engine.url, 'POST', '/session/busy/play', { url: 'tone:440?seconds=2.5' });
    await gw.waitForEvent('busy', 'finished', 6000);
    expect(gw.log('busy').events.map((e) => e.type)).toEqual(['ready', 'finished']);
    await gw.close();
  });
});

describe('engine shutdown', () => {
  it('on SIGTERM stops every ffmpeg and removes its socket', async () => {
    const engine = await startEngineFixture();
    for (const id of ['x1', 'x2', 'x3']) await api(engine.url, 'POST', `/session/${id}/play`, { url: 'tone:440?seconds=60' });
    expect(engine.process.descendants().length).toBeGreaterThanOrEqual(3);
    await engine.stop(); // throws if a child process or the socket is left behind
  });
});

describe('the engine socket file', () => {
  it('is mode 0600 and is removed when the engine stops', async () => {
    const engine = await startEngineFixture();
    try {
      expect(fs.statSync(engine.socketPath).mode & 0o777).toBe(0o600);
      const probe = net.connect(engine.socketPath);
      await new Promise((resolve) => probe.once('connect', resolve));
      probe.destroy();
    } finally {
      await engine.stop(); // throws if the socket is left behind
    }
  });

  it('is removed even when SIGTERM comes the moment the engine says ready', async () => {
    // The window is the engine's: a signal before its listener is installed skips the clean-up.
    for (let i = 0; i < 5; i++) await (await startEngineFixture()).stop();
  });
});
