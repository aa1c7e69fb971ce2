/**
 * A synthetic engine for load tests and benchmarks: the real engine (its session manager,
 * sessions and outboxes, scheduler, frame socket and HTTP API, src/main/engine/) with one part
 * swapped: instead of ffmpeg and an Opus encoder, each play replays a loop of its tone's Opus
 * packets encoded beforehand (scripts/lib/tones.ts). What a load test measures is then the
 * gateway and the engine's own pacing and credit, not ffmpeg or an encoder.
 *
 *   Sources  `tone:<hz>[?seconds=n]` only (format opus or web); another URL is a 400.
 *   Seed     `seed: true` says no `hello` on connect, as the seed engine does: the engine then
 *            paces every session at real time (the baseline's engine).
 *   HTTP     the engine's API (/session/:id/…, /health, /metrics) and, for the load scripts:
 *            GET /stats (the counters below), GET /tone?hz=H (a tone's loop, tones.ts
 *            serialisation), POST /fault/garbage?kind=oversized-length|truncated-id|invalid-json.
 *   Faults   injectGarbage(kind): 'invalid-json' writes a bad event line (non-fatal for a
 *            gateway); 'oversized-length' (a 1 MiB length) and 'truncated-id' (a length shorter
 *            than the 24-byte id) are fatal: the scheduler lets that connection go at once, so
 *            nothing more is written to it (no frame is lost after the garbage), and the gateway
 *            is expected to drop it and reconnect; sessions go on on the new connection.
 *
 * Programmatic use (in-process, e.g. a benchmark):
 *   const engine = await startSyntheticEngine({ socketPath, httpPort: 0 });
 *   engine.httpUrl; engine.counters; engine.injectGarbage('oversized-length'); await engine.close();
 * As a process: scripts/lib/synthetic-engine-main.ts.
 */
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadConfig } from '../../src/shared/config.js';
import { FRAME_MS } from '../../src/shared/audio.js';
import { FRAME_HEADER_BYTES, writeFrameHeader } from '../../src/shared/protocol.js';
import { createHttpApi } from '../../src/main/engine/http-api.js';
import { SessionManager } from '../../src/main/engine/manager.js';
import { engineMetrics } from '../../src/main/engine/metrics.js';
import type { PipelineEvents, StartSource } from '../../src/main/engine/pipeline.js';
import { FrameScheduler } from '../../src/main/engine/scheduler.js';
import type { FrameSource, Session } from '../../src/main/engine/session.js';
import { SocketServer } from '../../src/main/engine/socket-server.js';
import { SourceError } from '../../src/main/engine/source.js';
import { HttpError, sendError, sendJson } from '../../src/main/http-kit.js';
import { listen } from '../../src/main/listen.js';
import { LOOP_FRAMES, parseToneUrl, serializeLoop, ToneBank } from './tones.js';

export type GarbageKind = 'oversized-length' | 'truncated-id' | 'invalid-json';
export const GARBAGE_KINDS: readonly GarbageKind[] = ['oversized-length', 'truncated-id', 'invalid-json'];

export interface SyntheticEngineOptions {
  socketPath: string;
  /** HTTP port; 0 (default) picks a free one. */
  httpPort?: number;
  httpHost?: string;
  /** Seed engine: no `hello`, so the gateway grants no credit and every session is paced. */
  seed?: boolean;
  bank?: ToneBank;
  maxSessions?: number;
  /** Length of a `tone:` URL without `?seconds=`. */
  defaultSeconds?: number;
}

export interface SyntheticCounters {
  connections: number;
  plays: number;
  framesSent: number;
  eventsSent: number;
  drainWaits: number;
  protocolErrors: number;
  garbageWritten: number;
  /** Fatal garbage the gateway did not answer by dropping the connection within 3 s. */
  garbageNotDropped: number;
}

const GARBAGE_DROP_TIMEOUT_MS = 3000;
/** Frames handed over per batch, as one ffmpeg read of 64 KiB gives. */
const BATCH_FRAMES = 17;

/** A play of a tone: the loop's wire frames, over and over, as long as the session has room. */
class LoopSource implements FrameSource {
  readonly pid = undefined;
  readonly inFlight = 0;
  private made = 0;

  get framesOut(): number {
    return this.made;
  }

  private ended = false;
  private scheduled = false;

  constructor(
    /** The loop's whole wire frames (header and packet). */
    private readonly wire: readonly Buffer[],
    private readonly total: number,
    readonly sourceDuration: number,
    private readonly events: PipelineEvents,
  ) {
    this.release();
  }

  release(): void {
    if (this.scheduled || this.ended) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.feed();
    });
  }

  kill(): void {
    this.ended = true;
  }

  private feed(): void {
    while (!this.ended && this.made < this.total && this.events.canRead()) {
      const count = Math.min(BATCH_FRAMES, this.total - this.made);
      let bytes = 0;
      for (let i = 0; i < count; i++) bytes += this.wire[(this.made + i) % LOOP_FRAMES]!.length;
      const batch = Buffer.allocUnsafe(bytes);
      for (let i = 0, off = 0; i < count; i++) {
        const frame = this.wire[(this.made + i) % LOOP_FRAMES]!;
        frame.copy(batch, off);
        off += frame.length;
      }
      this.made += count;
      this.events.frames(batch, count);
    }
    if (!this.ended && this.made >= this.total) {
      this.ended = true;
      this.events.end(undefined);
    }
  }
}

export class SyntheticEngine {
  readonly bank: ToneBank;
  readonly seed: boolean;
  private readonly sessions = new Map<string, Session>();
  private readonly scheduler = new FrameScheduler(this.sessions);
  private readonly socket: SocketServer;
  private readonly manager: SessionManager;
  private readonly http: http.Server;
  private garbageWritten = 0;
  private garbageNotDropped = 0;
  httpUrl = '';
  httpPort = 0;

  private constructor(readonly options: SyntheticEngineOptions) {
    this.bank = options.bank ?? new ToneBank();
    this.seed = options.seed ?? false;
    const defaultSeconds = options.defaultSeconds ?? 30;
    const config = loadConfig({
      CHORUS_SOCKET: options.socketPath,
      CHORUS_MAX_SESSIONS: String(options.maxSessions ?? 100_000),
    });
    this.socket = new SocketServer(options.socketPath, this.scheduler, !this.seed);
    this.manager = new SessionManager(this.sessions, {
      config,
      scheduler: this.scheduler,
      resolve: async (url) => {
        const tone = parseToneUrl(url, defaultSeconds);
        if (!tone) throw new SourceError(`the synthetic engine plays only tone:<hz>[?seconds=n], not ${JSON.stringify(url)}`, 400);
        return { kind: 'tone', args: [], duration: tone.seconds };
      },
      startSource: this.loopSource(defaultSeconds),
    });
    const started = performance.now();
    const metrics = engineMetrics({ manager: this.manager, scheduler: this.scheduler, socket: this.socket });
    this.http = createHttpApi({
      manager: this.manager,
      health: () => ({
        status: 'ok',
        sessions: this.manager.live,
        max_sessions: config.CHORUS_MAX_SESSIONS,
        gateway_connected: this.scheduler.connected,
        flow: this.scheduler.mode,
        encoder_threads: 0,
        ffmpeg: 'none: synthetic engine (tone loops encoded beforehand)',
        uptime_s: Math.round((performance.now() - started) / 1000),
      }),
      metrics,
      bindHost: options.httpHost ?? '127.0.0.1',
    });
    this.addLoadScriptRoutes();
  }

  static async start(options: SyntheticEngineOptions): Promise<SyntheticEngine> {
    const engine = new SyntheticEngine(options);
    try {
      const host = options.httpHost ?? '127.0.0.1';
      await listen(engine.http, host, options.httpPort ?? 0, 'port', 'host');
      await engine.socket.listen();
      engine.httpPort = (engine.http.address() as AddressInfo).port;
      engine.httpUrl = `http://${host.includes(':') ? `[${host}]` : host}:${engine.httpPort}`;
    } catch (err) {
      await engine.close();
      throw err;
    }
    return engine;
  }

  get socketPath(): string {
    return this.options.socketPath;
  }

  get connected(): boolean {
    return this.scheduler.connected;
  }

  get mode(): 'seed' | 'paced' | 'credit' {
    return this.seed ? 'seed' : this.scheduler.mode;
  }

  get counters(): SyntheticCounters {
    return {
      connections: this.socket.connections,
      plays: this.manager.plays,
      framesSent: this.scheduler.framesSent,
      eventsSent: this.scheduler.eventsSent,
      drainWaits: this.scheduler.drainWaits,
      protocolErrors: this.socket.protocolErrors,
      garbageWritten: this.garbageWritten,
      garbageNotDropped: this.garbageNotDropped,
    };
  }

  /** Writes a malformed unit on the current connection (see the file comment). */
  injectGarbage(kind: GarbageKind): boolean {
    const socket = this.scheduler.connection;
    if (!socket) return false;
    let unit: Buffer;
    switch (kind) {
      case 'invalid-json':
        unit = Buffer.from('{"type":"ready","session_id": this is not json}\n');
        break;
      case 'oversized-length':
        unit = Buffer.alloc(4 + 64);
        unit.writeUInt32BE(1024 * 1024, 0);
        break;
      case 'truncated-id':
        unit = Buffer.alloc(4 + 10, 0x41);
        unit.writeUInt32BE(10, 0);
        break;
    }
    this.garbageWritten++;
    socket.write(unit);
    if (kind !== 'invalid-json') {
      this.scheduler.detach(socket);
      const timer = setTimeout(() => {
        this.garbageNotDropped++;
        socket.destroy();
      }, GARBAGE_DROP_TIMEOUT_MS);
      timer.unref();
      socket.once('close', () => clearTimeout(timer));
    }
    return true;
  }

  async close(): Promise<void> {
    this.manager.stopAll('synthetic engine closing');
    this.scheduler.close();
    this.http.closeAllConnections();
    await Promise.all([new Promise<void>((resolve) => this.http.close(() => resolve())), this.socket.close().catch(() => undefined)]);
  }

  private loopSource(defaultSeconds: number): StartSource {
    return (request, _input, paddedId, events) => {
      if (request.format === 'pcm') throw new Error('the synthetic engine sends Opus only: "format" must be "opus" or "web"');
      const tone = parseToneUrl(request.url, defaultSeconds)!;
      const wire = this.bank.get(tone.hz).map((packet) => {
        const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + packet.length);
        writeFrameHeader(frame, 0, paddedId, packet.length);
        packet.copy(frame, FRAME_HEADER_BYTES);
        return frame;
      });
      return new LoopSource(wire, Math.round((tone.seconds * 1000) / FRAME_MS), tone.seconds, events);
    };
  }

  /** /stats, /tone and /fault/garbage before the engine's own routes. */
  private addLoadScriptRoutes(): void {
    const engineRoutes = this.http.listeners('request') as ((req: http.IncomingMessage, res: http.ServerResponse) => void)[];
    this.http.removeAllListeners('request');
    this.http.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      const url = new URL(req.url ?? '/', 'http://engine');
      try {
        if (url.pathname === '/stats') return sendJson(res, 200, this.counters);
        if (url.pathname === '/tone') {
          const hz = Number(url.searchParams.get('hz'));
          if (!(hz >= 1 && hz < 24_000)) throw new HttpError(400, '?hz must be a frequency from 1 to 23999');
          const bytes = serializeLoop(this.bank.get(hz));
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length });
          res.end(bytes);
          return;
        }
        if (url.pathname === '/fault/garbage') {
          if (req.method !== 'POST') throw new HttpError(405, 'use POST');
          const kind = url.searchParams.get('kind') as GarbageKind;
          if (!GARBAGE_KINDS.includes(kind)) throw new HttpError(400, `?kind must be one of ${GARBAGE_KINDS.join(', ')}`);
          return sendJson(res, 200, { written: this.injectGarbage(kind), kind });
        }
      } catch (err) {
        return sendError(res, err);
      }
      for (const route of engineRoutes) route(req, res);
    });
  }
}

export function startSyntheticEngine(options: SyntheticEngineOptions): Promise<SyntheticEngine> {
  return SyntheticEngine.start(options);
}
