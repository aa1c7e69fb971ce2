/**
 * A worker thread's doorbell: a counter in shared memory that main bumps after each message it
 * posts to one of the thread's slots. Between frames the thread may sleep in Atomics.wait
 * instead of going back to its event loop (a timer wake costs several times more); the bell
 * wakes it early, and it then returns to its event loop so the message is taken at once.
 */
import type { Endpoint } from 'comlink';
import type { MessagePort } from 'node:worker_threads';

export class Doorbell {
  readonly cell: Int32Array;

  constructor(memory: SharedArrayBuffer = new SharedArrayBuffer(4)) {
    this.cell = new Int32Array(memory, 0, 1);
  }

  get memory(): SharedArrayBuffer {
    return this.cell.buffer as SharedArrayBuffer;
  }

  /** How many times it has rung: what a sleeper compares against. */
  get rings(): number {
    return Atomics.load(this.cell, 0);
  }

  ring(): void {
    Atomics.add(this.cell, 0, 1);
    Atomics.notify(this.cell, 0);
  }

  /** Sleeps up to `ms` unless it rings after `seen` was read: true when it rang. */
  sleepUnlessRung(seen: number, ms: number): boolean {
    return Atomics.wait(this.cell, 0, seen, ms) !== 'timed-out';
  }
}

/**
 * Main's end of a slot's comlink channel: each message posted rings the thread's doorbell, once
 * the slot has said which it is.
 */
export class RingingEndpoint implements Endpoint {
  bell: Doorbell | undefined;

  constructor(private readonly port: MessagePort) {}

  postMessage(...[message, transfer]: Parameters<Endpoint['postMessage']>): void {
    this.port.postMessage(message, transfer as never);
    this.bell?.ring();
  }

  start(): void {
    this.port.start();
  }

  addEventListener(...[type, listener]: Parameters<Endpoint['addEventListener']>): void {
    this.port.addEventListener(type as 'message', listener as never);
  }

  removeEventListener(...[type, listener]: Parameters<Endpoint['removeEventListener']>): void {
    this.port.removeEventListener(type as 'message', listener as never);
  }
}
