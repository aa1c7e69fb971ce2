/**
 * The gateway in front of natashi's engine (the stand-in in test/helpers/natashi-engine.ts:
 * real ffmpeg making Ogg Opus, cut into 4096-byte reads, unescaped events, `status` not
 * `state`, no `hello`, the newest socket client takes everything). Listeners decode what they
 * hear with @discordjs/opus.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SessionsResponse, SessionSummary } from '../../../src/shared/gateway-api.js';
import { startChorus, tempDir, type ChorusProcess } from '../../helpers/chorus-process.js';
import { waitForHealth } from '../../helpers/http.js';
import { TestListener } from '../../helpers/listener.js';
import { startNatashiEngine, type NatashiEngine } from '../../helpers/natashi-engine.js';

const READY_TIMEOUT_MS = 2000;
const STALL_MS = 1500;

let natashi: NatashiEngine;
let gateway: ChorusProcess;
const listeners: TestListener[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function listen(id: string): Promise<TestListener> {
  const l = await TestListener.connect(gateway.httpUrl, id);
  listeners.push(l);
  return l;
}

async function play(id: string, url: string, format: 'opus' | 'web' = 'opus'): Promise<number> {
  const res = await fetch(`${gateway.httpUrl}/sessions/${encodeURIComponent(id)}/play`, { method: 'POST', body: JSON.stringify({ url, format }) });
  await res.text();
  return res.status;
}

async function summary(id: string): Promise<SessionSummary | undefined> {
  const body = (await (await fetch(`${gateway.httpUrl}/sessions`)).json()) as SessionsResponse;
  return body.sessions.find((s) => s.id === id);
}

async function health(): Promise<Record<string, unknown>> {
  return (await (await fetch(`${gateway.httpUrl}/health`)).json()) as Record<string, unknown>;
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${gateway.httpUrl}/metrics`)).text();
  const m = new RegExp(`^${name} (\\d+)$`, 'm').exec(text);
  if (!m) throw new Error(`no metric ${name}`);
  return Number(m[1]);
}

async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

beforeAll(async () => {
  natashi = await startNatashiEngine();
  gateway = await startChorus('gateway', {
    CHORUS_PORT: '0',
    CHORUS_SOCKET: natashi.socketPath,
    CHORUS_ENGINE_URL: natashi.url,
    CHORUS_RECONNECT_MAX_MS: '200',
    CHORUS_READY_TIMEOUT_MS: String(READY_TIMEOUT_MS),
    CHORUS_ENGINE_STALL_MS: String(STALL_MS),
  });
  await waitForHealth(gateway.httpUrl, 'the gateway to connect', (h) => h.engine_connected === true);
});
afterEach(() => {
  for (const l of listeners.splice(0)) l.close();
});
afterAll(async () => {
  await Promise.allSettled([gateway?.stop(), natashi?.stop()]);
});

describe('gateway in front of natashi', () => {
  it('listeners get real Opus from the Ogg stream: the right tone per session, every frame in order', async () => {
    const tones = { 'nat-440': { hz: 440, format: 'opus' }, 'nat-660': { hz: 660, format: 'web' } } as const;
    const ls = await Promise.all(Object.keys(tones).map(listen));
    for (const [id, t] of Object.entries(tones)) expect(await play(id, `tone:${t.hz}?seconds=3`, t.format)).toBe(200);
    await Promise.all(ls.map((l) => l.waitForFrames(100, 10_000)));
    for (const [i, t] of Object.values(tones).entries()) {
      const l = ls[i]!;
      expect(l.seqBreaks()).toEqual([]);
      // Every frame is one Opus packet of 20 ms: 3840 bytes of PCM each, no header page among them.
      expect(l.decode().length).toBe(l.frames.length * 3840);
      expect(Math.abs(l.heardFrequency() - t.hz)).toBeLessThanOrEqual(2);
    }
    expect(await metric('chorus_gateway_frames_oversize_total')).toBe(0);
  });

  it('a payload larger than an Opus packet is refused at the demux, counted and logged once; the worker lives on', async () => {
    const l = await listen('nat-big');
    expect(await play('nat-big', 'silent:')).toBe(200);
    await l.waitForEvent('ready');
    for (let i = 0; i < 5; i++) natashi.inject('nat-big', new Uint8Array(4096).fill(0x55));
    for (let i = 0; i < 20; i++) natashi.inject('nat-big', new Uint8Array(100).fill(i));
    await l.waitForFrames(20, 5000);
    expect(l.frames.map((f) => f.payload[0])).toEqual([...Array(20).keys()]);
    expect((await summary('nat-big'))?.state).not.toBe('error');
    expect(l.events.some((e) => e.type === 'error')).toBe(false);
    // The first test saw none: these five are all.
    expect(await metric('chorus_gateway_frames_oversize_total')).toBe(5);
    expect(gateway.logs.filter((line) => /larger than an Opus packet/.test(line) && line.includes('nat-big'))).toHaveLength(1);
  });

  it('an event natashi could not escape is skipped and counted; the play ends in error after the ready timeout', async () => {
    const bystander = await listen('nat-by');
    expect(await play('nat-by', 'tone:330?seconds=10')).toBe(200);
    await bystander.waitForFrames(10, 5000);
    const badBefore = await metric('chorus_gateway_bad_events_total');
    const reconnectsBefore = await metric('chorus_gateway_engine_reconnects_total');

    const l = await listen('nat-quote');
    const started = Date.now();
    expect(await play('nat-quote', 'https://example.invalid/"quoted"')).toBe(200);
    const error = await l.waitForEvent('error', READY_TIMEOUT_MS + 3000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(READY_TIMEOUT_MS - 100);
    expect(JSON.stringify(error)).toMatch(/no ready/);
    expect((await summary('nat-quote'))?.state).toBe('error');
    expect(await metric('chorus_gateway_bad_events_total')).toBeGreaterThan(badBefore);
    // One bad line is not a broken connection: the bystander plays on.
    expect(await metric('chorus_gateway_engine_reconnects_total')).toBe(reconnectsBefore);
    const heard = bystander.frames.length;
    await bystander.waitForFrames(heard + 20, 3000);
    expect(bystander.seqBreaks()).toEqual([]);
  });

  it('a play while the engine socket is down answers 200, then ends in error within the ready timeout', async () => {
    await natashi.closeSocket();
    try {
      await until('the gateway to see the engine gone', async () => (await health()).engine_connected === false, 5000);
      const l = await listen('nat-down');
      expect(await play('nat-down', 'tone:440?seconds=5')).toBe(200);
      const error = await l.waitForEvent('error', READY_TIMEOUT_MS + 3000);
      expect(JSON.stringify(error)).toMatch(/not connected/);
      expect((await summary('nat-down'))?.state).toBe('error');
    } finally {
      await natashi.openSocket();
      await until('the gateway to reconnect', async () => (await health()).engine_connected === true, 5000);
    }
  });

  it("after a reconnect natashi's `status` decides: a stopped track ends, a streaming one plays on", async () => {
    const [ended, going] = [await listen('nat-ends'), await listen('nat-goes')];
    expect(await play('nat-ends', 'tone:440?seconds=2')).toBe(200);
    expect(await play('nat-goes', 'tone:660?seconds=30')).toBe(200);
    await Promise.all([ended.waitForFrames(10, 5000), going.waitForFrames(10, 5000)]);
    await natashi.closeSocket();
    // nat-ends finishes inside natashi while nobody is connected: its `finished` is lost.
    await sleep(2500);
    await natashi.openSocket();
    await until('the gateway to reconnect', async () => (await health()).engine_connected === true, 5000);
    await until('nat-ends to end', async () => !['starting', 'buffering', 'playing'].includes((await summary('nat-ends'))?.state ?? ''), 8000);
    const heard = going.frames.length;
    await going.waitForFrames(heard + 25, 5000);
    expect((await summary('nat-goes'))?.state).toBe('playing');
    expect(Math.abs(going.heardFrequency() - 660)).toBeLessThanOrEqual(2);
  });

  it('a second client taking natashi\'s socket starves every session: /health says engine_starved', async () => {
    const l = await listen('nat-starve');
    expect(await play('nat-starve', 'tone:550?seconds=30')).toBe(200);
    await l.waitForFrames(10, 5000);
    expect(await health()).toMatchObject({ engine_connected: true, engine_starved: false });
    const thief = net.connect(natashi.socketPath);
    thief.resume();
    try {
      await until('engineStarved', async () => (await health()).engine_starved === true, STALL_MS + 4000);
      expect(await health()).toMatchObject({ engine_connected: true, engine_starved: true });
      expect((await fetch(`${gateway.httpUrl}/health`)).status).toBe(503);
      expect(await metric('chorus_gateway_engine_starved')).toBe(1);
      expect(gateway.logs.some((line) => /sending nothing while sessions play/.test(line))).toBe(true);
    } finally {
      thief.destroy();
    }
  });
});

describe('gateway in front of a chorus engine speaking natashi (CHORUS_ENGINE_DIALECT=natashi)', () => {
  it('tells the Ogg stream from its first payload and plays it: the right tone, every frame in order', async () => {
    const dir = tempDir();
    const socket = path.join(dir, 'engine.sock');
    const engine = await startChorus('engine', { CHORUS_ENGINE_PORT: '0', CHORUS_SOCKET: socket, CHORUS_MEDIA_ROOT: dir, CHORUS_ENGINE_DIALECT: 'natashi' });
    const gw = await startChorus('gateway', { CHORUS_PORT: '0', CHORUS_SOCKET: socket, CHORUS_ENGINE_URL: engine.httpUrl });
    try {
      await waitForHealth(gw.httpUrl, 'the gateway to connect', (h) => h.engine_connected === true);
      const l = await TestListener.connect(gw.httpUrl, 'ogg-chorus');
      listeners.push(l);
      const res = await fetch(`${gw.httpUrl}/sessions/ogg-chorus/play`, { method: 'POST', body: JSON.stringify({ url: 'tone:770?seconds=2', format: 'web' }) });
      expect(res.status).toBe(200);
      await l.waitForEvent('finished', 10_000);
      expect(l.frames).toHaveLength(100);
      expect(l.seqBreaks()).toEqual([]);
      expect(Math.abs(l.heardFrequency() - 770)).toBeLessThanOrEqual(2);
      expect(gw.logs.some((line) => /engine said hello/.test(line))).toBe(false);
    } finally {
      await Promise.allSettled([gw.stop(), engine.stop()]);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
