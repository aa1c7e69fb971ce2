/**
 * Session slots on piscina's worker threads. A slot is one long-running piscina task driven
 * over comlink (src/shared/worker-messages.ts); up to CHORUS_SESSIONS_PER_THREAD slots share a
 * thread. CHORUS_PREWARM_THREADS slots are kept started ahead of need, so a new session attaches
 * to a running thread at once instead of waiting ~40 ms for one to boot; taking one starts its
 * replacement in the background.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import * as Comlink from 'comlink';
import { Piscina } from 'piscina';
import type { AttachResult, EgressMessage, SessionInit, SlotApi, SlotResult, SlotTask } from '../../shared/worker-messages.js';
import { logger } from '../../shared/log.js';

const log = logger('gateway');
const WORKER_FILE = new URL('../../workers/session-worker.js', import.meta.url);
/** Idle threads above the pre-warmed ones live this long, to be reused by the next sessions. */
const IDLE_THREAD_MS = 30_000;

export class SlotEndedError extends Error {
  override name = 'SlotEndedError';
}

/** One slot: its comlink proxy and the piscina task that runs it. */
export class Slot {
  readonly api: Comlink.Remote<SlotApi>;
  /** Settles when the slot's task ends: its result, or the error that killed its thread. */
  readonly done: Promise<SlotResult>;
  private ended = false;
  private readonly endedSignal: Promise<never>;

  constructor(
    private readonly port: MessagePort,
    task: Promise<SlotResult>,
  ) {
    this.api = Comlink.wrap<SlotApi>(port as unknown as Comlink.Endpoint);
    this.done = task.finally(() => {
      this.ended = true;
      this.api[Comlink.releaseProxy]();
      port.close();
    });
    this.endedSignal = this.done.then(
      () => Promise.reject(new SlotEndedError('session slot has ended')),
      (err: Error) => Promise.reject(new SlotEndedError(`session thread failed: ${err.message}`)),
    );
    // Nobody need wait on it for the slot to be tidy.
    this.endedSignal.catch(() => undefined);
  }

  get alive(): boolean {
    return !this.ended;
  }

  /** A call into the slot that fails (instead of hanging) if the slot's thread dies meanwhile. */
  call<T>(fn: (api: Comlink.Remote<SlotApi>) => Promise<T>): Promise<T> {
    if (this.ended) return Promise.reject(new SlotEndedError('session slot has ended'));
    return Promise.race([fn(this.api), this.endedSignal]);
  }
}

export interface SlotPoolOptions {
  sessionsPerThread: number;
  prewarm: number;
  maxSessions: number;
}

export class SlotPool {
  private readonly piscina: Piscina;
  private readonly warm: Slot[] = [];
  private starting = 0;
  private closed = false;
  private readonly egressPorts = new Set<MessagePort>();

  constructor(
    private readonly options: SlotPoolOptions,
    private readonly onEgress: (message: EgressMessage) => void,
  ) {
    const k = options.sessionsPerThread;
    const maxThreads = Math.ceil(options.maxSessions / k) + Math.max(1, options.prewarm);
    this.piscina = new Piscina({
      filename: WORKER_FILE.href,
      minThreads: Math.min(maxThreads, Math.ceil(options.prewarm / k)),
      maxThreads,
      concurrentTasksPerWorker: k,
      idleTimeout: IDLE_THREAD_MS,
      // Slots keep timers and ports open between ticks: their threads must never block in
      // Atomics.wait waiting for piscina's next task.
      atomics: 'disabled',
      recordTiming: false,
    });
    this.piscina.on('error', (err: Error) => log.error('session thread error', { message: err.message }));
    this.refill();
  }

  /** Worker threads alive now. */
  get threads(): number {
    return this.piscina.threads.length;
  }

  /** A running slot with `init` attached to it. */
  async attach(init: SessionInit): Promise<{ slot: Slot; threadId: number }> {
    const slot = this.warm.shift() ?? (await this.start());
    this.refill();
    const result: AttachResult = await slot.call((api) => api.attach(init));
    if (result.egress) this.listen(result.egress);
    return { slot, threadId: result.threadId };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const slot of this.warm.splice(0)) void slot.call((api) => api.close()).catch(() => undefined);
    for (const port of this.egressPorts) port.close();
    await this.piscina.destroy();
  }

  private listen(port: MessagePort): void {
    this.egressPorts.add(port);
    port.on('message', this.onEgress);
    port.on('close', () => this.egressPorts.delete(port));
  }

  /** Starts a slot and resolves once it runs on a thread. */
  private async start(): Promise<Slot> {
    const { port1, port2 } = new MessageChannel();
    const task: SlotTask = { port: port2 };
    const slot = new Slot(port1, this.piscina.run(task, { transferList: [port2] }) as Promise<SlotResult>);
    await slot.call((api) => api.ready());
    return slot;
  }

  private refill(): void {
    while (!this.closed && this.warm.length + this.starting < this.options.prewarm) {
      this.starting++;
      this.start().then(
        (slot) => {
          this.starting--;
          if (this.closed) void slot.call((api) => api.close()).catch(() => undefined);
          else this.warm.push(slot);
          // A warm slot whose thread dies is no longer warm.
          slot.done.catch(() => {
            const i = this.warm.indexOf(slot);
            if (i >= 0) this.warm.splice(i, 1);
            this.refill();
          });
        },
        (err: Error) => {
          this.starting--;
          if (!this.closed) log.error('could not start a session thread', { message: err.message });
        },
      );
    }
  }
}
