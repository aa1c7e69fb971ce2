/**
 * Single-producer single-consumer ring of variable-length records in a SharedArrayBuffer.
 *
 *   SharedArrayBuffer: control (CONTROL_WORDS × i32) · data (capacity bytes, a multiple of 4)
 *   control[HEAD]     producer's write offset into data (only the producer stores it)
 *   control[TAIL]     consumer's read offset plus capacity × lap, where lap counts the times
 *                     the tail went round, modulo the laps that fit below 2^31; advanced by
 *                     compare-and-swap, because in drop-oldest mode the producer may also advance
 *                     it past the oldest record. The lap makes the CAS fail for a consumer that
 *                     read a record which the producer meanwhile dropped and, a lap later,
 *                     replaced by another at the same offset (ABA): a tail value only comes back
 *                     after ~2^31 bytes have gone through the ring.
 *   control[WRITTEN]  records written, control[READ] records read, control[DROPPED] records the
 *                     producer dropped to make room, control[FLUSHED] records discarded by
 *                     clear() or discard() (all wrap at 2^32). Records are numbered in the order
 *                     written: WRITTEN is the next one's number, READ + DROPPED + FLUSHED the
 *                     next to read (a position both sides can name, as a splice does)
 *   record            u32 payload length (little-endian, native) · payload · pad to 4 bytes
 *   wrap marker       a length of WRAP where the next record did not fit before the end: the
 *                     reader jumps to offset 0
 *
 * HEAD == TAIL means empty, so the producer always leaves at least one word free. Record bytes
 * are written before HEAD is published with Atomics.store, and read before TAIL is moved with
 * Atomics.compareExchange; sequentially consistent atomics order the plain accesses around them.
 * A reader whose CAS fails lost its record to a drop and simply reads the new tail.
 * An empty ring whose offsets sit where a record fits neither before the end nor before the tail
 * restarts both at 0 (a wrap marker at the old head covers a reader that sees HEAD move first).
 */

const HEAD = 0;
const TAIL = 1;
const WRITTEN = 2;
const READ = 3;
const DROPPED = 4;
const FLUSHED = 5;
const CONTROL_WORDS = 8;
const CONTROL_BYTES = CONTROL_WORDS * 4;
const RECORD_HEADER_BYTES = 4;
const WRAP = 0xffffffff;

function align4(n: number): number {
  return (n + 3) & ~3;
}

/** Bytes one record of `payloadBytes` occupies in the ring. */
export function recordBytes(payloadBytes: number): number {
  return RECORD_HEADER_BYTES + align4(payloadBytes);
}

/**
 * Records of `ring` still to be played when those from record `cut` up to record `resume` are
 * to be skipped (a splice: src/workers/session-player.ts); with `resume` unknown yet, all those
 * from `cut` on. Record numbers as Ring.writeCount() and Ring.removeCount() give them.
 */
export function recordsToPlay(ring: Ring, cut: number, resume: number | undefined): number {
  const records = ring.records();
  const removed = ring.removeCount();
  const beforeCut = Math.max(0, (cut - removed) | 0);
  if (resume === undefined) return Math.min(records, beforeCut);
  const skipped = Math.max(0, ((resume - removed) | 0) - beforeCut);
  return Math.max(0, records - skipped);
}

export interface RingStats {
  capacityBytes: number;
  usedBytes: number;
  records: number;
  written: number;
  read: number;
  dropped: number;
  flushed: number;
}

export class Ring {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  private readonly control: Int32Array;
  private readonly data: Uint8Array;
  private readonly words: Uint32Array;
  /** TAIL wraps to 0 at capacity × laps (≤ 2^31 - 1). */
  private readonly tailSpan: number;

  /** A new ring with `capacityBytes` of record space (rounded up to 4). */
  static create(capacityBytes: number): Ring {
    const capacity = align4(Math.max(capacityBytes, 2 * RECORD_HEADER_BYTES));
    return new Ring(new SharedArrayBuffer(CONTROL_BYTES + capacity));
  }

  /** Capacity that holds `records` records of up to `maxPayloadBytes` each, plus a wrap's worst case. */
  static capacityFor(records: number, maxPayloadBytes: number): number {
    return (records + 1) * recordBytes(maxPayloadBytes) + RECORD_HEADER_BYTES;
  }

  /** Attaches to a ring created elsewhere (the other side of a thread boundary). */
  constructor(buffer: SharedArrayBuffer) {
    if (buffer.byteLength < CONTROL_BYTES + 2 * RECORD_HEADER_BYTES || buffer.byteLength % 4 !== 0) {
      throw new RangeError(`not a ring buffer: ${buffer.byteLength} bytes`);
    }
    this.buffer = buffer;
    this.capacity = buffer.byteLength - CONTROL_BYTES;
    this.control = new Int32Array(buffer, 0, CONTROL_WORDS);
    this.data = new Uint8Array(buffer, CONTROL_BYTES, this.capacity);
    this.words = new Uint32Array(buffer, CONTROL_BYTES, this.capacity / 4);
    this.tailSpan = this.capacity * Math.max(1, Math.floor(0x7fffffff / this.capacity));
  }

  /** The offset of a TAIL value. */
  private tailOffset(tailWord: number): number {
    return tailWord % this.capacity;
  }

  /** The TAIL value after the tail moves from `tailWord` to offset `to`; 0 or capacity start a new lap. */
  private tailAt(tailWord: number, to: number): number {
    const lapStart = tailWord - (tailWord % this.capacity);
    if (to > 0 && to < this.capacity) return lapStart + to;
    const next = lapStart + this.capacity;
    return next === this.tailSpan ? 0 : next;
  }

  /** Largest payload that can ever fit. */
  get maxPayload(): number {
    return this.capacity - 2 * RECORD_HEADER_BYTES;
  }

  /** Bytes in use (records, padding and a pending wrap). */
  usedBytes(): number {
    const head = Atomics.load(this.control, HEAD);
    const tail = this.tailOffset(Atomics.load(this.control, TAIL));
    return head >= tail ? head - tail : this.capacity - tail + head;
  }

  /**
   * Bytes not in use, less the word that must stay free. Not a promise that one record that
   * large fits: free space may lie on both sides of the end, and a wrap wastes up to one record.
   * A record of n payload bytes surely fits when 2 × recordBytes(n) ≤ freeBytes().
   */
  freeBytes(): number {
    return this.capacity - this.usedBytes() - RECORD_HEADER_BYTES;
  }

  /** Records currently in the ring. */
  records(): number {
    // Another thread may write and remove between these loads. A removal is counted after its
    // write, so WRITTEN read after the removal counters is never below them; reading it on both
    // sides and retrying while it moves keeps the count to one the ring had (not above capacity).
    let written = Atomics.load(this.control, WRITTEN);
    for (let tries = 0; ; tries++) {
      const removed =
        Atomics.load(this.control, FLUSHED) + Atomics.load(this.control, DROPPED) + Atomics.load(this.control, READ);
      const again = Atomics.load(this.control, WRITTEN);
      if (again === written || tries === 3) {
        return Math.min((again - removed) >>> 0, this.capacity / RECORD_HEADER_BYTES);
      }
      written = again;
    }
  }

  isEmpty(): boolean {
    return Atomics.load(this.control, HEAD) === this.tailOffset(Atomics.load(this.control, TAIL));
  }

  stats(): RingStats {
    return {
      capacityBytes: this.capacity,
      usedBytes: this.usedBytes(),
      records: this.records(),
      written: Atomics.load(this.control, WRITTEN) >>> 0,
      read: Atomics.load(this.control, READ) >>> 0,
      dropped: Atomics.load(this.control, DROPPED) >>> 0,
      flushed: Atomics.load(this.control, FLUSHED) >>> 0,
    };
  }

  // ---- producer side ----

  /** Appends src[start, end) as one record. False when it does not fit now (nothing is written). */
  write(src: Uint8Array, start = 0, end = src.length): boolean {
    const len = end - start;
    if (len > this.maxPayload) throw new RangeError(`record of ${len} bytes exceeds the ring's ${this.maxPayload}`);
    const need = recordBytes(len);
    let head = Atomics.load(this.control, HEAD);
    const tailWord = Atomics.load(this.control, TAIL);
    const tail = this.tailOffset(tailWord);
    let at: number;
    if (head >= tail) {
      if (head + need < this.capacity || (head + need === this.capacity && tail !== 0)) at = head;
      else if (need < tail) at = 0;
      else if (head === tail) {
        // Empty, yet the record fits neither before the end nor before the tail: restart at 0.
        // Only the producer adds, so the ring stays empty until HEAD moves past the record.
        this.words[head >> 2] = WRAP;
        Atomics.store(this.control, HEAD, 0);
        Atomics.compareExchange(this.control, TAIL, tailWord, this.tailAt(tailWord, 0)); // or the reader did
        head = 0;
        at = 0;
      } else return false;
    } else if (head + need < tail) at = head;
    else return false;
    if (at !== head) this.words[head >> 2] = WRAP;
    this.words[at >> 2] = len;
    // A plain view, not src.subarray(): on a Buffer that builds a FastBuffer, ~40 ns a frame.
    this.data.set(new Uint8Array(src.buffer, src.byteOffset + start, end - start), at + RECORD_HEADER_BYTES);
    const next = at + need;
    // Only the producer writes WRITTEN: a plain store, published by the Atomics.store of HEAD.
    this.control[WRITTEN] = (this.control[WRITTEN]! + 1) | 0;
    Atomics.store(this.control, HEAD, next === this.capacity ? 0 : next);
    return true;
  }

  /** Appends, dropping the oldest records until it fits. Returns how many were dropped. */
  writeDroppingOldest(src: Uint8Array, start = 0, end = src.length): number {
    let dropped = 0;
    while (!this.write(src, start, end)) {
      if (this.dropOldest(DROPPED)) dropped++;
    }
    return dropped;
  }

  /** Drops the oldest record, counting it in `counter`; false when it was a wrap marker or none. */
  private dropOldest(counter: number): boolean {
    for (;;) {
      const tailWord = Atomics.load(this.control, TAIL);
      const tail = this.tailOffset(tailWord);
      if (tail === Atomics.load(this.control, HEAD)) return false;
      const len = this.words[tail >> 2]!;
      const isWrap = len === WRAP;
      const next = isWrap ? 0 : tail + recordBytes(len);
      if (Atomics.compareExchange(this.control, TAIL, tailWord, this.tailAt(tailWord, next)) !== tailWord) continue;
      if (isWrap) return false;
      Atomics.add(this.control, counter, 1);
      return true;
    }
  }

  /** Records ever written (wraps at 2^32): the index the next record written gets. */
  writeCount(): number {
    return Atomics.load(this.control, WRITTEN) >>> 0;
  }

  /**
   * Records ever removed, read, dropped or discarded (wraps at 2^32): the index of the next
   * record to read, in the numbering of writeCount().
   */
  removeCount(): number {
    return (Atomics.load(this.control, READ) + Atomics.load(this.control, DROPPED) + Atomics.load(this.control, FLUSHED)) >>> 0;
  }

  /** Empties the ring (producer side, e.g. when a session's track is replaced). */
  clear(): void {
    while (!this.isEmpty()) this.dropOldest(FLUSHED);
  }

  // ---- consumer side ----

  /**
   * Discards up to `count` of the oldest records unread, counted as flushed (the consumer skips
   * what it must not play). Returns how many it discarded: fewer when the ring ran empty.
   */
  discard(count: number): number {
    let discarded = 0;
    while (discarded < count && !this.isEmpty()) {
      if (this.dropOldest(FLUSHED)) discarded++;
    }
    return discarded;
  }

  /**
   * Copies the next record's payload into dst at `offset` and consumes it. Returns the payload
   * length, or -1 when the ring is empty. dst must have room for the record (maxPayload bytes always do).
   */
  readInto(dst: Uint8Array, offset = 0): number {
    for (;;) {
      const tailWord = Atomics.load(this.control, TAIL);
      const tail = this.tailOffset(tailWord);
      if (tail === Atomics.load(this.control, HEAD)) return -1;
      const len = this.words[tail >> 2]!;
      if (len === WRAP) {
        Atomics.compareExchange(this.control, TAIL, tailWord, this.tailAt(tailWord, 0));
        continue;
      }
      const next = tail + recordBytes(len);
      // A length torn by a concurrent drop fails the bounds check or the CAS below; either way retry.
      if (next > this.capacity || offset + len > dst.length) {
        if (Atomics.load(this.control, TAIL) !== tailWord) continue;
        throw new RangeError(`record of ${len} bytes does not fit the destination (${dst.length - offset} bytes)`);
      }
      dst.set(this.data.subarray(tail + RECORD_HEADER_BYTES, tail + RECORD_HEADER_BYTES + len), offset);
      if (Atomics.compareExchange(this.control, TAIL, tailWord, this.tailAt(tailWord, next)) !== tailWord) continue;
      Atomics.add(this.control, READ, 1);
      return len;
    }
  }
}
