/**
 * The frames one wake of a worker delivers, gathered into one ArrayBuffer and posted to the main
 * thread in one message (transferred, not copied). Entry layout: src/shared/worker-messages.ts.
 */
import type { MessagePort } from 'node:worker_threads';
import { EGRESS_ENTRY_HEADER_BYTES, type EgressMessage } from '../shared/worker-messages.js';
import { LISTENER_HEADER_BYTES, writeListenerHeader } from '../shared/listener-protocol.js';

/**
 * Room for three entries of the largest Opus packet (8 + 8 + 1276 bytes each, padded). Smaller,
 * a wake that delivers one frame would outgrow every new buffer: two ArrayBuffers allocated and
 * one copy per wake instead of one allocation, ~10 % of a thread-per-session worker's CPU.
 */
const MIN_BYTES = 4096;

/** Buffer sizes stay multiples of 4: entries are read as 32-bit words. */
function words4(bytes: number): number {
  return (bytes + 3) & ~3;
}

export class EgressBatch {
  private buffer: ArrayBuffer;
  private bytes: Uint8Array;
  private words: Uint32Array;
  private used = 0;

  constructor(private readonly port: MessagePort) {
    this.buffer = new ArrayBuffer(MIN_BYTES);
    this.bytes = new Uint8Array(this.buffer);
    this.words = new Uint32Array(this.buffer);
  }

  /**
   * Room for one entry of up to `maxPayload` bytes; returns the target and offset where the
   * payload goes (fill it, then call commit()).
   */
  reserve(maxPayload: number): { bytes: Uint8Array; offset: number } {
    const need = this.used + EGRESS_ENTRY_HEADER_BYTES + LISTENER_HEADER_BYTES + maxPayload + 3;
    if (need > this.buffer.byteLength) this.grow(need);
    return { bytes: this.bytes, offset: this.used + EGRESS_ENTRY_HEADER_BYTES + LISTENER_HEADER_BYTES };
  }

  /** Completes the entry reserve() began: a frame of `payloadBytes` for session `sid`. */
  commit(sid: number, seq: number, timestamp: number, payloadBytes: number): void {
    const at = this.used;
    this.words[at >> 2] = sid;
    this.words[(at >> 2) + 1] = LISTENER_HEADER_BYTES + payloadBytes;
    writeListenerHeader(this.bytes, at + EGRESS_ENTRY_HEADER_BYTES, seq, timestamp);
    this.used = (at + EGRESS_ENTRY_HEADER_BYTES + LISTENER_HEADER_BYTES + payloadBytes + 3) & ~3;
  }

  /** Posts what was gathered, if anything, and starts a new buffer sized like this one. */
  flush(): void {
    if (this.used === 0) return;
    const message: EgressMessage = { kind: 'frames', batch: this.buffer, used: this.used };
    this.port.postMessage(message, [this.buffer]);
    this.buffer = new ArrayBuffer(words4(Math.max(MIN_BYTES, this.used + (this.used >> 1))));
    this.bytes = new Uint8Array(this.buffer);
    this.words = new Uint32Array(this.buffer);
    this.used = 0;
  }

  private grow(need: number): void {
    const bigger = new ArrayBuffer(words4(Math.max(need, this.buffer.byteLength * 2)));
    new Uint8Array(bigger).set(this.bytes.subarray(0, this.used));
    this.buffer = bigger;
    this.bytes = new Uint8Array(bigger);
    this.words = new Uint32Array(bigger);
  }
}

/** Main-thread side: calls `deliver` for each entry, with the listener frame as a view (no copy). */
export function forEachEgressEntry(
  batch: ArrayBuffer,
  used: number,
  deliver: (sid: number, frame: Buffer) => void,
): void {
  const words = new Uint32Array(batch, 0, used >> 2);
  let at = 0;
  while (at < used) {
    const sid = words[at >> 2]!;
    const bytes = words[(at >> 2) + 1]!;
    deliver(sid, Buffer.from(batch, at + EGRESS_ENTRY_HEADER_BYTES, bytes));
    at = (at + EGRESS_ENTRY_HEADER_BYTES + bytes + 3) & ~3;
  }
}
