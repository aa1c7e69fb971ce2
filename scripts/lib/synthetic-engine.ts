/**
 * A synthetic engine for load tests and benchmarks: the real engine's outside (its frame socket
 * and the HTTP subset the gateway calls) with none of its work inside. Each session replays a
 * pre-encoded loop of its tone's Opus packets (scripts/lib/tones.ts), so what a load test
 * measures is the gateway, not ffmpeg or an encoder.
 *
 *   Socket   a Unix socket server (one gateway at a time; a newer connection replaces the older).
 *            Frames `u32be len · 24-byte id · Opus` and JSON events, src/shared/protocol.ts.
 *            `ready` (with `play`) before a play's first frame, `finished` after its last.
 *   Flow     pacing 'engine' (default) is the real engine's:
 *              - credit mode: it sends `hello` on connect; from the first `credit` line on, a
 *                session gets exactly the frames granted, as fast as the socket takes them;
 *              - before any credit (and always with `seed: true`, which sends no hello, like the
 *                seed engine) each session is paced at real time, one frame per 20 ms on its own
 *                drift-free deadline (integer milliseconds; one more than 100 ms behind
 *                restarts its clock, as the real engine does).
 *            pacing 'flood' ignores time and credit: every streaming session's frames go out as
 *            fast as the socket drains (for demux-throughput benchmarks).
 *   HTTP     POST /session/:id/play {"url":"tone:<hz>[?seconds=n]","format"?}, stop, pause,
 *            resume; GET /session/:id/status, /health, /metrics — what the gateway calls. And,
 *            for load scripts: GET /stats (the counters), GET /tone?hz=H (a tone's loop packets,
 *            tones.ts serialisation), POST /fault/garbage?kind=oversized-length|truncated-id|
 *            invalid-json.
 *   Cost     one interval timer for every paced session (a 20-slot wheel of 1 ms buckets: a
 *            session sits in the slot of its phase, so a tick touches only the sessions due),
 *            no timer at all in credit mode, and every unit of one pump copied into one buffer
 *            and written with one write() — the frames are pre-built (header and payload) per
 *            session, so a frame costs one memcpy.
 *   Faults   injectGarbage(kind): 'invalid-json' writes a bad event line (non-fatal for a
 *            gateway); 'oversized-length' (a 1 MiB length) and 'truncated-id' (a length shorter
 *            than the 24-byte id) are fatal: after one, nothing more is written on that
 *            connection (frames before it are all in the stream; none after it is lost), the
 *            gateway is expected to drop it and reconnect; sessions go on on the new connection.
 *
 * Programmatic use (in-process, e.g. a benchmark):
 *   const engine = await startSyntheticEngine({ socketPath, httpPort: 0 });
 *   engine.httpUrl; engine.counters; engine.injectGarbage('oversized-length'); await engine.close();
 * As a process: scripts/lib/synthetic-engine-main.ts.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { FRAME_MS } from '../../src/shared/audio.js';
import {
  encodeEvent,
  FRAME_HEADER_BYTES,
  HELLO,
  paddedSessionId,
  sessionIdError,
  WireDecoder,
  writeFrameHeader,
  type SessionEvent,
} from '../../src/shared/protocol.js';
import { LOOP_FRAMES, parseToneUrl, serializeLoop, ToneBank } from './tones.js';

export type GarbageKind = 'oversized-length' | 'truncated-id' | 'invalid-json';
export const GARBAGE_KINDS: readonly GarbageKind[] = ['oversized-length', 'truncated-id', 'invalid-json'];

export interface SyntheticEngineOptions {
  socketPath: string;
  /** HTTP port; 0 (default) picks a free one. */
  httpPort?: number;
  httpHost?: string;
  /** Seed engine: no `hello`, no `play` numbers, real-time pacing only, whatever is written back. */
  seed?: boolean;
  pacing?: 'engine' | 'flood';
  /** Period of the pacing timer, ms. */
  tickMs?: number;
  bank?: ToneBank;
  maxSessions?: number;
  /** Length of a `tone:` URL without `?seconds=`. */
  defaultSeconds?: number;
  /** A write is issued once this many bytes are gathered (and at the end of every pump). */
  writeChunkBytes?: number;
}

export interface SyntheticCounters {
  connections: number;
  plays: number;
  framesSent: number;
  eventsSent: number;
  bytesSent: number;
  writes: number;
  drainWaits: number;
  creditLines: number;
  creditFrames: number;
  /** Bytes a gateway wrote to a seed-mode engine (a seed-compatible gateway writes none). */
  bytesReceivedInSeedMode: number;
  protocolErrors: number;
  garbageWritten: number;
  /** Fatal garbage the gateway did not answer by dropping the connection within 3 s. */
  garbageNotDropped: number;
  ticks: number;
  /** Paced frames that left more than 2 ms after their deadline (the engine's own lateness). */
  pacedLate: number;
  /** Largest lateness of a paced frame, ms. */
  pacedMaxLateMs: number;
}

type SynState = 'starting' | 'streaming' | 'paused' | 'finished' | 'stopped';

class SynSession {
  state: SynState = 'starting';
  /** `ready` went out: a resume goes straight to frames. */
  readySent = false;
  /** Loop position of the next frame. */
  cursor = 0;
  sent = 0;
  credit = 0;
  /** Integer ms (performance.now()) of the next paced frame; its wheel slot is nextDue % 20. */
  nextDue = Number.NaN;
  slot = -1;

  constructor(
    readonly id: string,
    readonly play: number,
    readonly hz: number,
    readonly seconds: number,
    readonly total: number,
    /** Whole wire frames (header and payload) of the loop. */
    readonly wire: readonly Buffer[],
  ) {}

  get live(): boolean {
    return this.state === 'starting' || this.state === 'streaming' || this.state === 'paused';
  }
}

const WHEEL_SLOTS = FRAME_MS;
/** The real engine's rule: a session this far behind restarts its clock instead of bursting. */
const MAX_LATE_MS = 100;
const GARBAGE_DROP_TIMEOUT_MS = 3000;

/** Gathers wire units into large buffers; one write() per buffer. */
class Output {
  private chunk: Buffer;
  private used = 0;
  blocked = false;

  constructor(
    private readonly size: number,
    private readonly counters: SyntheticCounters,
    private socket: net.Socket | undefined,
    private readonly onBlocked: (socket: net.Socket) => void,
  ) {
    this.chunk = Buffer.allocUnsafeSlow(size);
  }

  reset(socket: net.Socket | undefined): void {
    this.socket = socket;
    this.used = 0;
    this.blocked = false;
  }

  put(unit: Buffer): void {
    if (this.used + unit.length > this.chunk.length) this.flush();
    if (unit.length > this.chunk.length) {
      this.write(unit);
      return;
    }
    unit.copy(this.chunk, this.used);
    this.used += unit.length;
  }

  flush(): void {
    if (this.used === 0) return;
    const out = this.chunk.subarray(0, this.used);
    this.chunk = Buffer.allocUnsafeSlow(this.size);
    this.used = 0;
    this.write(out);
  }

  private write(buf: Buffer): void {
    const socket = this.socket;
    if (!socket || socket.destroyed) return;
    this.counters.writes++;
    this.counters.bytesSent += buf.length;
    if (!socket.write(buf) && !this.blocked) {
      this.blocked = true;
      this.counters.drainWaits++;
      this.onBlocked(socket);
    }
  }
}

export class SyntheticEngine {
  readonly counters: SyntheticCounters = {
    connections: 0,
    plays: 0,
    framesSent: 0,
    eventsSent: 0,
    bytesSent: 0,
    writes: 0,
    drainWaits: 0,
    creditLines: 0,
    creditFrames: 0,
    bytesReceivedInSeedMode: 0,
    protocolErrors: 0,
    garbageWritten: 0,
    garbageNotDropped: 0,
    ticks: 0,
    pacedLate: 0,
    pacedMaxLateMs: 0,
  };
  readonly bank: ToneBank;
  readonly seed: boolean;
  readonly pacing: 'engine' | 'flood';
  private readonly sessions = new Map<string, SynSession>();
  private readonly starting = new Set<SynSession>();
  private readonly creditReady = new Set<SynSession>();
  private readonly wheel: Set<SynSession>[] = Array.from({ length: WHEEL_SLOTS }, () => new Set());
  private paced = 0;
  private lastTickMs = -1;
  private ticker: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private readonly server = net.createServer((socket) => this.accept(socket));
  private readonly http: http.Server;
  private socket: net.Socket | undefined;
  /** A fatal garbage unit went out on the current connection: write nothing more to it. */
  private poisoned = false;
  private creditMode = false;
  private readonly out: Output;
  private readonly tickMs: number;
  private readonly maxSessions: number;
  private readonly defaultSeconds: number;
  httpUrl = '';
  httpPort = 0;

  private constructor(readonly options: SyntheticEngineOptions) {
    this.bank = options.bank ?? new ToneBank();
    this.seed = options.seed ?? false;
    this.pacing = options.pacing ?? 'engine';
    this.tickMs = options.tickMs ?? 1;
    this.maxSessions = options.maxSessions ?? 100_000;
    this.defaultSeconds = options.defaultSeconds ?? 30;
    this.out = new Output(options.writeChunkBytes ?? 256 * 1024, this.counters, undefined, (socket) => {
      socket.once('drain', () => {
        if (socket !== this.socket) return;
        this.out.blocked = false;
        this.kick();
      });
    });
    this.http = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        const status = err instanceof HttpFailure ? err.status : 500;
        sendJson(res, status, { error: err instanceof Error ? err.message : String(err) });
      });
    });
  }

  static async start(options: SyntheticEngineOptions): Promise<SyntheticEngine> {
    const engine = new SyntheticEngine(options);
    await engine.listen();
    return engine;
  }

  get socketPath(): string {
    return this.options.socketPath;
  }

  get connected(): boolean {
    return this.socket !== undefined;
  }

  get mode(): 'seed' | 'paced' | 'credit' | 'flood' {
    if (this.pacing === 'flood') return 'flood';
    if (this.seed) return 'seed';
    return this.creditMode ? 'credit' : 'paced';
  }

  get liveSessions(): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.live) n++;
    return n;
  }

  // ---- control (HTTP calls these; a benchmark may call them directly) ----

  /** Starts (or replaces) a play of `id`. Returns the play number. */
  play(id: string, url: string): number {
    const bad = sessionIdError(id);
    if (bad) throw new HttpFailure(400, bad);
    const tone = parseToneUrl(url, this.defaultSeconds);
    if (!tone) throw new HttpFailure(400, `the synthetic engine plays only tone:<hz>[?seconds=n], not ${JSON.stringify(url)}`);
    const old = this.sessions.get(id);
    if (!old?.live && this.liveSessions >= this.maxSessions) throw new HttpFailure(429, `session limit reached: ${this.maxSessions}`);
    if (old) this.end(old, 'stopped');
    const padded = paddedSessionId(id);
    const wire = this.bank.get(tone.hz).map((packet) => {
      const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + packet.length);
      writeFrameHeader(frame, 0, padded, packet.length);
      packet.copy(frame, FRAME_HEADER_BYTES);
      return frame;
    });
    const total = Math.round((tone.seconds * 1000) / FRAME_MS);
    const session = new SynSession(id, (old?.play ?? 0) + 1, tone.hz, tone.seconds, total, wire);
    this.sessions.set(id, session);
    this.starting.add(session);
    this.counters.plays++;
    this.kick();
    return session.play;
  }

  stop(id: string): SynSession {
    const s = this.need(id);
    if (s.live) this.end(s, 'stopped');
    return s;
  }

  pause(id: string): SynSession {
    const s = this.need(id);
    if (s.state === 'streaming') {
      s.state = 'paused';
      this.unpace(s);
      this.creditReady.delete(s);
    } else if (s.state === 'starting') {
      // Paused before its first frame: `ready` still goes out first on resume.
      s.state = 'paused';
      this.starting.delete(s);
    } else if (s.state !== 'paused') {
      throw new HttpFailure(409, `session is ${s.state}; only a playing session can be paused`);
    }
    return s;
  }

  resume(id: string): SynSession {
    const s = this.need(id);
    if (s.state === 'starting' || s.state === 'streaming') return s;
    if (s.state !== 'paused') throw new HttpFailure(409, `session is ${s.state}; only a paused session can be resumed`);
    if (!s.readySent) {
      s.state = 'starting';
      this.starting.add(s);
    } else {
      s.state = 'streaming';
      this.enqueue(s, performance.now());
    }
    this.kick();
    return s;
  }

  status(id: string): Record<string, unknown> {
    const s = this.need(id);
    return {
      session_id: s.id,
      ...(this.seed ? {} : { play: s.play }),
      state: s.state,
      url: `tone:${s.hz}?seconds=${s.seconds}`,
      duration: s.seconds,
      frames_sent: s.sent,
      credit: s.credit,
    };
  }

  /** Writes a malformed unit on the current connection (see the file comment). */
  injectGarbage(kind: GarbageKind): boolean {
    const socket = this.socket;
    if (!socket || this.poisoned) return false;
    this.pump();
    this.out.flush();
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
    this.counters.garbageWritten++;
    this.out.put(unit);
    this.out.flush();
    if (kind !== 'invalid-json') {
      this.poisoned = true;
      const timer = setTimeout(() => {
        if (this.socket === socket) {
          this.counters.garbageNotDropped++;
          socket.destroy();
        }
      }, GARBAGE_DROP_TIMEOUT_MS);
      timer.unref();
      socket.once('close', () => clearTimeout(timer));
    }
    return true;
  }

  async close(): Promise<void> {
    clearInterval(this.ticker);
    this.ticker = undefined;
    clearImmediate(this.immediate);
    this.socket?.destroy();
    this.http.closeAllConnections();
    await Promise.all([
      new Promise<void>((resolve) => this.server.close(() => resolve())),
      new Promise<void>((resolve) => this.http.close(() => resolve())),
    ]);
    fs.rmSync(this.options.socketPath, { force: true });
  }

  // ---- the socket ----

  private async listen(): Promise<void> {
    await removeStaleSocket(this.options.socketPath);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.socketPath, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    fs.chmodSync(this.options.socketPath, 0o600);
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(this.options.httpPort ?? 0, this.options.httpHost ?? '127.0.0.1', () => {
        this.http.off('error', reject);
        resolve();
      });
    });
    this.httpPort = (this.http.address() as AddressInfo).port;
    const host = this.options.httpHost ?? '127.0.0.1';
    this.httpUrl = `http://${host.includes(':') ? `[${host}]` : host}:${this.httpPort}`;
  }

  private accept(socket: net.Socket): void {
    this.counters.connections++;
    this.socket?.destroy();
    this.socket = socket;
    this.poisoned = false;
    this.creditMode = false;
    this.out.reset(socket);
    socket.setNoDelay?.(true);
    const decoder = new WireDecoder({
      frame: () => {
        this.counters.protocolErrors++;
        socket.destroy();
      },
      event: (event) => {
        if (event.type !== 'credit') return;
        this.counters.creditLines++;
        this.counters.creditFrames += event.frames;
        this.grant(event.session_id, event.frames);
      },
      error: (err) => {
        if (err.fatal) {
          this.counters.protocolErrors++;
          socket.destroy();
        }
      },
    });
    socket.on('data', (chunk: Buffer) => {
      if (this.seed) this.counters.bytesReceivedInSeedMode += chunk.length;
      else if (socket === this.socket) decoder.push(chunk);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      this.out.reset(undefined);
      this.stopTicker();
    });
    // Every session starts over on a new connection: no credit, paced from now until granted.
    const now = performance.now();
    this.creditReady.clear();
    this.clearWheel();
    for (const s of this.sessions.values()) {
      s.credit = 0;
      if (s.state === 'streaming') this.enqueue(s, now);
    }
    if (!this.seed) {
      this.out.put(encodeEvent(HELLO));
      this.counters.eventsSent++;
      this.out.flush();
    }
    this.kick();
  }

  private grant(id: string, frames: number): void {
    if (this.seed || this.pacing === 'flood') return;
    if (!this.creditMode) {
      // From the first credit on, the window alone decides: nothing is paced any more.
      this.creditMode = true;
      this.clearWheel();
      for (const s of this.sessions.values()) if (s.state === 'streaming' && s.credit > 0) this.creditReady.add(s);
    }
    const s = this.sessions.get(id);
    if (!s || !s.live) return;
    s.credit = Math.min(s.credit + frames, Number.MAX_SAFE_INTEGER);
    if (s.state === 'streaming') this.creditReady.add(s);
    this.kick();
  }

  // ---- sending ----

  private kick(): void {
    this.immediate ??= setImmediate(() => {
      this.immediate = undefined;
      this.pump();
      this.out.flush();
    });
  }

  /** Everything sendable now goes into the output (flushed by the caller). */
  private pump(): void {
    if (!this.socket || this.poisoned || this.out.blocked) return;
    const now = performance.now();
    for (const s of this.starting) {
      this.starting.delete(s);
      if (s.state !== 'starting') continue;
      this.event(s.play, { type: 'ready', session_id: s.id, duration: s.seconds });
      s.readySent = true;
      s.state = 'streaming';
      this.enqueue(s, now);
      if (this.out.blocked) return;
    }
    if (this.pacing === 'flood') return this.flood();
    if (this.creditMode) {
      for (const s of this.creditReady) {
        while (s.credit > 0 && s.state === 'streaming' && !this.out.blocked) {
          s.credit--;
          this.frame(s);
        }
        if (this.out.blocked) return;
        this.creditReady.delete(s);
      }
      return;
    }
    this.tick(now);
  }

  /** Paced sending: every session whose slot came round since the last tick. */
  private tick(now: number): void {
    const nowMs = Math.floor(now);
    let from = this.lastTickMs < 0 ? nowMs - WHEEL_SLOTS + 1 : this.lastTickMs + 1;
    if (nowMs - from >= WHEEL_SLOTS) from = nowMs - WHEEL_SLOTS + 1;
    for (let ms = from; ms <= nowMs; ms++) {
      const slot = this.wheel[((ms % WHEEL_SLOTS) + WHEEL_SLOTS) % WHEEL_SLOTS]!;
      for (const s of slot) {
        if (this.out.blocked) {
          this.lastTickMs = ms - 1;
          return;
        }
        if (s.nextDue > now) continue;
        if (now - s.nextDue > MAX_LATE_MS) {
          this.repace(s, now);
          if (s.nextDue > now) continue;
        }
        while (s.nextDue <= now && s.state === 'streaming' && !this.out.blocked) {
          const late = now - s.nextDue;
          if (late > 2) this.counters.pacedLate++;
          if (late > this.counters.pacedMaxLateMs) this.counters.pacedMaxLateMs = late;
          s.nextDue += FRAME_MS;
          this.frame(s);
        }
      }
    }
    this.lastTickMs = nowMs;
  }

  private flood(): void {
    const live: SynSession[] = [];
    for (const s of this.sessions.values()) if (s.state === 'streaming') live.push(s);
    if (live.length === 0) return;
    let budget = 64;
    while (!this.out.blocked && budget-- > 0) {
      for (const s of live) if (s.state === 'streaming') this.frame(s);
    }
    if (!this.out.blocked) this.kick();
  }

  private frame(s: SynSession): void {
    this.out.put(s.wire[s.cursor]!);
    s.cursor = (s.cursor + 1) % LOOP_FRAMES;
    s.sent++;
    this.counters.framesSent++;
    if (s.sent >= s.total) {
      this.event(s.play, { type: 'finished', session_id: s.id });
      this.end(s, 'finished');
    }
  }

  private event(play: number, event: SessionEvent): void {
    const withPlay = this.seed ? event : { ...event, play };
    this.out.put(encodeEvent(withPlay as SessionEvent));
    this.counters.eventsSent++;
  }

  private end(s: SynSession, state: 'finished' | 'stopped'): void {
    s.state = state;
    this.starting.delete(s);
    this.creditReady.delete(s);
    this.unpace(s);
  }

  // ---- the pacing wheel ----

  /** A streaming session becomes sendable: paced from `now`, or by its credit. */
  private enqueue(s: SynSession, now: number): void {
    if (this.pacing === 'flood') return;
    if (this.creditMode) {
      if (s.credit > 0) this.creditReady.add(s);
      return;
    }
    this.repace(s, now);
  }

  private repace(s: SynSession, now: number): void {
    this.unpace(s);
    s.nextDue = Math.ceil(now);
    s.slot = s.nextDue % WHEEL_SLOTS;
    this.wheel[s.slot]!.add(s);
    this.paced++;
    this.startTicker();
  }

  private unpace(s: SynSession): void {
    if (s.slot < 0) return;
    this.wheel[s.slot]!.delete(s);
    s.slot = -1;
    this.paced--;
    if (this.paced === 0) this.stopTicker();
  }

  private clearWheel(): void {
    for (const slot of this.wheel) {
      for (const s of slot) s.slot = -1;
      slot.clear();
    }
    this.paced = 0;
    this.stopTicker();
  }

  private startTicker(): void {
    if (this.ticker || !this.socket) return;
    this.lastTickMs = -1;
    this.ticker = setInterval(() => {
      this.counters.ticks++;
      this.pump();
      this.out.flush();
    }, this.tickMs);
  }

  private stopTicker(): void {
    clearInterval(this.ticker);
    this.ticker = undefined;
  }

  // ---- HTTP ----

  private need(id: string): SynSession {
    const s = this.sessions.get(id);
    if (!s) throw new HttpFailure(404, `no session ${JSON.stringify(id)}`);
    return s;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://engine');
    const method = req.method ?? 'GET';
    const body = await readBody(req);
    if (url.pathname === '/health') {
      return sendJson(res, 200, {
        status: 'ok',
        synthetic: true,
        sessions: this.liveSessions,
        gateway_connected: this.connected,
        flow: this.mode,
      });
    }
    if (url.pathname === '/stats') return sendJson(res, 200, this.counters);
    if (url.pathname === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(Object.entries(this.counters).map(([k, v]) => `synthetic_engine_${k} ${v}`).join('\n') + '\n');
      return;
    }
    if (url.pathname === '/tone') {
      const hz = Number(url.searchParams.get('hz'));
      if (!(hz >= 1 && hz < 24_000)) throw new HttpFailure(400, '?hz must be a frequency from 1 to 23999');
      const bytes = serializeLoop(this.bank.get(hz));
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length });
      res.end(bytes);
      return;
    }
    if (url.pathname === '/fault/garbage') {
      if (method !== 'POST') throw new HttpFailure(405, 'use POST');
      const kind = url.searchParams.get('kind') as GarbageKind;
      if (!GARBAGE_KINDS.includes(kind)) throw new HttpFailure(400, `?kind must be one of ${GARBAGE_KINDS.join(', ')}`);
      return sendJson(res, 200, { written: this.injectGarbage(kind), kind });
    }
    const m = /^\/session\/([^/]+)\/(play|stop|pause|resume|status)$/.exec(url.pathname);
    if (!m) throw new HttpFailure(404, `no route ${method} ${url.pathname}`);
    const id = decodeURIComponent(m[1]!);
    const action = m[2]!;
    if (method !== (action === 'status' ? 'GET' : 'POST')) throw new HttpFailure(405, `method ${method} not allowed`);
    switch (action) {
      case 'play': {
        let parsed: unknown;
        try {
          parsed = JSON.parse(body || '{}');
        } catch {
          throw new HttpFailure(400, 'body is not JSON');
        }
        const { url: source, format } = parsed as { url?: unknown; format?: unknown };
        if (typeof source !== 'string') throw new HttpFailure(400, 'body needs a "url" string');
        if (format !== undefined && format !== 'opus' && format !== 'web') {
          throw new HttpFailure(400, 'the synthetic engine sends Opus only: "format" must be "opus" or "web"');
        }
        this.play(id, source);
        return sendJson(res, 200, this.status(id));
      }
      case 'stop':
        this.stop(id);
        break;
      case 'pause':
        this.pause(id);
        break;
      case 'resume':
        this.resume(id);
        break;
    }
    return sendJson(res, 200, this.status(id));
  }
}

export function startSyntheticEngine(options: SyntheticEngineOptions): Promise<SyntheticEngine> {
  return SyntheticEngine.start(options);
}

class HttpFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > 64 * 1024) {
        reject(new HttpFailure(413, 'body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Removes a socket file left by a killed engine; refuses one a live process still serves. */
async function removeStaleSocket(socketPath: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(socketPath);
  } catch {
    return;
  }
  if (!stat.isSocket()) throw new Error(`${socketPath} exists and is not a socket`);
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new Error(`${socketPath} is in use by a running engine`);
  fs.rmSync(socketPath, { force: true });
}
