/**
 * A WebSocket listener for tests, speaking the listener protocol (src/shared/listener-protocol.ts):
 * keeps every binary frame with its arrival time, every JSON event, and decodes the Opus packets
 * with @discordjs/opus to check what was heard.
 */
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { parseListenerFrame, type ListenerEvent } from '../../src/shared/listener-protocol.js';
import { CHANNELS, SAMPLE_RATE } from '../../src/shared/audio.js';
import { channel, dominantFrequency } from './audio-analysis.js';

const require = createRequire(import.meta.url);
const { OpusEncoder } = require('@discordjs/opus') as typeof import('@discordjs/opus');

export interface ReceivedFrame {
  seq: number;
  timestamp: number;
  /** performance.now() when it arrived. */
  at: number;
  payload: Buffer;
}

export class TestListener {
  readonly frames: ReceivedFrame[] = [];
  readonly events: ListenerEvent[] = [];
  private readonly waiters = new Set<() => void>();

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        const frame = parseListenerFrame(data);
        if (frame) {
          this.frames.push({ seq: frame.seq, timestamp: frame.timestamp, at: performance.now(), payload: Buffer.from(frame.payload) });
        }
      } else {
        this.events.push(JSON.parse(data.toString()) as ListenerEvent);
      }
      for (const wake of this.waiters) wake();
    });
  }

  /** `token`: CHORUS_TOKEN or the session's listen token, sent as ?token= (as the web page does). */
  static async connect(gatewayUrl: string, sessionId: string, token?: string): Promise<TestListener> {
    const query = token === undefined ? '' : `&token=${encodeURIComponent(token)}`;
    const ws = new WebSocket(`${gatewayUrl.replace(/^http/, 'ws')}/ws?session=${encodeURIComponent(sessionId)}${query}`);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new TestListener(ws);
  }

  /** Resolves once `done()` holds, re-checked on every message. */
  until(done: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; ${this.frames.length} frames, events ${JSON.stringify(this.events)}`));
      }, timeoutMs);
      const check = () => {
        if (!done()) return;
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve();
      };
      this.waiters.add(check);
    });
  }

  waitForEvent(type: ListenerEvent['type'], timeoutMs = 10_000, match: (e: ListenerEvent) => boolean = () => true): Promise<ListenerEvent> {
    const find = () => this.events.find((e) => e.type === type && match(e));
    return this.until(() => find() !== undefined, timeoutMs, `a ${type} event`).then(() => find()!);
  }

  waitForFrames(count: number, timeoutMs = 10_000): Promise<void> {
    return this.until(() => this.frames.length >= count, timeoutMs, `${count} frames`);
  }

  /** Stops reading from the socket (the kernel buffers fill, then the gateway sees it). */
  pause(): void {
    this.ws.pause();
  }

  resume(): void {
    this.ws.resume();
  }

  /** The frames' Opus packets decoded to s16le stereo PCM, in order. */
  decode(from = 0, to = this.frames.length): Buffer {
    const decoder = new OpusEncoder(SAMPLE_RATE, CHANNELS);
    return Buffer.concat(this.frames.slice(from, to).map((f) => decoder.decode(f.payload)));
  }

  /** Dominant frequency of what was heard, skipping the first frames (Opus's start-up). */
  heardFrequency(skip = 5): number {
    return dominantFrequency(channel(this.decode()).subarray(skip * 960), SAMPLE_RATE, 100, 2000);
  }

  /** Seq numbers that are not exactly one more than the frame before. */
  seqBreaks(): { index: number; from: number; to: number }[] {
    const out = [];
    for (let i = 1; i < this.frames.length; i++) {
      const from = this.frames[i - 1]!.seq;
      const to = this.frames[i]!.seq;
      if (to !== ((from + 1) >>> 0)) out.push({ index: i, from, to });
    }
    return out;
  }

  /** Largest gap between arrivals (ms) among frames that arrived within [from, to). */
  maxGap(from = -Infinity, to = Infinity): number {
    let max = 0;
    for (let i = 1; i < this.frames.length; i++) {
      const a = this.frames[i - 1]!.at;
      const b = this.frames[i]!.at;
      if (a >= from && b < to) max = Math.max(max, b - a);
    }
    return max;
  }

  close(): void {
    this.ws.close();
  }
}
