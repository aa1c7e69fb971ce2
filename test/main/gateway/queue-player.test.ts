/**
 * The queue played on a real engine and gateway: a listener decodes what it hears with
 * @discordjs/opus and tells the tones apart by frequency, frame by frame. Site items go through a
 * stand-in yt-dlp whose media URL lookups never answer, to show them cancelled and timed out.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SAMPLE_RATE, FRAME_SAMPLES } from '../../../src/shared/audio.js';
import type { QueueEvent, QueueState } from '../../../src/shared/queue.js';
import { channel, goertzel } from '../../helpers/audio-analysis.js';
import { client } from '../../helpers/http.js';
import { TestListener } from '../../helpers/listener.js';
import { startStack, stopStack, type Stack } from '../../helpers/stack.js';

let stack: Stack;
let api: ReturnType<typeof client>;
const listeners: TestListener[] = [];

beforeAll(async () => {
  stack = await startStack({}, {}, { CHORUS_NO_LISTENER: 'play' });
  api = client(stack.url);
});
afterEach(() => {
  for (const l of listeners.splice(0)) l.close();
});
afterAll(() => stopStack(stack));

async function listen(id: string): Promise<TestListener> {
  const l = await TestListener.connect(stack.url, id);
  listeners.push(l);
  return l;
}

function finished(l: TestListener, timeoutMs = 15_000): Promise<unknown> {
  return l.waitForEvent('state', timeoutMs, (e) => e.type === 'state' && e.state === 'finished');
}

/**
 * Which of `freqs` each received frame carries most of (by the Goertzel power of its decoded
 * audio), decoding with a fresh decoder from each index of `tracksAt`: every track has an
 * encoder of its own, and a decoder carried over a track change spends the first frame of the
 * new track on its overlap with the old one.
 */
function frameTones(l: TestListener, freqs: number[], tracksAt: number[] = []): number[] {
  const bounds = [0, ...tracksAt, l.frames.length];
  const left = Float64Array.from(bounds.slice(1).flatMap((to, i) => Array.from(channel(l.decode(bounds[i]!, to)))));
  const out: number[] = [];
  for (let i = 0; i < l.frames.length; i++) {
    const frame = left.subarray(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES);
    const powers = freqs.map((f) => goertzel(frame, SAMPLE_RATE, f));
    out.push(freqs[powers.indexOf(Math.max(...powers))]!);
  }
  return out;
}

/** Runs of equal values: [[value, count], …]. */
function runs(values: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const v of values) {
    const last = out[out.length - 1];
    if (last && last[0] === v) last[1]++;
    else out.push([v, 1]);
  }
  return out;
}

function timestampBreaks(l: TestListener): number[] {
  const out: number[] = [];
  for (let i = 1; i < l.frames.length; i++) {
    if (l.frames[i]!.timestamp !== ((l.frames[i - 1]!.timestamp + FRAME_SAMPLES) >>> 0)) out.push(i);
  }
  return out;
}

describe('gapless', () => {
  it('follows the last frame of one track with the first of the next: no frame missing, none added, seq and timestamp continuous', async () => {
    const l = await listen('gapless');
    const added = await api('POST', '/sessions/gapless/queue', { tracks: ['tone:440?seconds=1', 'tone:880?seconds=1'] });
    expect(added.status).toBe(200);
    await finished(l);
    // Two 1 s tones are 50 + 50 frames of 20 ms.
    expect(l.frames.length).toBe(100);
    expect(l.seqBreaks()).toEqual([]);
    expect(timestampBreaks(l)).toEqual([]);
    // Packet 50 is the second track's first: its own decoder hears 880 Hz in it, and 440 Hz in
    // every packet before it.
    expect(runs(frameTones(l, [440, 880], [50]))).toEqual([
      [440, 50],
      [880, 50],
    ]);
    // One decoder over the whole stream, as a listener has: the change is within that one frame.
    expect(runs(frameTones(l, [440, 880])).map(([f, n]) => [f, Math.abs(n - 50) <= 1])).toEqual([
      [440, true],
      [880, true],
    ]);
    // The session played on through the change: no end, no buffering between the tracks.
    const states = l.events.flatMap((e) => (e.type === 'state' ? [e.state] : []));
    expect(states.slice(states.indexOf('playing'))).toEqual(['playing', 'finished']);
    // One underrun would be a gap the listener hears: there is none.
    const summary = (await api('GET', '/sessions/gapless')).json.session;
    expect(summary.underruns).toBe(0);
    // The listeners heard the change: the queue advanced to the second item, with its ready.
    const changes = l.events.filter((e): e is QueueEvent => e.type === 'queue').map((e) => [e.change, e.queue.index]);
    expect(changes).toContainEqual(['advance', 1]);
    expect(l.events.filter((e) => e.type === 'ready')).toHaveLength(2);
  });
});

describe('queue operations', () => {
  it('answers every operation with the queue and tells the listeners each change', async () => {
    const l = await listen('ops');
    const q = (op: string, body?: unknown) => api('POST', `/sessions/ops/queue/${op}`, body);
    const titlesOf = (state: QueueState) => state.items.map((i) => i.title);

    const added = await q('add', { tracks: ['tone:300?seconds=60', 'tone:400?seconds=60', 'tone:500?seconds=60'] });
    expect(added.status).toBe(200);
    expect(titlesOf(added.json.queue)).toEqual(['Tone 300 Hz', 'Tone 400 Hz', 'Tone 500 Hz']);
    expect(added.json.queue.items[0]).toMatchObject({ url: 'tone:300?seconds=60', author: 'chorus', durationMs: 60_000, source: 'tone', format: 'opus' });
    // Nothing played: the first added item starts.
    await l.waitForEvent('ready');
    let got = await api('GET', '/sessions/ops/queue');
    expect(got.json.nowPlaying).toMatchObject({ index: 0, item: { title: 'Tone 300 Hz' } });
    const sessions = (await api('GET', '/sessions')).json.sessions;
    expect(sessions.find((s: { id: string }) => s.id === 'ops')).toMatchObject({ title: 'Tone 300 Hz', author: 'chorus' });

    expect((await q('move', { from: 2, to: 1 })).json.queue.items.map((i: { title: string }) => i.title)).toEqual(['Tone 300 Hz', 'Tone 500 Hz', 'Tone 400 Hz']);
    expect((await q('next')).json.queue.index).toBe(1);
    await l.until(() => l.events.filter((e) => e.type === 'ready').length >= 2, 10_000, 'a second ready');
    got = await api('GET', '/sessions/ops/queue');
    expect(got.json.nowPlaying.item.title).toBe('Tone 500 Hz');
    expect((await q('previous')).json.queue.index).toBe(0);
    expect((await q('jump', { index: 2 })).json.queue.index).toBe(2);
    expect((await q('repeat', { mode: 'queue' })).json.queue.repeat).toBe('queue');
    expect((await q('next')).json.queue.index).toBe(0); // wraps under repeat queue
    const removed = await q('remove', { index: 1 });
    expect(titlesOf(removed.json.queue)).toEqual(['Tone 300 Hz', 'Tone 400 Hz']);
    expect((await q('shuffle')).status).toBe(200);
    const cleared = await api('DELETE', '/sessions/ops/queue');
    expect(cleared.json.queue).toMatchObject({ index: 0, items: [{ title: 'Tone 300 Hz' }] });

    // Every change reached the listener, in order, each with the queue after it.
    await l.until(() => l.events.some((e) => e.type === 'queue' && e.change === 'clear'), 5000, 'the clear event');
    const changes = l.events.flatMap((e) => (e.type === 'queue' ? [e.change] : []));
    expect(changes).toEqual(['add', 'jump', 'move', 'next', 'previous', 'jump', 'repeat', 'next', 'remove', 'shuffle', 'clear']);
    const last = l.events.filter((e): e is QueueEvent => e.type === 'queue').pop()!;
    expect(last.queue).toEqual(cleared.json.queue);
    // What plays is what the queue says: the session's track is the item at the index.
    got = await api('GET', '/sessions/ops/queue');
    expect(got.json.nowPlaying).toMatchObject({ index: 0, item: { title: 'Tone 300 Hz' } });
    await api('POST', '/sessions/ops/stop');
  });

  it('takes the same operations over the WebSocket', async () => {
    const l = await listen('ws-queue');
    l.ws.send(JSON.stringify({ action: 'queue', op: 'add', tracks: ['tone:600?seconds=30', 'tone:700?seconds=30'] }));
    await l.waitForEvent('queue', 5000, (e) => e.type === 'queue' && e.change === 'jump');
    l.ws.send(JSON.stringify({ action: 'queue', op: 'jump', index: 1 }));
    const jumped = await l.waitForEvent('queue', 5000, (e) => e.type === 'queue' && e.change === 'jump' && e.queue.index === 1);
    expect(jumped.type === 'queue' && jumped.queue.items.length).toBe(2);
    l.ws.send(JSON.stringify({ action: 'queue', op: 'jump', index: 7 }));
    l.ws.send(JSON.stringify({ action: 'queue', op: 'dance' }));
    await l.until(() => l.events.filter((e) => e.type === 'error').length >= 2, 5000, 'two errors');
    const errors = l.events.flatMap((e) => (e.type === 'error' ? [e.message] : [])).sort();
    expect(errors[0]).toMatch(/index 7 is out of range/);
    expect(errors[1]).toMatch(/unknown queue op/);
    await api('POST', '/sessions/ws-queue/stop');
  });

  it('refuses bad requests with a JSON reason, and harms nothing', async () => {
    const q = (op: string, body?: unknown) => api('POST', `/sessions/bad/queue/${op}`, body);
    expect((await api('GET', '/sessions/nobody/queue')).status).toBe(404);
    expect((await q('next')).status).toBe(404);
    const cases: [string, unknown, number, RegExp][] = [
      ['add', {}, 400, /tracks/],
      ['add', { tracks: [] }, 400, /non-empty/],
      ['add', { tracks: [42] }, 400, /non-empty string/],
      ['add', { tracks: Array(101).fill('tone:440') }, 400, /at most 100/],
      ['add', { tracks: ['tone:99999'] }, 400, /bad tone/],
      ['add', { tracks: ['no-such-file.mp3'] }, 404, /nothing found/],
      ['add', { tracks: ['ftp://example.com/a.mp3'] }, 404, /nothing found/],
      ['add', { tracks: ['tone:440'], format: 'pcm' }, 400, /format/],
      ['add', '{not json', 400, /not valid JSON/],
      ['fly', {}, 404, /unknown queue op/],
    ];
    for (const [op, body, status, reason] of cases) {
      const r = await q(op, body);
      expect([op, r.status]).toEqual([op, status]);
      expect(r.json.error).toMatch(reason);
    }
    expect((await q('add', { tracks: ['tone:440?seconds=30'] })).status).toBe(200);
    const more: [string, unknown, number, RegExp][] = [
      ['jump', { index: 3 }, 400, /out of range/],
      ['jump', { index: -1 }, 400, /index/],
      ['remove', {}, 400, /index/],
      ['move', { from: 0 }, 400, /"from" and "to"/],
      ['repeat', { mode: 'sometimes' }, 400, /off", "track" or "queue"/],
      ['next', {}, 409, /no next item/],
      ['previous', {}, 409, /no previous item/],
    ];
    for (const [op, body, status, reason] of more) {
      const r = await q(op, body);
      expect([op, r.status]).toEqual([op, status]);
      expect(r.json.error).toMatch(reason);
    }
    expect((await api('PUT', '/sessions/bad/queue')).status).toBe(405);
    expect((await api('GET', '/sessions/bad/queue')).json.queue.items).toHaveLength(1);
    await api('POST', '/sessions/bad/stop');
  });
});

describe('repeat and cut-over', () => {
  it('repeats a track gaplessly under repeat track', async () => {
    const l = await listen('loop');
    await api('POST', '/sessions/loop/queue/add', { tracks: ['tone:523?seconds=1'] });
    await api('POST', '/sessions/loop/queue/repeat', { mode: 'track' });
    await l.until(() => l.frames.length >= 120, 10_000, '120 frames');
    await api('POST', '/sessions/loop/queue/repeat', { mode: 'off' });
    await finished(l);
    expect(l.seqBreaks()).toEqual([]);
    expect(timestampBreaks(l)).toEqual([]);
    // Whole repeats of 50 frames each, and nothing between them.
    expect(l.frames.length % 50).toBe(0);
    expect(l.frames.length).toBeGreaterThanOrEqual(150);
    expect((await api('GET', '/sessions/loop')).json.session.underruns).toBe(0);
  });

  it('cuts over to the next item at once on next, the stream going on', async () => {
    const l = await listen('cut');
    await api('POST', '/sessions/cut/queue/add', { tracks: ['tone:440?seconds=30', 'tone:880?seconds=1'] });
    await l.waitForFrames(25);
    const before = l.frames.length;
    await api('POST', '/sessions/cut/queue/next');
    await finished(l);
    expect(l.seqBreaks()).toEqual([]);
    // 30 s of the first was cut short after about half a second; the second played whole.
    const tones = runs(frameTones(l, [440, 880]));
    expect(tones.map(([f]) => f)).toEqual([440, 880]);
    expect(tones[1]![1]).toBeGreaterThanOrEqual(49);
    expect(tones[0]![1]).toBeLessThan(before + 60);
  });
});

describe('next racing the end of an item', () => {
  it('never plays an item twice nor skips one it should not, wherever next falls', async () => {
    const freqs = [400, 800, 1200];
    // next lands from well before the first item's end to after it, in 40 ms steps.
    for (let i = 0; i < 10; i++) {
      const id = `race-${i}`;
      const l = await listen(id);
      await api('POST', `/sessions/${id}/queue/add`, { tracks: ['tone:400?seconds=0.6', 'tone:800?seconds=0.6', 'tone:1200?seconds=0.6'] });
      await l.waitForFrames(1);
      await new Promise((r) => setTimeout(r, 400 + i * 40));
      const next = await api('POST', `/sessions/${id}/queue/next`);
      // Settled: the last item heard to its end.
      await l.until(() => {
        const queue = l.events.filter((e): e is QueueEvent => e.type === 'queue').pop();
        const state = l.events.filter((e) => e.type === 'state').pop();
        return queue?.queue.index === 2 && state?.type === 'state' && state.state === 'finished';
      }, 15_000, 'the queue to play out');
      const order = runs(frameTones(l, freqs)).filter(([, n]) => n > 1).map(([f]) => f);
      // 400 then 800 then 1200 (next cut into 400 or into 800): each once, in order, 1200 last and whole.
      expect([400, 800, 1200].filter((f) => order.includes(f))).toEqual(order);
      expect(order[0]).toBe(400);
      expect(order[order.length - 1]).toBe(1200);
      // Seq only grows; a cut may skip the one frame the worker had sent of the item cut off.
      expect(l.seqBreaks().filter((b) => b.to - b.from !== 2)).toEqual([]);
      expect(l.seqBreaks().length).toBeLessThanOrEqual(1);
      const tail = runs(frameTones(l, freqs)).pop()!;
      expect(tail[0]).toBe(1200);
      expect(tail[1]).toBeGreaterThanOrEqual(29);
      // The queue ends on the item that played last.
      const state = (await api('GET', `/sessions/${id}/queue`)).json.queue as QueueState;
      expect([next.status, state.index]).toEqual([200, 2]);
      l.close();
    }
  }, 120_000);
});

/**
 * A yt-dlp stand-in: a search (`ytsearch:<name>`) finds one YouTube video named by the query; a
 * search for `hang…`, and every media URL lookup, writes the process's pid to
 * FAKE_YTDLP_DIR/<name>.pid and never answers.
 */
const FAKE_YTDLP = `#!/usr/bin/env node
const fs = require('node:fs');
const path = require('node:path');
const args = process.argv.slice(2);
const target = args[args.length - 1];
const hang = (name) => {
  fs.writeFileSync(path.join(process.env.FAKE_YTDLP_DIR, name + '.pid'), String(process.pid));
  setTimeout(() => {}, 600000);
};
if (args.includes('--dump-single-json')) {
  const name = target.replace(/^ytsearch10:/, '');
  if (name.startsWith('hang')) hang(name);
  else process.stdout.write(JSON.stringify({ _type: 'playlist', id: target, title: target, entries: [
    { _type: 'url', ie_key: 'Youtube', id: name, title: 'Song ' + name, url: 'https://www.youtube.com/watch?v=' + name, duration: 60, channel: 'Fake' },
  ] }));
} else hang(new URL(target).searchParams.get('v'));
`;
/** Long enough that a test acts on a lookup well before it; short enough to wait for once. */
const LOOKUP_TIMEOUT_MS = 4000;

describe('yt-dlp lookups of the queue', () => {
  let yt: Stack;
  let ytApi: ReturnType<typeof client>;
  let pids: string;

  beforeAll(async () => {
    pids = fs.mkdtempSync(path.join(stack.dir, 'ytdlp-'));
    const fake = path.join(pids, 'yt-dlp');
    fs.writeFileSync(fake, FAKE_YTDLP, { mode: 0o755 });
    yt = await startStack({}, {}, { CHORUS_NO_LISTENER: 'play', CHORUS_YTDLP: fake, CHORUS_YTDLP_TIMEOUT_MS: String(LOOKUP_TIMEOUT_MS), FAKE_YTDLP_DIR: pids });
    ytApi = client(yt.url);
  }, 60_000);
  afterAll(() => stopStack(yt));

  async function ytListen(id: string): Promise<TestListener> {
    const l = await TestListener.connect(yt.url, id);
    listeners.push(l);
    return l;
  }

  /** The pid of the stand-in's run for `name`, once it has started. */
  async function lookupPid(name: string): Promise<number> {
    const file = path.join(pids, `${name}.pid`);
    const deadline = performance.now() + 15_000;
    while (!fs.existsSync(file) || fs.readFileSync(file, 'utf8') === '') {
      if (performance.now() > deadline) throw new Error(`yt-dlp was never run for ${name}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return Number(fs.readFileSync(file, 'utf8'));
  }

  function alive(pid: number): boolean {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  }

  async function killed(pid: number): Promise<void> {
    const deadline = performance.now() + 10_000;
    while (alive(pid)) {
      if (performance.now() > deadline) throw new Error(`yt-dlp run ${pid} was not killed`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  const failures = (l: TestListener) => l.events.filter((e) => e.type === 'error' || (e.type === 'queue' && e.change === 'failed'));

  it('a stop during a media URL lookup kills it; nothing plays and no error is told', async () => {
    const l = await ytListen('yt-stop');
    const adding = ytApi('POST', '/sessions/yt-stop/queue', { tracks: ['ytsearch:stop1'] });
    const pid = await lookupPid('stop1');
    expect(alive(pid)).toBe(true);
    expect((await ytApi('POST', '/sessions/yt-stop/stop')).status).toBe(200);
    await killed(pid);
    const added = await adding;
    expect(added.status).toBe(200);
    expect(added.json.queue.items.map((i: { title: string }) => i.title)).toEqual(['Song stop1']);
    // Anything told of the cancel would have been sent before the add's answer; a round trip more.
    await new Promise((r) => setTimeout(r, 300));
    expect(failures(l)).toEqual([]);
    expect(l.events.filter((e) => e.type === 'ready')).toEqual([]);
    expect((await ytApi('GET', '/sessions/yt-stop')).json.session.state).not.toMatch(/playing|starting/);
  });

  it('a lookup over CHORUS_YTDLP_TIMEOUT_MS is killed: one failed event names the item, and the next item plays', async () => {
    const l = await ytListen('yt-timeout');
    const added = await ytApi('POST', '/sessions/yt-timeout/queue', { tracks: ['ytsearch:slow1', 'tone:660?seconds=1'] });
    expect(added.status).toBe(200);
    const pid = await lookupPid('slow1');
    await finished(l, LOOKUP_TIMEOUT_MS + 15_000);
    await killed(pid);
    const told = failures(l) as QueueEvent[];
    expect(told).toHaveLength(1);
    const slowId = told[0]!.queue.items[0]!.id;
    expect(told[0]).toMatchObject({ type: 'queue', change: 'failed', item: slowId });
    expect(told[0]!.reason).toMatch(new RegExp(`item ${slowId} \\("Song slow1"\\).*took more than ${LOOKUP_TIMEOUT_MS / 1000} s`));
    // The item after it played, whole.
    expect(l.events.filter((e) => e.type === 'ready')).toHaveLength(1);
    expect(runs(frameTones(l, [660, 880])).map(([f]) => f)).toEqual([660]);
    expect(l.frames.length).toBe(50);
    expect((await ytApi('GET', '/sessions/yt-timeout/queue')).json.queue.index).toBe(1);
  }, 40_000);

  it('a next during a lookup cancels it and plays the next item', async () => {
    const l = await ytListen('yt-next');
    const adding = ytApi('POST', '/sessions/yt-next/queue', { tracks: ['ytsearch:next1', 'tone:880?seconds=1'] });
    const pid = await lookupPid('next1');
    const next = await ytApi('POST', '/sessions/yt-next/queue/next');
    expect([next.status, next.json.queue.index]).toEqual([200, 1]);
    await killed(pid);
    expect((await adding).status).toBe(200);
    await finished(l);
    expect(runs(frameTones(l, [660, 880])).map(([f]) => f)).toEqual([880]);
    expect(l.frames.length).toBe(50);
    expect(failures(l)).toEqual([]);
  }, 30_000);

  it('an add whose client goes away kills its lookup and adds nothing', async () => {
    const l = await ytListen('yt-gone');
    const client = new AbortController();
    const adding = fetch(`${yt.url}/sessions/yt-gone/queue`, { method: 'POST', body: JSON.stringify({ tracks: ['tone:440?seconds=1', 'ytsearch:hang1'] }), signal: client.signal }).catch(() => undefined);
    const pid = await lookupPid('hang1');
    client.abort();
    await adding;
    await killed(pid);
    const queue = await ytApi('GET', '/sessions/yt-gone/queue');
    // The queue was made for the add, which added nothing.
    expect([queue.status, queue.json.queue?.items]).toEqual([200, []]);
    expect(failures(l)).toEqual([]);
  });

  it('removing the one item playing stops the session, but an add under way goes on', async () => {
    const l = await ytListen('yt-self-stop');
    expect((await ytApi('POST', '/sessions/yt-self-stop/queue', { tracks: ['tone:440?seconds=30'] })).status).toBe(200);
    await l.waitForEvent('ready');
    const adding = ytApi('POST', '/sessions/yt-self-stop/queue', { tracks: ['ytsearch:hang3'] });
    const pid = await lookupPid('hang3');
    const removed = await ytApi('POST', '/sessions/yt-self-stop/queue/remove', { index: 0 });
    expect(removed.status).toBe(200);
    await l.until(() => l.events.some((e) => e.type === 'state' && e.state === 'stopped'), 10_000, 'the session stopped');
    // The queue's own stop is not a user's: the add asked for before it is still being looked up.
    await new Promise((r) => setTimeout(r, 500));
    expect(alive(pid)).toBe(true);
    expect((await ytApi('POST', '/sessions/yt-self-stop/stop')).status).toBe(200);
    await killed(pid);
    expect((await adding).status).toBe(409);
  });

  it('a stop during an add\'s lookup kills it; the add answers that it was cancelled', async () => {
    const adding = ytApi('POST', '/sessions/yt-stop-add/queue', { tracks: ['ytsearch:hang2'] });
    const pid = await lookupPid('hang2');
    expect((await ytApi('POST', '/sessions/yt-stop-add/stop')).status).toBe(200);
    await killed(pid);
    const added = await adding;
    expect([added.status, added.json.error]).toEqual([409, expect.stringMatching(/cancelled/)]);
  });
});
