/**
 * The gateway's engine link against a stand-in engine written here from the seed's description
 * alone — frames `u32be length · 24-byte space-padded id · payload`, JSON event lines, no
 * `hello`, no credits, real-time pacing — so nothing of chorus's own encoder is trusted; and two
 * real gateways on one real engine, where the first keeps it while it is healthy.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SILENT_MS } from '../../../src/main/engine/socket-server.js';
import { startChorus, tempDir, type ChorusProcess } from '../../helpers/chorus-process.js';
import { waitForHealth } from '../../helpers/http.js';
import { TestListener } from '../../helpers/listener.js';

function seedFrame(id: string, payload: Buffer): Buffer {
  const head = Buffer.alloc(28);
  head.writeUInt32BE(24 + payload.length, 0);
  head.write(id.padEnd(24, ' '), 4, 'ascii');
  return Buffer.concat([head, payload]);
}

function seedEvent(event: object): Buffer {
  return Buffer.from(JSON.stringify(event) + '\n');
}

/** A seed-style engine: plays "tracks" of numbered payloads at 50 frames/s on one socket. */
class SeedEngine {
  readonly sockets: net.Socket[] = [];
  bytesFromGateway = 0;
  connections = 0;
  readonly plays: string[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly socketServer: net.Server;
  private readonly httpServer: http.Server;
  onPlay: (id: string) => void = () => undefined;

  constructor(readonly socketPath: string) {
    this.socketServer = net.createServer((socket) => {
      this.connections++;
      this.sockets.push(socket);
      socket.on('data', (chunk) => (this.bytesFromGateway += chunk.length));
      socket.on('error', () => undefined);
    });
    this.httpServer = http.createServer((req, res) => {
      const m = /^\/session\/([^/]+)\/(play|stop|pause|resume|status)$/.exec(req.url ?? '');
      req.resume();
      req.on('end', () => {
        if (!m) {
          res.writeHead(404).end('{"error":"not found"}');
          return;
        }
        const id = decodeURIComponent(m[1]!);
        if (m[2] === 'play') {
          this.plays.push(id);
          setImmediate(() => this.onPlay(id));
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((r) => this.socketServer.listen(this.socketPath, r));
    await new Promise<void>((r) => this.httpServer.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.httpServer.address() as net.AddressInfo).port}`;
  }

  write(data: Buffer): void {
    this.sockets.at(-1)?.write(data);
  }

  /** Sends `frames` numbered frames for `id` at 20 ms, then calls `end`. */
  stream(id: string, frames: number, end: () => void): void {
    this.write(seedEvent({ type: 'ready', session_id: id, duration: frames / 50 }));
    let n = 0;
    const timer = setInterval(() => {
      this.write(seedFrame(id, Buffer.from(`${id}#${n}`)));
      if (++n === frames) {
        clearInterval(timer);
        end();
      }
    }, 20);
    this.timers.push(timer);
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    for (const s of this.sockets) s.destroy();
    await Promise.all([
      new Promise((r) => this.socketServer.close(r)),
      new Promise((r) => {
        this.httpServer.closeAllConnections();
        this.httpServer.close(r);
      }),
    ]);
  }
}

describe('engine link with a seed engine (no hello, no credits)', () => {
  let dir: string;
  let engine: SeedEngine | undefined;
  let gateway: ChorusProcess | undefined;
  const listeners: TestListener[] = [];

  afterEach(async () => {
    for (const l of listeners.splice(0)) l.close();
    await gateway?.stop();
    await engine?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function start(): Promise<{ url: string; seed: SeedEngine }> {
    dir = tempDir();
    engine = new SeedEngine(path.join(dir, 'seed.sock'));
    const engineUrl = await engine.listen();
    gateway = await startChorus('gateway', {
      CHORUS_PORT: '0',
      CHORUS_SOCKET: engine.socketPath,
      CHORUS_ENGINE_URL: engineUrl,
      CHORUS_RECONNECT_MAX_MS: '200',
    });
    await waitForHealth(gateway.httpUrl, 'the gateway to connect', (h) => h.engine_connected === true);
    return { url: gateway.httpUrl, seed: engine };
  }

  it('routes frames to the right listeners, passes an error whose message has braces and a newline, and writes nothing back', async () => {
    const { url, seed } = await start();
    const a = await TestListener.connect(url, 'guild-a');
    const b = await TestListener.connect(url, 'guild-b');
    listeners.push(a, b);
    const message = 'ffmpeg exited: {"code":1}\n} unbalanced { braces';
    seed.onPlay = (id) => {
      if (id === 'guild-a') seed.stream(id, 50, () => seed.write(seedEvent({ type: 'finished', session_id: id })));
      else seed.stream(id, 20, () => seed.write(seedEvent({ type: 'error', session_id: id, message })));
    };
    // Frames for an id nobody asked for are dropped and logged once, not once per frame.
    for (let i = 0; i < 30; i++) seed.write(seedFrame('ghost', Buffer.from('boo')));
    for (const id of ['guild-a', 'guild-b']) {
      const res = await fetch(`${url}/sessions/${id}/play`, { method: 'POST', body: JSON.stringify({ url: 'seed://track' }) });
      expect(res.status).toBe(200);
    }
    await a.waitForEvent('finished', 10_000);
    const error = await b.waitForEvent('error', 10_000);
    expect((error as { message: string }).message).toBe(message);

    const payloads = (l: TestListener) => l.frames.map((f) => f.payload.toString());
    expect(payloads(a)).toEqual(Array.from({ length: 50 }, (_, n) => `guild-a#${n}`));
    expect(payloads(b).every((p) => p.startsWith('guild-b#'))).toBe(true);
    expect(a.seqBreaks()).toEqual([]);
    expect(seed.bytesFromGateway).toBe(0);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/chorus_gateway_frames_unknown_total 30\b/);
    expect(gateway!.logs.filter((l) => l.includes('unknown session') && l.includes('ghost'))).toHaveLength(1);
  });

  it('drops the connection on an oversized length, reconnects, and plays on', async () => {
    const { url, seed } = await start();
    const l = await TestListener.connect(url, 'after');
    listeners.push(l);
    const huge = Buffer.alloc(4);
    huge.writeUInt32BE(0x7fffffff, 0);
    seed.write(huge);
    await waitForHealth(url, 'the gateway to drop the connection and connect again', (h) => seed.connections === 2 && h.engine_connected === true, 5000);
    expect((await (await fetch(`${url}/metrics`)).text())).toMatch(/^chorus_gateway_protocol_errors_total 1$/m);
    expect(seed.connections).toBe(2);
    // Invalid JSON is skipped without losing the connection.
    seed.write(Buffer.from('{"type": nope}\n'));
    seed.onPlay = (id) => seed.stream(id, 10, () => seed.write(seedEvent({ type: 'finished', session_id: id })));
    await fetch(`${url}/sessions/after/play`, { method: 'POST', body: JSON.stringify({ url: 'seed://track' }) });
    await l.waitForEvent('finished', 5000);
    expect(l.frames).toHaveLength(10);
    expect(seed.connections).toBe(2);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/chorus_gateway_protocol_errors_total 1\b/);
    expect(metrics).toMatch(/chorus_gateway_bad_events_total 1\b/);
  });

  it('skips an event line over 64 KiB as one bad event: the connection and the tracks on it carry on', async () => {
    const { url, seed } = await start();
    const l = await TestListener.connect(url, 'long-line');
    listeners.push(l);
    seed.onPlay = (id) =>
      seed.stream(id, 40, () => seed.write(seedEvent({ type: 'finished', session_id: id })));
    await fetch(`${url}/sessions/long-line/play`, { method: 'POST', body: JSON.stringify({ url: 'seed://track' }) });
    await l.waitForFrames(5, 5000);
    seed.write(seedEvent({ type: 'error', session_id: 'long-line', message: 'x'.repeat(200_000) }));
    await l.waitForEvent('finished', 5000);
    expect(l.frames).toHaveLength(40);
    expect(l.events.some((e) => e.type === 'error')).toBe(false);
    expect(seed.connections).toBe(1);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/chorus_gateway_protocol_errors_total 0\b/);
    expect(metrics).toMatch(/chorus_gateway_bad_events_total 1\b/);
  });
});

describe('two gateways on one engine', () => {
  const procs: ChorusProcess[] = [];
  const listeners: TestListener[] = [];
  let dir: string;

  afterEach(async () => {
    for (const l of listeners.splice(0)) l.close();
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGCONT');
    await Promise.allSettled(procs.splice(0).map((p) => p.stop()));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const metric = async (url: string, name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(await (await fetch(`${url}/metrics`)).text())![1]);
  const REFUSAL = /the engine refused this gateway: another gateway is connected and healthy/;

  async function startEngine(): Promise<{ engine: ChorusProcess; gateway: () => Promise<ChorusProcess> }> {
    dir = tempDir();
    const socket = path.join(dir, 'engine.sock');
    const engine = await startChorus('engine', { CHORUS_ENGINE_PORT: '0', CHORUS_SOCKET: socket });
    procs.push(engine);
    const gateway = async () => {
      const g = await startChorus('gateway', { CHORUS_PORT: '0', CHORUS_SOCKET: socket, CHORUS_ENGINE_URL: engine.httpUrl, CHORUS_RECONNECT_MAX_MS: '200' });
      procs.push(g);
      return g;
    };
    return { engine, gateway };
  }

  /** A listener on `gateway` hears a 1 s tone whole: 50 frames in order, then `finished`. */
  async function expectPlays(gateway: ChorusProcess, id: string): Promise<void> {
    const l = await TestListener.connect(gateway.httpUrl, id);
    listeners.push(l);
    const play = await fetch(`${gateway.httpUrl}/sessions/${id}/play`, { method: 'POST', body: JSON.stringify({ url: 'tone:440?seconds=1' }) });
    expect(play.status).toBe(200);
    await l.waitForEvent('finished', 10_000);
    expect(l.frames).toHaveLength(50);
    expect(l.seqBreaks()).toEqual([]);
  }

  it('the first keeps playing undisturbed, the second is refused and says why in /health; once the first is killed, the second takes over and plays', async () => {
    const { engine, gateway } = await startEngine();
    const first = await gateway();
    await waitForHealth(first.httpUrl, "the engine's hello", (h) => h.engine_flow === 'credit');
    const l = await TestListener.connect(first.httpUrl, 'kept');
    listeners.push(l);
    expect((await fetch(`${first.httpUrl}/sessions/kept/play`, { method: 'POST', body: JSON.stringify({ url: 'tone:440?seconds=60' }) })).status).toBe(200);
    await l.waitForFrames(25);
    const reconnects = await metric(first.httpUrl, 'chorus_gateway_engine_reconnects_total');

    const second = await gateway();
    const refused = await waitForHealth(second.httpUrl, 'the second gateway to be refused', (h) => h.engine_refused !== undefined);
    expect(refused).toMatchObject({ status: 'unavailable', engine_connected: false, engine_refused: 'another gateway is connected and healthy' });
    expect(refused.reason).toMatch(REFUSAL);
    // It keeps asking (its back-off is at most 200 ms here), and says so once, not once per refusal.
    const refusals = () => metric(engine.httpUrl, 'chorus_engine_gateway_refused_total');
    for (const deadline = performance.now() + 10_000; (await refusals()) < 5; ) {
      if (performance.now() > deadline) throw new Error('the second gateway stopped asking');
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(second.logs.filter((line) => /the engine refused this gateway/.test(line))).toHaveLength(1);
    expect(second.logs.some((line) => /connected to engine/.test(line))).toBe(false);

    // The first was not disturbed: its frames flow on, in order, and it never reconnected.
    const heard = l.frames.length;
    await l.waitForFrames(heard + 50);
    expect(l.seqBreaks()).toEqual([]);
    expect(await metric(first.httpUrl, 'chorus_gateway_engine_reconnects_total')).toBe(reconnects);
    expect(first.logs.some((line) => /engine connection lost/.test(line))).toBe(false);
    expect((await waitForHealth(first.httpUrl, 'the first gateway', () => true)).engine_connected).toBe(true);

    first.child.kill('SIGKILL');
    const taken = await waitForHealth(second.httpUrl, 'the second gateway to take over', (h) => h.engine_connected === true);
    expect(taken.engine_refused).toBeUndefined();
    expect(second.logs.filter((line) => /connected to engine/.test(line))).toHaveLength(1);
    await expectPlays(second, 'after');
  });

  it('a gateway that stops is taken over from; back, it is the one refused, and says so', async () => {
    const { gateway } = await startEngine();
    const first = await gateway();
    await waitForHealth(first.httpUrl, "the engine's hello", (h) => h.engine_flow === 'credit');
    const second = await gateway();
    await waitForHealth(second.httpUrl, 'the second gateway to be refused', (h) => h.engine_refused !== undefined);

    first.child.kill('SIGSTOP');
    // Stopped, the first says nothing: after SILENT_MS the second's next try takes the engine.
    await waitForHealth(second.httpUrl, 'the second gateway to take over', (h) => h.engine_connected === true, SILENT_MS + 10_000);
    first.child.kill('SIGCONT');
    const refused = await waitForHealth(first.httpUrl, 'the first gateway, back, to be refused', (h) => h.engine_refused !== undefined);
    expect(refused.reason).toMatch(REFUSAL);
    expect(first.logs.filter((line) => /the engine refused this gateway/.test(line))).toHaveLength(1);
    await expectPlays(second, 'taken');
  });
});
