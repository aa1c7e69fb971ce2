/**
 * The gateway's engine link against a stand-in engine written here from the seed's description
 * alone — frames `u32be length · 24-byte space-padded id · payload`, JSON event lines, no
 * `hello`, no credits, real-time pacing — so nothing of chorus's own encoder is trusted.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
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
