/**
 * A test stand-in for the gateway: connects to the engine's socket, reads it with the shared
 * WireDecoder, records every session's frames and events in arrival order (with times), and can
 * grant credits.
 */
import net from 'node:net';
import opus from '@discordjs/opus';
import { ALIVE, ALIVE_EVERY_MS, encodeEvent, frameKey, sessionIdOfKey, WireDecoder, type SessionEvent, type WireEvent } from '../../../src/shared/protocol.js';

export interface Unit {
  kind: 'frame' | 'event';
  at: number;
  payload?: Buffer;
  event?: SessionEvent;
}

export class SessionLog {
  readonly units: Unit[] = [];

  get frames(): Unit[] {
    return this.units.filter((u) => u.kind === 'frame');
  }

  get events(): SessionEvent[] {
    return this.units.filter((u) => u.kind === 'event').map((u) => u.event!);
  }

  /** Frames after the `ready` of play `play` (and before the next ready). */
  framesOfPlay(play: number): Unit[] {
    let current: number | undefined;
    const out: Unit[] = [];
    for (const u of this.units) {
      if (u.kind === 'event' && u.event!.type === 'ready') current = u.event!.play;
      else if (u.kind === 'frame' && current === play) out.push(u);
    }
    return out;
  }
}

export class FakeGateway {
  readonly sessions = new Map<string, SessionLog>();
  /** The engine's answer to the connection: `hello` (admitted) or `refused`. */
  readonly answer: Promise<WireEvent>;
  readonly closed: Promise<void>;
  protocolErrors = 0;
  /** The engine refused this connection (its current gateway is healthy): why. */
  refused: string | undefined;
  private readonly decoder: WireDecoder;
  private readonly waiters = new Set<() => void>();
  private aliveTimer: NodeJS.Timeout | undefined;

  private constructor(readonly socket: net.Socket) {
    let answered!: (e: WireEvent) => void;
    this.answer = new Promise((resolve) => (answered = resolve));
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    this.decoder = new WireDecoder({
      frame: (buf, idStart, payloadStart, payloadEnd) => {
        const id = sessionIdOfKey(frameKey(buf, idStart));
        this.log(id).units.push({ kind: 'frame', at: performance.now(), payload: Buffer.from(buf.subarray(payloadStart, payloadEnd)) });
        this.notify();
      },
      event: (event) => {
        if (event.type === 'hello') return answered(event);
        if (event.type === 'refused') {
          this.refused = event.reason;
          return answered(event);
        }
        if (event.type === 'credit' || event.type === 'alive') return;
        this.log(event.session_id).units.push({ kind: 'event', at: performance.now(), event });
        this.notify();
      },
      error: () => this.protocolErrors++,
    });
    socket.on('data', (chunk: Buffer) => this.decoder.push(chunk));
    socket.on('error', () => undefined);
  }

  /** Connects and waits for the engine's `hello`; throws if the engine refuses the connection. */
  static async connect(path: string): Promise<FakeGateway> {
    const gw = await FakeGateway.ask(path);
    if (gw.refused !== undefined) {
      await gw.close();
      throw new Error(`the engine refused the connection: ${gw.refused}`);
    }
    return gw;
  }

  /** Connects and waits for the engine's answer, `hello` or `refused` (then `refused` says why). */
  static async ask(path: string): Promise<FakeGateway> {
    const socket = net.connect(path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const gw = new FakeGateway(socket);
    FakeGateway.open.add(gw);
    await gw.answer;
    return gw;
  }

  /** Gateways not closed yet: see closeFakeGateways. */
  private static readonly open = new Set<FakeGateway>();

  /**
   * Closes every gateway still connected. The engine serves one gateway at a time: a test that
   * fails before its own close() would leave its gateway holding the socket, and the next tests'
   * gateways would be refused. Test files sharing an engine call this after each test.
   */
  static async closeAll(): Promise<void> {
    await Promise.all([...FakeGateway.open].map((gw) => gw.close()));
  }

  log(id: string): SessionLog {
    let log = this.sessions.get(id);
    if (!log) this.sessions.set(id, (log = new SessionLog()));
    return log;
  }

  /** Says `alive` every ALIVE_EVERY_MS, as a gateway offered the feature does, until stopAlive(). */
  keepAlive(): void {
    this.aliveTimer ??= setInterval(() => this.socket.write(encodeEvent(ALIVE)), ALIVE_EVERY_MS);
  }

  stopAlive(): void {
    clearInterval(this.aliveTimer);
    this.aliveTimer = undefined;
  }

  credit(sessionId: string, frames: number): void {
    this.socket.write(JSON.stringify({ type: 'credit', session_id: sessionId, frames }) + '\n');
  }

  /** Resolves when `check` holds (checked on every unit received), or rejects after `timeoutMs`. */
  waitFor(check: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const waiter = () => {
        if (!check()) return;
        clearTimeout(timer);
        this.waiters.delete(waiter);
        resolve();
      };
      this.waiters.add(waiter);
    });
  }

  waitForEvent<T extends SessionEvent['type']>(id: string, type: T, timeoutMs = 10_000): Promise<Extract<SessionEvent, { type: T }>> {
    const isType = (e: SessionEvent): e is Extract<SessionEvent, { type: T }> => e.type === type;
    return this.waitFor(() => this.log(id).events.some(isType), timeoutMs, `${type} of ${id}`).then(
      () => this.log(id).events.find(isType)!,
    );
  }

  async close(): Promise<void> {
    this.stopAlive();
    FakeGateway.open.delete(this);
    this.socket.destroy();
    await this.closed;
  }

  private notify(): void {
    for (const w of this.waiters) w();
  }
}

/** Decodes one session's Opus packets, in order, with one decoder: s16le 48 kHz stereo. */
export function decodeOpus(packets: Buffer[]): Buffer {
  const decoder = new opus.OpusEncoder(48_000, 2);
  return Buffer.concat(packets.map((p) => decoder.decode(p)));
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** POST/GET JSON against the engine; returns status and parsed body. */
export async function api(base: string, method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(base + path, {
    method,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    headers: body === undefined ? undefined : { 'content-type': 'application/json' },
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // /metrics is text
  }
  return { status: res.status, body: parsed };
}
