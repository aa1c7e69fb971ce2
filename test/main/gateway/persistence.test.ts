/**
 * Sessions across a long pause and across the loss of either process (src/main/gateway/persistence.ts,
 * store.ts, and the gateway's released tracks): a chirp, whose frequency tells the time, shows that
 * what is heard after the resume starts at the frame where the listener was, not at a clock's guess.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { SessionSummary } from '../../../src/shared/gateway-api.js';
import { resolveFfmpeg } from '../../../src/shared/ffmpeg.js';
import { SessionPersistence, type PersistentQueues } from '../../../src/main/gateway/persistence.js';
import { SessionStore, type StoredSession } from '../../../src/main/gateway/store.js';
import { channel, chirpExpression, chirpTime, type Chirp } from '../../helpers/audio-analysis.js';
import { CLI, startChorus, tempDir, type ChorusProcess } from '../../helpers/chorus-process.js';
import { request } from '../../helpers/http.js';
import { TestListener } from '../../helpers/listener.js';

const CHIRP: Chirp = { f0: 200, slope: 400 };
const CHIRP_SECONDS = 8;
const FRAMES = CHIRP_SECONDS * 50;

interface Stack {
  dir: string;
  engine: ChorusProcess;
  gateway: ChorusProcess;
  engineEnv: Record<string, string>;
  gatewayEnv: Record<string, string>;
}

let stack: Stack | undefined;
const listeners: TestListener[] = [];

afterEach(async () => {
  for (const l of listeners.splice(0)) l.close();
  if (!stack) return;
  await Promise.allSettled([stack.gateway.stop(), stack.engine.stop()]);
  fs.rmSync(stack.dir, { recursive: true, force: true });
  stack = undefined;
});

async function startStack(gatewayEnv: Record<string, string> = {}): Promise<Stack> {
  const dir = tempDir('chorus-persist-');
  const made = spawnSync(resolveFfmpeg().path, [
    '-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', `aevalsrc=${chirpExpression(CHIRP)}:s=48000:d=${CHIRP_SECONDS}`,
    '-ac', '2', '-c:a', 'pcm_s16le', '-y', path.join(dir, 'chirp.wav'),
  ]);
  expect(made.status, String(made.stderr)).toBe(0);
  const socket = path.join(dir, 'engine.sock');
  const engineEnv = { CHORUS_ENGINE_PORT: '0', CHORUS_SOCKET: socket, CHORUS_MEDIA_ROOT: dir };
  const engine = await startChorus('engine', engineEnv);
  const env = {
    CHORUS_PORT: '0',
    CHORUS_SOCKET: socket,
    CHORUS_ENGINE_URL: engine.httpUrl,
    CHORUS_RECONNECT_MAX_MS: '200',
    CHORUS_MEDIA_ROOT: dir,
    CHORUS_DATA_DIR: path.join(dir, 'data'),
    ...gatewayEnv,
  };
  const gateway = await startChorus('gateway', env);
  await gateway.waitForLog(/engine said hello/);
  return { dir, engine, gateway, engineEnv, gatewayEnv: env };
}

async function listen(id: string): Promise<TestListener> {
  const l = await TestListener.connect(stack!.gateway.httpUrl, id);
  listeners.push(l);
  return l;
}

async function api(method: string, route: string, body?: unknown): Promise<Record<string, unknown>> {
  const answer = await request(`${stack!.gateway.httpUrl}${route}`, method, body);
  expect(answer.status, `${method} ${route}: ${answer.text}`).toBe(200);
  return answer.json as Record<string, unknown>;
}

async function summary(id: string): Promise<SessionSummary> {
  return (await api('GET', `/sessions/${id}`)).session as SessionSummary;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Seconds into the chirp that frames [index, index + 5) of the listener carry (decoded with a lead-in). */
function heardAt(l: TestListener, index: number): number {
  const lead = Math.min(3, index);
  const pcm = channel(l.decode(index - lead, index + 5)).subarray(lead * 960);
  return chirpTime(pcm, CHIRP);
}

/** Every stretch of the heard track sits where its frame index says: nothing repeated, nothing missing. */
function expectInPlace(l: TestListener, from: number, to: number): void {
  for (let i = Math.max(from, 5); i + 5 <= to; i += 25) {
    expect(Math.abs(heardAt(l, i) - i / 50), `frame ${i} heard at ${heardAt(l, i).toFixed(3)} s`).toBeLessThan(0.04);
  }
}

const ffmpegs = (p: ChorusProcess) => p.descendants().length;

describe('a long pause gives back the engine play and worker, and resumes at the same frame', () => {
  it('after CHORUS_PAUSE_RELEASE_S the ffmpeg is gone and the position kept; resume plays on to the track end with no frame repeated or lost', async () => {
    stack = await startStack({ CHORUS_PAUSE_RELEASE_S: '1' });
    const l = await listen('long');
    await api('POST', '/sessions/long/play', { url: 'chirp.wav' });
    await l.waitForFrames(120);
    await api('POST', '/sessions/long/pause');
    await new Promise((r) => setTimeout(r, 200));
    const heard = l.frames.length;
    expect((await summary('long')).position).toBeCloseTo(heard / 50, 6);

    // The sweep (every 5 s) releases it: the engine's play is stopped and its ffmpeg gone.
    await until('the engine play to stop', async () => {
      const status = await request(`${stack!.engine.httpUrl}/session/long/status`, 'GET');
      return (status.json as { state?: string }).state === 'stopped' ? true : undefined;
    });
    expect(ffmpegs(stack.engine)).toBe(0);
    const released = await summary('long');
    expect(released).toMatchObject({ state: 'paused', ringFrames: 0 });
    expect(released.position).toBeCloseTo(heard / 50, 6);
    expect(l.frames.length).toBe(heard);

    await api('POST', '/sessions/long/resume');
    await l.waitForEvent('finished', 20_000);
    expect(l.frames.length).toBe(FRAMES);
    expect(l.seqBreaks()).toEqual([]);
    expectInPlace(l, 0, FRAMES);
  }, 60_000);
});

describe('a queue survives kill -9 of the gateway', () => {
  it('comes back with its session, paused at its item and frame; resume plays that item on and then advances to the next', async () => {
    stack = await startStack();
    const l = await listen('queued');
    await api('POST', '/sessions/queued/queue', { tracks: ['chirp.wav', 'tone:880?seconds=1'] });
    await l.waitForFrames(100);
    await new Promise((r) => setTimeout(r, 400)); // a write behind has happened
    const before = await api('GET', '/sessions/queued/queue');

    stack.gateway.child.kill('SIGKILL');
    await new Promise((r) => stack!.gateway.child.once('exit', r));
    const heard = l.frames.length;
    stack.gateway = await startChorus('gateway', stack.gatewayEnv);
    await stack.gateway.waitForLog(/restored 1 session\(s\)/);

    // Nothing asks for the queue before the resume: the restored queue hears its session by itself.
    const again = await listen('queued');
    await api('POST', '/sessions/queued/resume');
    const advanced = (await again.waitForEvent('queue', 20_000, (e) => e.type === 'queue' && (e as { change?: string }).change === 'advance')) as { queue: { items: unknown[]; index: number } };
    expect(advanced.queue.items).toEqual((before.queue as { items: unknown[] }).items);
    expect(advanced.queue.index).toBe(1);
    await again.waitForEvent('state', 10_000, (e) => e.type === 'state' && e.state === 'finished');
    // The rest of the chirp from where it was heard (within 0.5 s), in place, then the whole one-second tone.
    const rest = again.frames.length - 50;
    expect(Math.abs(FRAMES - rest - heard)).toBeLessThan(25);
    expect(Math.abs(heardAt(again, 5) - ((FRAMES - rest) / 50 + 0.1))).toBeLessThan(0.04);
  }, 60_000);
});

describe('sessions survive kill -9', () => {
  it('of the gateway: they come back paused at their positions (within 0.5 s) and resume from there when asked', async () => {
    stack = await startStack();
    const playing = await listen('playing');
    const paused = await listen('paused');
    await api('POST', '/sessions/paused/play', { url: 'chirp.wav', gain: 0.8 });
    await paused.waitForFrames(60);
    await api('POST', '/sessions/paused/pause');
    await api('POST', '/sessions/playing/play', { url: 'chirp.wav' });
    await playing.waitForFrames(150);
    await new Promise((r) => setTimeout(r, 400)); // a write behind has happened
    const pausedAt = (await summary('paused')).position!;
    expect(pausedAt * 50).toBe(paused.frames.length);

    stack.gateway.child.kill('SIGKILL');
    await new Promise((r) => stack!.gateway.child.once('exit', r));
    const heard = playing.frames.length;
    stack.gateway = await startChorus('gateway', stack.gatewayEnv);
    await stack.gateway.waitForLog(/restored 2 session\(s\)/);

    const a = await summary('playing');
    expect(a.state).toBe('paused');
    expect(a.reason).toMatch(/gateway restarted/);
    expect(Math.abs(a.position! - heard / 50)).toBeLessThan(0.5);
    const b = await summary('paused');
    expect(b).toMatchObject({ state: 'paused', position: pausedAt });
    // The engine's plays of the old gateway are stopped: nothing runs until a resume.
    await until('the old plays to stop', async () => (ffmpegs(stack!.engine) === 0 ? true : undefined));

    const again = await listen('playing');
    await api('POST', '/sessions/playing/resume');
    await again.waitForEvent('finished', 20_000);
    expect(again.frames.length).toBe(FRAMES - Math.round(a.position! * 50));
    // What is heard first is the chirp at the stored position.
    expect(Math.abs(heardAt(again, 5) - (a.position! + 0.1))).toBeLessThan(0.04);
    expect(again.seqBreaks()).toEqual([]);

    const pausedAgain = await listen('paused');
    await api('POST', '/sessions/paused/resume');
    await pausedAgain.waitForFrames(20);
    expect(Math.abs(heardAt(pausedAgain, 5) - (pausedAt + 0.1))).toBeLessThan(0.04);
    expect((await summary('paused')).state).toBe('playing');
  }, 60_000);

  it('of the engine: the track pauses at the frame the listener reached, and resumes there to its end, nothing repeated or lost', async () => {
    stack = await startStack();
    const l = await listen('survivor');
    await api('POST', '/sessions/survivor/play', { url: 'chirp.wav' });
    await l.waitForFrames(100);
    const port = new URL(stack.engine.httpUrl).port;
    stack.engine.child.kill('SIGKILL');
    await stack.gateway.waitForLog(/engine connection lost/, 5000);
    stack.engine = await startChorus('engine', { ...stack.engineEnv, CHORUS_ENGINE_PORT: port });
    const pausedEvent = await l.waitForEvent('state', 15_000, (e) => e.type === 'state' && e.state === 'paused');
    expect((pausedEvent as { reason?: string }).reason).toMatch(/the engine restarted: paused at 0:0\d\.\d\d; resume to play on/);
    await new Promise((r) => setTimeout(r, 200));
    const heard = l.frames.length;
    expect((await summary('survivor')).position! * 50).toBe(heard);

    await api('POST', '/sessions/survivor/resume');
    await l.waitForEvent('finished', 20_000);
    expect(l.frames.length).toBe(FRAMES);
    expect(l.seqBreaks()).toEqual([]);
    expectInPlace(l, 0, FRAMES);
  }, 60_000);
});

describe('a session store that cannot be used stops the start', () => {
  it('a damaged chorus.db: `chorus gateway` exits 1 with one line naming the file and what to do, and leaves the file as it was', async () => {
    const dir = tempDir('chorus-persist-bad-');
    try {
      const file = path.join(dir, 'chorus.db');
      const garbage = Buffer.alloc(16384, 0x42);
      fs.writeFileSync(file, garbage);
      const child = spawn(process.execPath, [CLI, 'gateway'], {
        env: { ...childEnv(), CHORUS_PORT: '0', CHORUS_DATA_DIR: dir, CHORUS_SOCKET: path.join(dir, 'none.sock') },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      expect(code).toBe(1);
      const lines = stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^chorus gateway: session store .*chorus\.db cannot be used: file is not a database; move it aside/);
      expect(fs.readFileSync(file).equals(garbage)).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

function childEnv(): Record<string, string> {
  return Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => !e[0].startsWith('CHORUS_') && e[1] !== undefined));
}

describe('the queue part of a stored session (SessionPersistence with a queue owner)', () => {
  it('is read only when its owner says it changed, is kept for a session with no track, and is handed back at start', () => {
    const dir = tempDir('chorus-persist-queue-');
    try {
      const withTrack: StoredSession = { id: 'a', track: { url: 'tone:440?seconds=60', format: 'opus' }, positionFrames: 250, paused: true };
      const queues = new Map<string, unknown>([
        ['a', { items: [{ url: 'tone:440?seconds=60' }, { url: 'tone:550' }], index: 0, repeat: 'off' }],
        ['b', { items: [{ url: 'tone:660' }], index: 0, repeat: 'queue' }],
      ]);
      let snapshots = 0;
      const owner: PersistentQueues = {
        snapshot: (id) => (snapshots++, queues.get(id)),
        restore: () => undefined,
      };
      const persistence = new SessionPersistence(SessionStore.open(dir), { storedSessions: () => [withTrack], restoreSession: () => true }, owner);
      persistence.flush();
      expect(snapshots).toBe(0);
      persistence.queueChanged('a');
      persistence.queueChanged('b');
      persistence.flush();
      persistence.flush();
      expect(snapshots).toBe(2);
      persistence.close();

      const store = SessionStore.open(dir);
      const restoredSessions: string[] = [];
      const restoredQueues = new Map<string, unknown>();
      const again = new SessionPersistence(
        store,
        { storedSessions: () => [], restoreSession: (s) => (restoredSessions.push(s.id), true) },
        { snapshot: () => undefined, restore: (id, state) => restoredQueues.set(id, state) },
      );
      expect(again.restore()).toBe(1);
      expect(restoredSessions).toEqual(['a']);
      expect(restoredQueues).toEqual(queues);
      again.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
