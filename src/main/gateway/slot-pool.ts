/**
 * Session slots on piscina's worker threads. A slot is one long-running piscina task driven
 * over comlink (src/shared/worker-messages.ts); up to CHORUS_SESSIONS_PER_THREAD slots share a
 * thread. Slots are kept started ahead of need, so a new session attaches to a running thread at
 * once instead of waiting for one to boot: CHORUS_PREWARM_THREADS of them with no plays coming,
 * up to CHORUS_PREWARM_MAX_THREADS while plays come fast (prewarm.ts); taking one starts its
 * replacement in the background. A session that ends gives its thread back to piscina, where the
 * next slot started reuses it (no boot). Plays that find no slot ready wait in arrival order:
 * each slot that becomes ready goes to the one that has waited longest. A slot can be taken
 * without attaching it (a play that starts on a bridge slot waits for its own), and given back
 * unused.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import * as Comlink from 'comlink';
import { Piscina } from 'piscina';
import { Doorbell, RingingEndpoint } from '../../shared/doorbell.js';
import type { AttachResult, EgressMessage, SessionInit, SlotApi, SlotResult, SlotTask } from '../../shared/worker-messages.js';
import { logger } from '../../shared/log.js';
import { PrewarmTarget } from './prewarm.js';

const log = logger('gateway');
const WORKER_FILE = new URL('../../workers/session-worker.js', import.meta.url);
/** Idle threads above the pre-warmed ones live this long, to be reused by the next sessions. */
const IDLE_THREAD_MS = 30_000;
/** How often slots started ahead beyond the play rate's need are let go. */
const TRIM_EVERY_MS = 1000;

export class SlotEndedError extends Error {
  override name = 'SlotEndedError';
}

/** One slot: its comlink proxy and the piscina task that runs it. */
export class Slot {
  readonly api: Comlink.Remote<SlotApi>;
  private readonly endpoint: RingingEndpoint;
  /** Settles when the slot's task ends: its result, or the error that killed its thread. */
  readonly done: Promise<SlotResult>;
  private ended = false;
  private readonly endedSignal: Promise<never>;

  constructor(
    private readonly port: MessagePort,
    task: Promise<SlotResult>,
  ) {
    this.endpoint = new RingingEndpoint(port);
    this.api = Comlink.wrap<SlotApi>(this.endpoint);
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

  /** Rings the thread's doorbell after each call from now on: `memory` is its answer to ready(). */
  ringAfterCalls(memory: SharedArrayBuffer): void {
    this.endpoint.bell = new Doorbell(memory);
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
  /** Slots kept started ahead with no plays coming. */
  prewarm: number;
  /** Most slots kept started ahead while plays come fast. */
  prewarmMax: number;
  maxSessions: number;
  /**
   * Threads booted at once at most (thread per session; default: as many as plays wait for).
   * Each boot takes ~100 ms of a core: a burst of them starves the threads already playing.
   */
  maxBooting?: number;
}

interface Waiter {
  resolve(slot: Slot): void;
  reject(err: Error): void;
}

export class SlotPool {
  private readonly piscina: Piscina;
  private readonly warm: Slot[] = [];
  /** Plays waiting for a slot, oldest first. */
  private readonly waiting: Waiter[] = [];
  private readonly target: PrewarmTarget;
  private readonly trimTimer: NodeJS.Timeout;
  private starting = 0;
  /**
   * Slots started at once. With shared threads, one at a time: piscina boots a thread for every
   * task queued while none is ready, so starting k slots together would boot k threads for them.
   */
  private readonly maxStarting: number;
  private closed = false;
  private readonly egressPorts = new Set<MessagePort>();

  constructor(
    private readonly options: SlotPoolOptions,
    private readonly onEgress: (message: EgressMessage) => void,
  ) {
    const k = options.sessionsPerThread;
    this.maxStarting = k === 1 ? (options.maxBooting ?? Infinity) : 1;
    this.target = new PrewarmTarget(options.prewarm, options.prewarmMax);
    const maxThreads = Math.ceil(options.maxSessions / k) + Math.max(1, this.target.max);
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
    this.trimTimer = setInterval(() => this.trim(), TRIM_EVERY_MS);
    this.trimTimer.unref();
    this.refill();
  }

  /** Worker threads alive now. */
  get threads(): number {
    return this.piscina.threads.length;
  }

  /** Slots started ahead now (ready, and on their way). */
  get prewarmed(): number {
    return this.warm.length + this.starting - this.waiting.length;
  }

  /** Slots started and ready to take now. */
  get ready(): number {
    return this.warm.length;
  }

  /** Slots the pool keeps started ahead now, after the recent play rate. */
  get prewarmTarget(): number {
    return this.target.value;
  }

  /** A running slot with `init` attached to it: the oldest ready one, or the next to start. */
  async attach(init: SessionInit): Promise<{ slot: Slot; threadId: number }> {
    return this.attachOn(this.tryTake() ?? (await this.take()), init);
  }

  /** A ready slot, taken now; undefined when none is (take() waits for one). */
  tryTake(): Slot | undefined {
    const slot = this.warm.shift();
    if (!slot) return undefined;
    this.target.note();
    this.refill();
    return slot;
  }

  /** The next slot ready, after the plays that waited before this one. */
  async take(): Promise<Slot> {
    this.target.note();
    const slot = await new Promise<Slot>((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.refill();
    });
    this.refill();
    return slot;
  }

  /** Attaches `init` to a slot taken from this pool. */
  async attachOn(slot: Slot, init: SessionInit): Promise<{ slot: Slot; threadId: number }> {
    const result: AttachResult = await slot.call((api) => api.attach(init));
    if (result.egress) this.listen(result.egress);
    return { slot, threadId: result.threadId };
  }

  /** A slot taken and not attached goes back: to the play that has waited longest, or ready. */
  giveBack(slot: Slot): void {
    if (this.closed || !slot.alive) {
      void slot.call((api) => api.close()).catch(() => undefined);
      return;
    }
    this.offer(slot);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.trimTimer);
    for (const w of this.waiting.splice(0)) w.reject(new SlotEndedError('gateway closing'));
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
    slot.ringAfterCalls(await slot.call((api) => api.ready()));
    return slot;
  }

  /** Starts slots until the waiting plays and the target ahead are covered. */
  private refill(): void {
    while (!this.closed && this.starting < this.maxStarting && this.warm.length + this.starting < this.target.value + this.waiting.length) {
      this.starting++;
      this.start().then(
        (slot) => {
          this.starting--;
          if (this.closed) {
            void slot.call((api) => api.close()).catch(() => undefined);
            return;
          }
          this.offer(slot);
          this.refill();
        },
        (err: Error) => {
          this.starting--;
          if (this.closed) return;
          log.error('could not start a session thread', { message: err.message });
          // The play that has waited longest gets the error (a 503), not an endless wait.
          this.waiting.shift()?.reject(err);
          if (this.waiting.length > 0) this.refill();
        },
      );
    }
  }

  /** A ready slot goes to the play that has waited longest, or waits as a warm one. */
  private offer(slot: Slot): void {
    const waiter = this.waiting.shift();
    if (waiter) return waiter.resolve(slot);
    this.warm.push(slot);
    // A warm slot whose thread dies is no longer warm.
    slot.done.catch(() => {
      const i = this.warm.indexOf(slot);
      if (i >= 0) this.warm.splice(i, 1);
      this.refill();
    });
  }

  /** Lets go of ready slots beyond the target: their threads go back to piscina, idle. */
  private trim(): void {
    const excess = this.warm.length + this.starting - this.waiting.length - this.target.value;
    for (let i = 0; i < excess && this.warm.length > 0; i++) {
      const slot = this.warm.pop()!;
      void slot.call((api) => api.close()).catch(() => undefined);
    }
  }
}
