/**
 * The baseline: the seed's Node path, modelled so a load test can measure it with the same
 * listeners as chorus. Everything on one thread, as the seed's socket-client.ts and websocket.ts
 * did it:
 *
 *   - the engine socket is read with `buffer = Buffer.concat([buffer, chunk])` on every read;
 *     an event is found by counting braces (the seed's reader: breaks on a brace inside a
 *     string), a frame by its length (no cap);
 *   - each frame is emitted as `audio(sessionId, data)` and written into that session's
 *     PassThrough stream, whose 'data' handler sends it to the session's WebSocket listeners;
 *   - no pacing of its own: frames go out when the engine's arrive (the seed engine paces at
 *     real time), no credit (it never writes to the engine), no backpressure, no ring.
 *
 * It serves the listener protocol of chorus (src/shared/listener-protocol.ts: `u32be seq ·
 * u32be timestamp · Opus`, JSON text events) and the HTTP subset a load test drives:
 * POST /sessions/:id/play|pause|resume|stop (passed on to the engine), GET /sessions, /health,
 * WS /ws?session=id. It is a measuring stick, not a product: no validation beyond what keeps it
 * up.
 */
import { EventEmitter } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { FRAME_SAMPLES } from '../../src/shared/audio.js';
import { healthHttpStatus, type GatewayHealth } from '../../src/shared/health.js';
import { writeListenerHeader } from '../../src/shared/listener-protocol.js';
import { readBody, sendError, sendJson } from '../../src/main/http-kit.js';

/** The seed's socket client: Buffer.concat per read, brace counting for events. */
class SeedSocketClient extends EventEmitter {
  private buffer = Buffer.alloc(0);
  private socket: net.Socket | undefined;
  private closed = false;
  connected = false;
  reads = 0;

  constructor(private readonly socketPath: string) {
    super();
  }

  connect(): void {
    if (this.closed) return;
    const socket = net.createConnection(this.socketPath);
    this.socket = socket;
    socket.on('connect', () => {
      this.connected = true;
      this.buffer = Buffer.alloc(0);
    });
    socket.on('data', (chunk: Buffer) => {
      this.reads++;
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.processBuffer();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.connected = false;
      if (!this.closed) setTimeout(() => this.connect(), 100);
    });
  }

  close(): void {
    this.closed = true;
    this.socket?.destroy();
  }

  private processBuffer(): void {
    while (this.buffer.length > 0) {
      if (this.buffer[0] === 0x7b) {
        let depth = 0;
        let end = -1;
        for (let i = 0; i < this.buffer.length; i++) {
          const c = this.buffer[i];
          if (c === 0x7b) depth++;
          else if (c === 0x7d && --depth === 0) {
            end = i;
            break;
          }
        }
        if (end < 0) return;
        const json = this.buffer.toString('utf8', 0, end + 1);
        let next = end + 1;
        if (this.buffer[next] === 0x0a) next++;
        this.buffer = this.buffer.subarray(next);
        try {
          this.emit('event', JSON.parse(json));
        } catch {
          // The seed logged and went on.
        }
        continue;
      }
      if (this.buffer.length < 4) return;
      const length = this.buffer.readUInt32BE(0);
      if (this.buffer.length < 4 + length) return;
      const sessionId = this.buffer.toString('ascii', 4, 28).trim();
      const data = this.buffer.subarray(28, 4 + length);
      this.buffer = this.buffer.subarray(4 + length);
      this.emit('audio', sessionId, data);
    }
  }
}

interface BaselineSession {
  id: string;
  stream: PassThrough;
  listeners: Set<WebSocket>;
  state: string;
  seq: number;
  timestamp: number;
  sent: number;
}

export interface BaselineOptions {
  socketPath: string;
  engineUrl: string;
  port?: number;
  host?: string;
}

export interface RunningBaseline {
  url: string;
  close(): Promise<void>;
}

export async function startBaselineGateway(opts: BaselineOptions): Promise<RunningBaseline> {
  const sessions = new Map<string, BaselineSession>();
  const client = new SeedSocketClient(opts.socketPath);

  const broadcast = (s: BaselineSession, event: Record<string, unknown>) => {
    const text = JSON.stringify({ ...event, session: s.id });
    for (const ws of s.listeners) ws.send(text);
  };
  const setState = (s: BaselineSession, state: string) => {
    s.state = state;
    broadcast(s, { type: 'state', state });
  };
  const session = (id: string): BaselineSession => {
    let s = sessions.get(id);
    if (s) return s;
    const stream = new PassThrough();
    const created: BaselineSession = { id, stream, listeners: new Set(), state: 'idle', seq: 0, timestamp: 0, sent: 0 };
    stream.on('data', (packet: Buffer) => {
      const header = Buffer.allocUnsafe(8);
      writeListenerHeader(header, 0, created.seq, created.timestamp);
      created.seq = (created.seq + 1) >>> 0;
      created.timestamp = (created.timestamp + FRAME_SAMPLES) >>> 0;
      created.sent++;
      const message = Buffer.concat([header, packet]);
      for (const ws of created.listeners) ws.send(message);
    });
    sessions.set(id, created);
    return created;
  };

  client.on('audio', (sessionId: string, data: Buffer) => {
    const s = sessions.get(sessionId);
    if (s) s.stream.write(data);
  });
  client.on('event', (event: { type?: string; session_id?: string; message?: string; duration?: number }) => {
    const s = typeof event.session_id === 'string' ? sessions.get(event.session_id) : undefined;
    if (!s) return;
    if (event.type === 'ready') {
      broadcast(s, { type: 'ready', duration: event.duration });
      setState(s, 'playing');
    } else if (event.type === 'finished') {
      setState(s, 'finished');
      broadcast(s, { type: 'finished' });
    } else if (event.type === 'error') {
      setState(s, 'error');
      broadcast(s, { type: 'error', message: event.message });
    }
  });
  client.connect();

  const engine = async (path: string, body?: unknown) => {
    const res = await fetch(opts.engineUrl + path, {
      method: 'POST',
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw Object.assign(new Error(`engine: ${text.slice(0, 200)}`), { status: res.status });
  };
  const server = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://baseline');
      const body = (await readBody(req, 64 * 1024)).toString('utf8');
      if (url.pathname === '/health') {
        // No session limit here, so no max_sessions.
        const health: Omit<GatewayHealth, 'max_sessions'> = {
          status: client.connected ? 'ok' : 'unavailable',
          ...(client.connected ? {} : { reason: 'engine socket not connected' }),
          sessions: sessions.size,
          engine_connected: client.connected,
          engine_flow: 'paced',
          engine_starved: false,
          threads: 1,
          uptime_s: Math.round(process.uptime()),
        };
        return sendJson(res, healthHttpStatus(health), health);
      }
      if (url.pathname === '/sessions') {
        return sendJson(res, 200, {
          sessions: [...sessions.values()].map((s) => ({ id: s.id, state: s.state, listeners: s.listeners.size, sent: s.sent, underruns: 0, late: 0, dropped: 0, skipped: 0 })),
          threads: 1,
          sessionsPerThread: 0,
          engineConnected: client.connected,
        });
      }
      const m = /^\/sessions\/([^/]+)\/(play|pause|resume|stop)$/.exec(url.pathname);
      if (!m || req.method !== 'POST') return sendJson(res, 404, { error: 'no route' });
      const id = decodeURIComponent(m[1]!);
      const s = session(id);
      try {
        switch (m[2]) {
          case 'play': {
            const { url: source } = JSON.parse(body || '{}') as { url?: string };
            setState(s, 'starting');
            await engine(`/session/${encodeURIComponent(id)}/play`, { url: source, format: 'opus' });
            break;
          }
          case 'pause':
            await engine(`/session/${encodeURIComponent(id)}/pause`);
            setState(s, 'paused');
            break;
          case 'resume':
            await engine(`/session/${encodeURIComponent(id)}/resume`);
            setState(s, 'playing');
            break;
          case 'stop':
            await engine(`/session/${encodeURIComponent(id)}/stop`);
            setState(s, 'stopped');
            break;
        }
        sendJson(res, 200, { session: { id, state: s.state } });
      } catch (err) {
        sendJson(res, (err as { status?: number }).status ?? 502, { error: (err as Error).message });
      }
    })().catch((err: unknown) => sendError(res, err));
  });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'http://baseline');
    const id = url.searchParams.get('session');
    if (url.pathname !== '/ws' || !id) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const s = session(id);
      s.listeners.add(ws);
      ws.send(JSON.stringify({ type: 'state', session: id, state: s.state }));
      ws.on('close', () => s.listeners.delete(ws));
      ws.on('error', () => undefined);
    });
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${opts.host ?? '127.0.0.1'}:${port}`,
    async close() {
      client.close();
      for (const ws of wss.clients) ws.terminate();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
