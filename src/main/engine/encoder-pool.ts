/**
 * The engine's Opus encoder threads (src/workers/opus-encoder.ts) with session affinity: a play
 * opens one encoder on the least loaded thread and every batch of that play goes to that thread,
 * so one encoder instance sees all of its frames. Replies come back in order per thread, hence
 * in order per play.
 */
import { Worker } from 'node:worker_threads';
import type { EncoderReply, EncoderRequest } from '../../workers/opus-encoder.js';
import { logger } from '../../shared/log.js';

const log = logger('engine.encoder');
const WORKER_URL = new URL('../../workers/opus-encoder.js', import.meta.url);

export interface EncoderClient {
  /** Wire frames `frames[0, bytes)`, back to back, for `count` PCM frames, in the order sent. */
  encoded(frames: Buffer, count: number): void;
  failed(message: string): void;
}

interface Thread {
  worker: Worker;
  plays: number;
}

export class EncoderPool {
  private readonly threads: Thread[] = [];
  private readonly clients = new Map<number, { thread: Thread; client: EncoderClient }>();
  private nextHandle = 1;
  private closing = false;
  /** Frames encoded since start, for /metrics. */
  framesEncoded = 0;

  constructor(size: number) {
    for (let i = 0; i < size; i++) this.threads.push(this.spawn());
  }

  /** A new encoder for one play; returns its handle. */
  open(paddedId: string, bitrate: number, complexity: number, client: EncoderClient): number {
    const thread = this.threads.reduce((a, b) => (b.plays < a.plays ? b : a));
    const handle = this.nextHandle++;
    thread.plays++;
    this.clients.set(handle, { thread, client });
    this.post(thread, { op: 'open', handle, paddedId, bitrate, complexity });
    return handle;
  }

  /** `pcm` holds whole PCM frames and is transferred: the caller must not touch it again. */
  encode(handle: number, pcm: ArrayBuffer): void {
    const entry = this.clients.get(handle);
    if (entry) this.post(entry.thread, { op: 'encode', handle, pcm }, [pcm]);
  }

  close(handle: number): void {
    const entry = this.clients.get(handle);
    if (!entry) return;
    this.clients.delete(handle);
    entry.thread.plays--;
    this.post(entry.thread, { op: 'close', handle });
  }

  get size(): number {
    return this.threads.length;
  }

  async destroy(): Promise<void> {
    this.closing = true;
    await Promise.all(this.threads.map((t) => t.worker.terminate()));
  }

  private post(thread: Thread, message: EncoderRequest, transfer: ArrayBuffer[] = []): void {
    thread.worker.postMessage(message, transfer);
  }

  private spawn(): Thread {
    const thread: Thread = { worker: new Worker(WORKER_URL), plays: 0 };
    thread.worker.on('message', (reply: EncoderReply) => {
      const entry = this.clients.get(reply.handle);
      if (!entry) return; // a play closed while its batch was in the thread
      if (reply.op === 'encoded') {
        this.framesEncoded += reply.count;
        entry.client.encoded(Buffer.from(reply.frames, 0, reply.bytes), reply.count);
      } else {
        entry.client.failed(reply.message);
      }
    });
    thread.worker.on('error', (err) => log.error('encoder thread failed', { error: err.message }));
    // A dead thread takes its encoders with it: fail its plays alone and put a new thread in its place.
    thread.worker.on('exit', (code) => {
      if (this.closing) return;
      log.error('encoder thread exited; replacing it', { code });
      const index = this.threads.indexOf(thread);
      if (index >= 0) this.threads[index] = this.spawn();
      for (const [handle, entry] of this.clients) {
        if (entry.thread !== thread) continue;
        this.clients.delete(handle);
        entry.client.failed('the Opus encoder thread of this session exited');
      }
    });
    thread.worker.unref();
    return thread;
  }
}
