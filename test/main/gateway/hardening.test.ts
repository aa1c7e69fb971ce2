/**
 * The gateway's side of hardening II (issue 10), against the real engine and gateway: a
 * WebSocket message flood, a reconnect in a track's last ring-length, credentials and server
 * paths in what a listen token reads, a connection flood, and the small ones (no Host, dot ids,
 * URLs that are none). Each attack runs while a bystander session plays, and the bystander's
 * cadence is measured through it. Loads are bounded in count and time, on loopback only.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { SILENT_MS } from '../../../src/main/engine/socket-server.js';
import { REPO_ROOT } from '../../helpers/chorus-process.js';
import { TestListener } from '../../helpers/listener.js';
import { request } from '../../helpers/http.js';
import { startStack, stopStack, type Stack } from '../../helpers/stack.js';

const TOKEN = randomBytes(24).toString('base64url');
const auth = { authorization: `Bearer ${TOKEN}` };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const call = (url: string, method: string, body?: unknown, headers: Record<string, string> = auth) => request(url, method, body, headers);

/** Connects to the engine socket; resolves with the engine's first line (`hello` or `refused`) and the socket, read on. */
async function engineAnswer(socketPath: string): Promise<{ answer: { type: string; reason?: string }; socket: net.Socket }> {
  const socket = net.createConnection(socketPath);
  socket.on('error', () => undefined);
  let text = '';
  const answer = await new Promise<{ type: string }>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      if (text.includes('\n')) return;
      text += chunk.toString('latin1');
      if (text.includes('\n')) resolve(JSON.parse(text.slice(0, text.indexOf('\n'))));
    });
    socket.once('close', () => reject(new Error('the engine closed the connection without an answer')));
  });
  return { answer, socket };
}

/** Resident memory of a process in MB, from /proc. */
function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) / 1024;
}

function openFds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** Samples `sample()` every `everyMs` until stopped; returns the samples' maximum. */
function sampler(sample: () => number, everyMs = 100): { stop(): number } {
  let max = sample();
  const timer = setInterval(() => (max = Math.max(max, sample())), everyMs);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(max, sample());
    },
  };
}

interface WsFloodResult {
  sent: number;
  closeCode: number | null;
  closedAfterMs: number | null;
}

/**
 * Runs test/helpers/flood.mjs in its own process (its loops must not delay our listeners):
 * `ready` resolves when it says so, `result` with its last line.
 */
function hostile<T>(args: string[], timeoutMs: number): { ready: Promise<void>; result: Promise<T> } {
  const child = spawn(process.execPath, [path.join(REPO_ROOT, 'test/helpers/flood.mjs'), ...args], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  // Lowest priority: on loopback the attacker shares the two cores, and what is measured is the
  // gateway's isolation, not how the kernel shares a CPU with a busy loop (a remote attacker's
  // loop is not on this machine).
  os.setPriority(child.pid!, 19);
  let out = '';
  let onReady: () => void;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString();
    if (out.startsWith('ready\n')) onReady();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const result = new Promise<T>((resolve, reject) => {
    child.on('exit', () => {
      clearTimeout(timer);
      onReady();
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!) as T);
      } catch {
        reject(new Error(`flood.mjs ${args[0]} gave no result: ${out}`));
      }
    });
  });
  return { ready, result };
}

const wsFlood = (mode: 'ws-noread' | 'ws-read', url: string, seconds: number) => hostile<WsFloodResult>([mode, url, String(seconds)], (seconds + 20) * 1000);

/** A /health answered, and how long it took (ms). */
async function healthMs(url: string): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(5000) });
  expect(res.status).toBe(200);
  await res.text();
  return performance.now() - t0;
}

describe('the gateway under attack, with CHORUS_TOKEN set, while a bystander plays', () => {
  let stack: Stack;
  let bystander: TestListener;
  const listeners: TestListener[] = [];
  const listen = async (id: string, token = TOKEN) => {
    const l = await TestListener.connect(stack.url, id, token);
    listeners.push(l);
    return l;
  };
  const post = (route: string, body?: unknown) => call(stack.url + route, 'POST', body);
  /** The bystander's largest gap over 5 s of calm (about an attack's length): the machine's own noise. */
  const calmGap = async () => {
    const from = performance.now();
    await sleep(5000);
    return bystander.maxGap(from, performance.now());
  };
  /**
   * The target is a max gap under 100 ms. Where the machine alone (other jobs on its two cores)
   * already makes larger gaps, the attack must not add to them: under twice the calm figure.
   * Before these fixes the floods made gaps of 2.5–3.2 s.
   */
  const expectUndisturbed = (gap: number, calm: number) => expect(gap).toBeLessThan(Math.max(100, 2 * calm));
  const wsUrl = (id: string, token: string) => `${stack.url.replace(/^http/, 'ws')}/ws?session=${encodeURIComponent(id)}&token=${encodeURIComponent(token)}`;
  const listenToken = async (id: string) => {
    const res = await post(`/sessions/${id}/play`, { url: 'tone:300?seconds=60' });
    expect(res.status).toBe(200);
    return res.json.listenToken as string;
  };

  beforeAll(async () => {
    stack = await startStack(
      { CHORUS_TOKEN: TOKEN },
      { CHORUS_REMOTE_ALLOW: '127.0.0.1' },
      { CHORUS_MAX_CONNECTIONS: '200', CHORUS_HEADERS_TIMEOUT_MS: '2000', CHORUS_WS_MESSAGE_RATE: '20' },
    );
    bystander = await listen('bystander');
    expect((await post('/sessions/bystander/play', { url: 'tone:440?seconds=300' })).status).toBe(200);
    await bystander.waitForFrames(50);
  }, 60_000);
  afterAll(async () => {
    for (const l of listeners) l.close();
    await stopStack(stack);
  });

  it('a listener flooding messages without reading is closed; gateway memory stays bounded and the bystander keeps its cadence', async () => {
    const token = await listenToken('flood');
    const calm = await calmGap();
    const rssBefore = rssMb(stack.gateway.pid);
    const rss = sampler(() => rssMb(stack.gateway.pid));
    const from = performance.now();
    const flooding = wsFlood('ws-noread', wsUrl('flood', token), 8);
    await flooding.ready;
    const floodFrom = performance.now();
    const health: number[] = [];
    while (performance.now() - floodFrom < 5000) {
      health.push(await healthMs(stack.url));
      await sleep(200);
    }
    // It reads nothing, so it cannot see its close: 5 s into its 8 s, the gateway has let it go.
    const whileFlooding = (await call(`${stack.url}/sessions/flood`, 'GET')).json.session;
    const result = await flooding.result;
    const to = performance.now();
    const rssMax = rss.stop();
    const gap = bystander.maxGap(from, to);
    console.log(`flood (noread): ${result.sent} messages, closed after ${result.closedAfterMs} ms; gateway RSS ${rssBefore.toFixed(0)} -> max ${rssMax.toFixed(0)} MB; bystander max gap ${gap.toFixed(1)} ms (calm: ${calm.toFixed(1)} ms); /health max ${Math.max(...health).toFixed(0)} ms`);
    expect(whileFlooding).toMatchObject({ listeners: 0 });
    expect(rssMax - rssBefore).toBeLessThan(64);
    expectUndisturbed(gap, calm);
    expect(Math.max(...health)).toBeLessThan(1000);
    const metrics = await (await fetch(`${stack.url}/metrics`, { headers: auth })).text();
    expect(metrics).toMatch(/^chorus_gateway_refused_total\{kind="ws_rate"\} [1-9]/m);
  });

  it('a listener flooding messages and reading gets close 1008 naming CHORUS_WS_MESSAGE_RATE; one within the rate is served', async () => {
    const token = await listenToken('flood-read');
    const calm = await calmGap();
    const from = performance.now();
    const result = await wsFlood('ws-read', wsUrl('flood-read', token), 5).result;
    const gap = bystander.maxGap(from, performance.now());
    console.log(`flood (read): ${result.sent} messages, close ${result.closeCode} after ${result.closedAfterMs} ms; bystander max gap ${gap.toFixed(1)} ms (calm: ${calm.toFixed(1)} ms)`);
    expect(result.closeCode).toBe(1008);
    expectUndisturbed(gap, calm);

    const polite = await listen('flood-read', token);
    const closed = new Promise<{ code: number; reason: string }>((resolve) => polite.ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    for (let i = 0; i < 10; i++) polite.ws.send(JSON.stringify({ action: 'nope' }));
    await polite.until(() => polite.events.filter((e) => e.type === 'error').length === 10, 5000, '10 error replies');
    expect(polite.ws.readyState).toBe(WebSocket.OPEN);
    for (let i = 0; i < 100; i++) polite.ws.send(JSON.stringify({ action: 'nope' }));
    expect(await closed).toEqual({ code: 1008, reason: 'more than 20 messages a second (CHORUS_WS_MESSAGE_RATE)' });
    await post('/sessions/flood/stop');
    await post('/sessions/flood-read/stop');
  });

  it('a stray connection on the engine socket is refused and disturbs nothing; a reconnect in the last ring-length lets the track play out its ring, then `finished`', async () => {
    const l = await listen('tail');
    expect((await post('/sessions/tail/play', { url: 'tone:523?seconds=2' })).status).toBe(200);
    // The engine sends the whole 2 s track at once (the ring holds 3 s) and then says finished:
    // wait until all of it is in the gateway, sent or in the ring.
    await l.waitForFrames(10);
    const t0 = performance.now();
    for (;;) {
      const s = (await call(`${stack.url}/sessions/tail`, 'GET')).json.session as { ringFrames: number; sent: number };
      if (s.ringFrames + s.sent >= 100) break;
      if (performance.now() - t0 > 3000) throw new Error(`the engine sent only ${s.ringFrames + s.sent} frames`);
      await sleep(20);
    }
    const socket = path.join(stack.dir, 'engine.sock');
    const reconnects = async () => Number(/^chorus_gateway_engine_reconnects_total (\d+)$/m.exec(await (await fetch(`${stack.url}/metrics`, { headers: auth })).text())![1]);
    const reconnectsBefore = await reconnects();
    // A stray connection while the gateway is healthy is refused: the gateway keeps the engine.
    const stray = await engineAnswer(socket);
    expect(stray.answer).toEqual({ type: 'refused', reason: 'another gateway is connected and healthy' });
    stray.socket.destroy();
    expect(await reconnects()).toBe(reconnectsBefore);
    expect(stack.gateway.logs.some((line) => /engine connection lost/.test(line))).toBe(false);

    // A gateway that stops says nothing: a new connection then takes the engine from it, and the
    // gateway, running again, finds its connection gone and reconnects.
    process.kill(stack.gateway.pid, 'SIGSTOP');
    try {
      for (const deadline = performance.now() + SILENT_MS + 10_000; ; ) {
        const intruder = await engineAnswer(socket);
        intruder.socket.destroy();
        if (intruder.answer.type === 'hello') break;
        if (performance.now() > deadline) throw new Error('the engine never let a connection take over from the stopped gateway');
        await sleep(250);
      }
    } finally {
      process.kill(stack.gateway.pid, 'SIGCONT');
    }
    await stack.gateway.waitForLog(/engine connection lost/);
    await l.waitForEvent('finished', 10_000);
    expect(l.events.filter((e) => e.type === 'error')).toEqual([]);
    expect(l.frames.length).toBeGreaterThanOrEqual(98);
    expect(l.seqBreaks()).toEqual([]);
  });

  it('a listener that never reads but sends pongs of its own is judged by our ping: cut off, and its session plays on for the others', async () => {
    const { DEAD_AFTER_MS } = await import('../../../src/main/gateway/listener.js');
    const token = await listenToken('pong');
    const reader = await listen('pong', token);
    await reader.waitForFrames(reader.frames.length + 25);
    const cheat = new WebSocket(wsUrl('pong', token));
    cheat.on('error', () => undefined);
    await new Promise<void>((resolve) => cheat.once('open', () => resolve()));
    (cheat as unknown as { _socket: { pause(): void } })._socket.pause();
    const pongs = setInterval(() => {
      if (cheat.readyState === WebSocket.OPEN) cheat.pong(randomBytes(8));
    }, 100);
    const from = performance.now();
    try {
      let listeners = 2;
      while (listeners === 2 && performance.now() - from < DEAD_AFTER_MS + 5000) {
        await sleep(250);
        listeners = ((await call(`${stack.url}/sessions/pong`, 'GET')).json.session as { listeners: number }).listeners;
      }
      const cutAfter = performance.now() - from;
      console.log(`unsolicited pongs: the non-reading listener was cut after ${cutAfter.toFixed(0)} ms (CHORUS_SLOW_LISTENER=wait)`);
      expect(listeners).toBe(1);
      const n = reader.frames.length;
      await reader.waitForFrames(n + 50, 3000);
    } finally {
      clearInterval(pongs);
      cheat.terminate();
    }
    await post('/sessions/pong/stop');
  }, 60_000);

  it('credentials and server paths never reach a listen token: not in reason, nor in state or error events', async () => {
    // Bytes no demuxer takes (random ones sometimes probe as a text subtitle, and ffmpeg's error
    // then names the output, not the file).
    fs.writeFileSync(path.join(stack.dir, 'media', 'broken.wav'), Buffer.alloc(4096, 0x5a));
    const cases = [
      { id: 'leak-url', url: 'http://alice:pa55word@127.0.0.1:1/track.mp3?api_key=SECRET123&x=2', secrets: ['pa55word', 'SECRET123', 'alice'] },
      { id: 'leak-path', url: path.join(stack.dir, 'media', 'broken.wav'), secrets: [stack.dir] },
    ];
    for (const c of cases) {
      const token = await listenToken(c.id);
      const l = await listen(c.id, token);
      await post(`/sessions/${c.id}/play`, { url: c.url });
      await l.waitForEvent('error', 10_000);
      const seen = await call(`${stack.url}/sessions/${c.id}`, 'GET', undefined, { authorization: `Bearer ${token}` });
      expect(seen.status).toBe(200);
      const readable = JSON.stringify(l.events) + JSON.stringify(seen.json);
      for (const secret of c.secrets) expect(readable, `${c.id} leaks ${secret}`).not.toContain(secret);
      console.log(`${c.id}: ${(seen.json.session as { reason: string }).reason}`);
    }
    const urlReason = ((await call(`${stack.url}/sessions/leak-url`, 'GET')).json.session as { reason: string }).reason;
    expect(urlReason).toContain('http://***@127.0.0.1:1/track.mp3?api_key=***&x=***');
    const pathReason = ((await call(`${stack.url}/sessions/leak-path`, 'GET')).json.session as { reason: string }).reason;
    expect(pathReason).toMatch(/broken\.wav/);
  });

  it('idle connections past CHORUS_MAX_CONNECTIONS are closed at once and the rest after CHORUS_HEADERS_TIMEOUT_MS; descriptors stay bounded', async () => {
    expect(stack.gateway.logs.some((l) => /open-file limit \d+ \(hard \d+\)/.test(l))).toBe(true);
    const calm = await calmGap();
    const pid = stack.gateway.pid;
    const fdBefore = openFds(pid);
    const fds = sampler(() => openFds(pid));
    const { port } = new URL(stack.url);
    const from = performance.now();
    // Held until the gateway has closed them all (15 s at most): past the cap they are closed at
    // once, the rest once the headers timeout passes (one the kernel held in the listen backlog
    // starts its time when taken).
    const held = hostile<{ opened: number; closedByPeer: number; allClosedAfterMs: number | null }>(['idle-tcp', port, '1000', '15'], 40_000);
    await held.ready;
    // While the attacker still holds its sockets, /health answers again once the timeout has cut them.
    const t0 = performance.now();
    let answered = false;
    while (performance.now() - t0 < 3000 && !answered) {
      answered = await fetch(`${stack.url}/health`, { signal: AbortSignal.timeout(1000) }).then(
        (r) => r.status === 200,
        () => false,
      );
      if (!answered) await sleep(100);
    }
    const backAfter = performance.now() - t0;
    const { opened, closedByPeer, allClosedAfterMs } = await held.result;
    const fdMax = fds.stop();
    const gap = bystander.maxGap(from, performance.now());
    console.log(
      `connection flood: ${opened} idle connections, ${closedByPeer} closed by the gateway (all after ${allClosedAfterMs} ms); gateway fds ${fdBefore} -> max ${fdMax}; ` +
        `/health back ${backAfter.toFixed(0)} ms after; bystander max gap ${gap.toFixed(1)} ms (calm: ${calm.toFixed(1)} ms)`,
    );
    expect(fdMax - fdBefore).toBeLessThanOrEqual(200);
    expect(answered).toBe(true);
    expect(closedByPeer).toBe(opened);
    expectUndisturbed(gap, calm);
  });

  it('a request without Host is 400 with a JSON reason', async () => {
    const { port } = new URL(stack.url);
    const answer = await new Promise<string>((resolve, reject) => {
      const s = net.createConnection({ host: '127.0.0.1', port: Number(port) }, () => s.write('GET /health HTTP/1.1\r\nConnection: close\r\n\r\n'));
      let text = '';
      s.on('data', (c: Buffer) => (text += c.toString()));
      s.on('end', () => resolve(text));
      s.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toEqual({ error: 'the request has no Host header (HTTP/1.1 requires one)' });
  });

  it('ids "." and ".." are refused with a clear 400 by the one id rule (a WebSocket ?session= is where they reach it)', async () => {
    for (const id of ['.', '..']) {
      const upgrade = await new Promise<{ status: number; body: string }>((resolve) => {
        const ws = new WebSocket(wsUrl(id, TOKEN));
        ws.on('unexpected-response', (_req, res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        ws.on('open', () => resolve({ status: 101, body: '' }));
        ws.on('error', () => undefined);
      });
      expect(upgrade.status, `WebSocket ?session=${id}`).toBe(400);
      expect(JSON.parse(upgrade.body)).toEqual({ error: `session id may not be "${id}" (a dot segment in a URL path)` });
    }
  });

  it('a URL that is none (`http://[`, a port over 65535) is a 400 with a reason, never a 500', async () => {
    for (const url of ['http://[', 'http://127.0.0.1:70000/a.mp3', 'https://[::1', 'http://user@:99999/']) {
      const res = await post('/sessions/badurl/play', { url });
      expect(res.status, url).toBe(400);
      expect(res.json.error).toMatch(/"url" is not a valid URL/);
    }
    expect((await call(`${stack.url}/sessions/bystander`, 'GET')).json.session).toMatchObject({ state: 'playing' });
  });
});
