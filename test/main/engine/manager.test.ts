/**
 * What the session manager keeps, through the real engine: ended sessions are bounded in count
 * (CHORUS_MAX_ENDED_SESSIONS, the oldest forgotten first) and in size (a long url is cut in the
 * record and in the error); live sessions outlive a short gateway absence but not a gateway that
 * is gone (CHORUS_GATEWAY_GRACE_S).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';
import { api, FakeGateway, sleep } from './fake-gateway.js';

let engine: EngineFixture | undefined;
afterEach(async () => {
  await engine?.stop();
  engine = undefined;
});

async function waitForState(url: string, id: string, state: string, timeoutMs: number): Promise<any> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const status = (await api(url, 'GET', `/session/${id}/status`)).body;
    if (status.state === state) return status;
    if (performance.now() > deadline) throw new Error(`session ${id} is ${status.state}, not ${state}, after ${timeoutMs} ms`);
    await sleep(100);
  }
}

describe('ended sessions', () => {
  it('keeps at most CHORUS_MAX_ENDED_SESSIONS, the newest, each with a cut url', async () => {
    engine = await startEngineFixture({ CHORUS_MAX_ENDED_SESSIONS: '50' });
    const longUrl = `http://[${'x'.repeat(30_000)}`;
    for (let i = 0; i < 120; i++) {
      const res = await api(engine.url, 'POST', `/session/r${i}/play`, { url: longUrl });
      expect(res.status).toBe(400);
      expect(res.body.error.length).toBeLessThan(500);
    }
    const metrics = (await api(engine.url, 'GET', '/metrics')).body as string;
    expect(Number(/^chorus_engine_sessions\{state="error"\} (\d+)$/m.exec(metrics)![1])).toBe(50);
    expect((await api(engine.url, 'GET', '/session/r0/status')).status).toBe(404);
    expect((await api(engine.url, 'GET', '/session/r69/status')).status).toBe(404);
    const newest = (await api(engine.url, 'GET', '/session/r119/status')).body;
    expect(newest.state).toBe('error');
    expect(newest.url.length).toBeLessThan(1200);
    expect(newest.url).toMatch(/… \[cut: \d+ more characters\]$/);
    expect(newest.message.length).toBeLessThan(500);
    // A live session is never forgotten for room.
    expect((await api(engine.url, 'POST', '/session/live/play', { url: 'tone:440?seconds=30' })).status).toBe(200);
    for (let i = 0; i < 60; i++) await api(engine.url, 'POST', `/session/s${i}/play`, { url: longUrl });
    expect((await api(engine.url, 'GET', '/session/live/status')).body.state).toMatch(/starting|streaming/);
  });
});

describe('gateway grace', () => {
  it('stops the sessions of a gateway that is gone, and frees their slots for the next one', async () => {
    engine = await startEngineFixture({ CHORUS_GATEWAY_GRACE_S: '1', CHORUS_MAX_SESSIONS: '2' });
    const gw = await FakeGateway.connect(engine.socketPath);
    for (const id of ['a', 'b']) expect((await api(engine.url, 'POST', `/session/${id}/play`, { url: 'tone:440?seconds=60' })).status).toBe(200);
    await gw.waitForEvent('a', 'ready');
    expect((await api(engine.url, 'POST', '/session/c/play', { url: 'tone:440' })).status).toBe(429);
    await gw.close();
    const stopped = await waitForState(engine.url, 'a', 'stopped', 4000);
    expect(stopped.reason).toMatch(/no gateway connected for 1 s/);
    await waitForState(engine.url, 'b', 'stopped', 1000);
    const fresh = await FakeGateway.connect(engine.socketPath);
    expect((await fresh.waitForEvent('a', 'error')).message).toMatch(/CHORUS_GATEWAY_GRACE_S/);
    expect((await api(engine.url, 'POST', '/session/c/play', { url: 'tone:440' })).status).toBe(200);
    await fresh.close();
  });

  it('keeps the sessions of a gateway that reconnects within the grace', async () => {
    engine = await startEngineFixture({ CHORUS_GATEWAY_GRACE_S: '2' });
    const gw = await FakeGateway.connect(engine.socketPath);
    expect((await api(engine.url, 'POST', '/session/stay/play', { url: 'tone:440?seconds=60' })).status).toBe(200);
    await gw.waitForEvent('stay', 'ready');
    await gw.close();
    await sleep(1000);
    const back = await FakeGateway.connect(engine.socketPath);
    await sleep(2500);
    expect((await api(engine.url, 'GET', '/session/stay/status')).body.state).toBe('streaming');
    const before = back.log('stay').frames.length;
    await back.waitFor(() => back.log('stay').frames.length > before + 10, 3000, 'frames of stay');
    await back.close();
  });
});

describe('queued plays (next)', () => {
  it('sends a queued play right after the one before: its last frame, finished, the next ready, the next first frame', async () => {
    engine = await startEngineFixture();
    const gw = await FakeGateway.connect(engine.socketPath);
    gw.credit('nobody', 1); // credit mode, so the frames go out as fast as they are granted
    await api(engine.url, 'POST', '/session/q/play', { url: 'tone:440?seconds=1' });
    const a = await api(engine.url, 'POST', '/session/q/next', { url: 'tone:660?seconds=1' });
    expect(a.status).toBe(200);
    const b = await api(engine.url, 'POST', '/session/q/next', { url: 'tone:880?seconds=1', after: a.body.play });
    expect([a.body.play, b.body.play]).toEqual([2, 3]);
    expect((await api(engine.url, 'GET', '/session/q/status')).body.next).toMatchObject({ play: 2, url: 'tone:660?seconds=1' });
    gw.credit('q', 1000);
    await gw.waitFor(() => gw.log('q').events.filter((e) => e.type === 'finished').length === 3, 10_000, 'three finished');
    const units = gw.log('q').units.map((u) => (u.kind === 'frame' ? 'f' : `${u.event!.type}${u.event!.play ?? ''}`));
    // Each play's 50 frames between its ready and its finished, and nothing between one finished and the next ready.
    const f50 = Array(50).fill('f');
    expect(units).toEqual(['ready1', ...f50, 'finished', 'ready2', ...f50, 'finished', 'ready3', ...f50, 'finished']);
    await gw.close();
  });

  it('drops a queued play on request, replaces it, and refuses what it cannot queue', async () => {
    engine = await startEngineFixture();
    await api(engine.url, 'POST', '/session/d/play', { url: 'tone:440?seconds=30' });
    expect((await api(engine.url, 'DELETE', '/session/d/next')).status).toBe(404);
    expect((await api(engine.url, 'POST', '/session/d/next', { url: 'tone:500' })).body.play).toBe(2);
    // A second next for the current play replaces the first.
    expect((await api(engine.url, 'POST', '/session/d/next', { url: 'tone:600' })).body.play).toBe(3);
    expect((await api(engine.url, 'GET', '/session/d/status')).body.next).toMatchObject({ play: 3, url: 'tone:600' });
    expect((await api(engine.url, 'POST', '/session/d/next', { url: 'tone:700', after: 9 })).status).toBe(409);
    expect((await api(engine.url, 'POST', '/session/d/next', { url: 'tone:700', after: 'x' })).status).toBe(400);
    expect((await api(engine.url, 'POST', '/session/d/next', { url: 'tone:99999' })).status).toBe(400);
    expect((await api(engine.url, 'DELETE', '/session/d/next')).status).toBe(200);
    expect((await api(engine.url, 'GET', '/session/d/status')).body.next).toBeUndefined();
    // With nothing under way, next is a play.
    await api(engine.url, 'POST', '/session/d/stop');
    const played = await api(engine.url, 'POST', '/session/d/next', { url: 'tone:440?seconds=1' });
    expect(played.body).toMatchObject({ state: 'starting' });
    expect((await api(engine.url, 'GET', '/session/d/status')).body.url).toBe('tone:440?seconds=1');
  });
});
