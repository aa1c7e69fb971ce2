import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import ts from 'typescript';
import { recordBytes, recordsToPlay, Ring } from '../../src/shared/ring.js';
import { filled, ringModelProperty, writeDroppingOldestOrFail } from './properties.js';

const CONTROL_BYTES = 32;
const WRAP = 0xffffffff;

/** Raw views for checking the layout the module documents. */
function raw(ring: Ring) {
  const control = new Int32Array(ring.buffer, 0, 8);
  const words = new Uint32Array(ring.buffer, CONTROL_BYTES);
  return {
    head: () => control[0]!,
    /** TAIL's offset (the word may also count laps: see ring.ts). */
    tail: () => control[1]! % ring.capacity,
    word: (offset: number) => words[offset >> 2]!,
    snapshot: () => Buffer.from(new Uint8Array(ring.buffer)).toString('hex'),
  };
}

/** Moves an empty ring's offsets to `offset` by writing and reading filler. */
function moveTo(ring: Ring, offset: number): void {
  const r = raw(ring);
  const dst = new Uint8Array(ring.capacity);
  expect(ring.isEmpty()).toBe(true);
  let guard = 0;
  while (r.head() !== offset) {
    const gap = offset > r.head() ? offset - r.head() : ring.capacity - r.head();
    const n = Math.min(Math.max(gap - 4, 0), ring.maxPayload, 64);
    expect(ring.write(new Uint8Array(n))).toBe(true);
    expect(ring.readInto(dst)).toBe(n);
    if (++guard > 10_000) throw new Error(`cannot move to ${offset}`);
  }
  expect(r.tail()).toBe(offset);
}

function readAll(ring: Ring): Uint8Array[] {
  const out: Uint8Array[] = [];
  const dst = new Uint8Array(ring.capacity);
  for (let n = ring.readInto(dst); n >= 0; n = ring.readInto(dst)) out.push(dst.slice(0, n));
  return out;
}

describe('Ring, one thread', () => {
  it('rounds its capacity up to whole words and refuses buffers that are not rings', () => {
    expect(Ring.create(10).capacity).toBe(12);
    expect(Ring.create(0).capacity).toBe(8);
    expect(Ring.create(100).maxPayload).toBe(92);
    expect(() => new Ring(new SharedArrayBuffer(CONTROL_BYTES + 4))).toThrow(RangeError);
    expect(() => new Ring(new SharedArrayBuffer(CONTROL_BYTES + 10))).toThrow(RangeError);
    const a = Ring.create(64);
    const b = new Ring(a.buffer);
    expect(a.write(new Uint8Array([1, 2, 3]))).toBe(true);
    expect(readAll(b)).toEqual([new Uint8Array([1, 2, 3])]);
  });

  it('fills up, refuses the next record, and gives everything back in order', () => {
    const ring = Ring.create(256);
    const written: Uint8Array[] = [];
    for (let i = 0; ; i++) {
      const rec = filled(i % 20, i);
      if (!ring.write(rec)) break;
      written.push(rec);
    }
    const used = written.reduce((a, r) => a + recordBytes(r.length), 0);
    expect(used).toBeLessThan(ring.capacity);
    expect(used).toBeGreaterThan(ring.capacity - recordBytes(20) - 4);
    expect(ring.stats()).toMatchObject({ records: written.length, written: written.length, usedBytes: used });
    expect(readAll(ring)).toEqual(written);
    expect(ring.isEmpty()).toBe(true);
  });

  it('a write that does not fit returns false and changes nothing, not even the data bytes', () => {
    const ring = Ring.create(64);
    expect(ring.write(filled(40, 1))).toBe(true);
    const r = raw(ring);
    const before = r.snapshot();
    expect(ring.write(filled(20, 2))).toBe(false);
    expect(r.snapshot()).toBe(before);
    expect(ring.stats().written).toBe(1);
  });

  it('takes records of 0 bytes, and counts them', () => {
    const ring = Ring.create(64);
    for (let i = 0; i < 15; i++) expect(ring.write(new Uint8Array(0))).toBe(true);
    expect(ring.write(new Uint8Array(0))).toBe(false); // 15 × 4 bytes + the free word
    expect(ring.records()).toBe(15);
    const dst = new Uint8Array(0);
    expect(ring.readInto(dst)).toBe(0);
    expect(readAll(ring)).toHaveLength(14);
    expect(ring.readInto(dst)).toBe(-1);
  });

  it('writes a wrap marker where a record does not fit before the end, and the reader follows it', () => {
    const ring = Ring.create(64);
    const r = raw(ring);
    moveTo(ring, 40);
    expect(ring.write(filled(20, 1))).toBe(true); // 24 bytes: [40, 64) fits exactly, no marker
    expect(r.head()).toBe(0);
    expect(readAll(ring)).toEqual([filled(20, 1)]);
    moveTo(ring, 48);
    expect(ring.write(filled(20, 2))).toBe(true); // needs 24, only 16 left before the end: wraps
    expect(r.word(48)).toBe(WRAP);
    expect(r.head()).toBe(24);
    expect(readAll(ring)).toEqual([filled(20, 2)]);
    expect(r.tail()).toBe(24);
  });

  it('a record may end exactly at the end, unless the tail is at 0 (the ring would look empty)', () => {
    const ring = Ring.create(64);
    const r = raw(ring);
    expect(ring.write(filled(52, 1))).toBe(true);
    expect(r.head()).toBe(56);
    // tail at 0: an 8-byte record would end at 64 and make head == tail == 0
    expect(ring.write(filled(4, 2))).toBe(false);
    expect(ring.write(filled(0, 2))).toBe(true); // [56, 60) leaves a word free
    expect(readAll(ring)).toEqual([filled(52, 1), filled(0, 2)]);
    // tail at 8, head at 8: a record of [8, 64) ends exactly at the end and head goes to 0
    moveTo(ring, 8);
    expect(ring.write(filled(52, 2))).toBe(true);
    expect(r.head()).toBe(0);
    expect(ring.isEmpty()).toBe(false);
    expect(ring.write(filled(0, 3))).toBe(true); // [0, 4): one word still free before the tail
    expect(ring.write(filled(0, 4))).toBe(false);
    expect(readAll(ring)).toEqual([filled(52, 2), filled(0, 3)]);
  });

  it('an empty ring takes any record up to maxPayload, wherever its offsets are', () => {
    // Regression: an empty ring whose offsets sat mid-buffer refused a record that fitted neither
    // before the end nor before the tail, so `write` never succeeded and writeDroppingOldest spun
    // forever (nothing left to drop).
    for (const cap of [16, 64, 100, 256]) {
      const ring = Ring.create(cap);
      for (let at = 0; at < ring.capacity; at += 4) {
        moveTo(ring, at);
        for (const n of [ring.maxPayload, ring.maxPayload - 3, Math.floor(ring.capacity / 2)]) {
          expect({ cap, at, n, ok: ring.write(filled(n, at)) }).toEqual({ cap, at, n, ok: true });
          expect(readAll(ring)).toEqual([filled(n, at)]);
          moveTo(ring, at);
        }
        expect(() => ring.write(new Uint8Array(ring.maxPayload + 1))).toThrow(RangeError);
      }
    }
  });

  it('writeDroppingOldest drops just enough of the oldest records and says how many', () => {
    const ring = Ring.create(64); // 16 words
    for (let i = 0; i < 7; i++) expect(ring.write(filled(4, i))).toBe(true); // 7 × 8 = 56 bytes
    expect(ring.writeDroppingOldest(filled(4, 7))).toBe(1); // needs 8 with 8 free: one word must stay free
    expect(ring.writeDroppingOldest(filled(12, 8))).toBe(2);
    expect(ring.writeDroppingOldest(filled(0, 9))).toBe(0);
    expect(ring.stats()).toMatchObject({ written: 10, dropped: 3, read: 0, flushed: 0, records: 7 });
    expect(readAll(ring)).toEqual([3, 4, 5, 6, 7].map((i) => filled(4, i)).concat([filled(12, 8), filled(0, 9)]));
    // a record as large as the ring allows drops everything
    for (let i = 0; i < 5; i++) expect(ring.write(filled(4, i))).toBe(true);
    expect(writeDroppingOldestOrFail(ring, filled(ring.maxPayload, 1))).toBe(5);
    expect(readAll(ring)).toEqual([filled(ring.maxPayload, 1)]);
  });

  it('writeDroppingOldest terminates on an empty ring whatever its offsets (a wrap marker is not a record)', () => {
    const ring = Ring.create(64);
    for (let at = 0; at < ring.capacity; at += 4) {
      moveTo(ring, at);
      expect(writeDroppingOldestOrFail(ring, filled(ring.maxPayload, at))).toBe(0);
      expect(readAll(ring)).toEqual([filled(ring.maxPayload, at)]);
    }
  });

  it('numbers records as written; discard() skips the oldest across a wrap, and recordsToPlay leaves out a splice\'s skipped ones', () => {
    const ring = Ring.create(128);
    moveTo(ring, 100); // so that the records wrap
    const base = ring.writeCount();
    expect(ring.removeCount()).toBe(base);
    for (let i = 0; i < 6; i++) expect(ring.write(filled(10, i))).toBe(true);
    expect(ring.writeCount()).toBe((base + 6) >>> 0);
    ring.readInto(new Uint8Array(16));
    // Records base+1 … base+5 are in the ring. A splice cutting at base+3, its new play from base+5:
    expect(recordsToPlay(ring, base + 3, undefined)).toBe(2);
    expect(ring.write(filled(10, 6))).toBe(true);
    expect(recordsToPlay(ring, base + 3, base + 5)).toBe(2 + 2);
    expect(ring.discard(2)).toBe(2);
    expect(ring.removeCount()).toBe((base + 3) >>> 0);
    expect(recordsToPlay(ring, base + 3, base + 5)).toBe(2);
    expect(ring.discard(2)).toBe(2);
    expect(readAll(ring)).toEqual([filled(10, 5), filled(10, 6)]);
    expect(ring.discard(3)).toBe(0);
    expect(ring.stats()).toMatchObject({ records: 0, read: expect.any(Number), flushed: 4, dropped: 0 });
  });

  it('clear() empties the ring and counts what it discarded as flushed, not dropped', () => {
    const ring = Ring.create(128);
    moveTo(ring, 100); // so that the records wrap
    const read = ring.stats().read;
    for (let i = 0; i < 6; i++) expect(ring.write(filled(10, i))).toBe(true);
    ring.readInto(new Uint8Array(16));
    ring.clear();
    expect(ring.isEmpty()).toBe(true);
    expect(ring.stats()).toMatchObject({ records: 0, usedBytes: 0, read: read + 1, flushed: 5, dropped: 0 });
    expect(ring.write(filled(3, 9))).toBe(true);
    expect(readAll(ring)).toEqual([filled(3, 9)]);
    ring.clear(); // on an empty ring: nothing
    expect(ring.stats().flushed).toBe(5);
  });

  it('stats() adds up: written = read + dropped + flushed + records', () => {
    const ring = Ring.create(200);
    const dst = new Uint8Array(200);
    for (let i = 0; i < 1000; i++) {
      const n = (i * 37) % 50;
      if (i % 3 === 0) ring.writeDroppingOldest(filled(n, i));
      else ring.write(filled(n, i));
      if (i % 5 === 0) ring.readInto(dst);
      if (i % 7 === 0) ring.readInto(dst);
      if (i % 97 === 0) ring.clear();
      const s = ring.stats();
      expect(s.written).toBe(s.read + s.dropped + s.flushed + s.records);
      expect(s.capacityBytes).toBe(200);
      expect(s.usedBytes).toBeLessThan(200);
      expect(ring.freeBytes()).toBe(200 - s.usedBytes - 4);
    }
    expect(ring.stats().dropped).toBeGreaterThan(0);
    expect(ring.stats().flushed).toBeGreaterThan(0);
  });

  it('readInto refuses a destination too small for the record and consumes nothing', () => {
    const ring = Ring.create(64);
    ring.write(filled(10, 1));
    expect(() => ring.readInto(new Uint8Array(9))).toThrow(RangeError);
    expect(() => ring.readInto(new Uint8Array(12), 3)).toThrow(RangeError);
    const dst = new Uint8Array(14);
    expect(ring.readInto(dst, 4)).toBe(10);
    expect(dst.subarray(4)).toEqual(filled(10, 1));
  });

  it('capacityFor(n, m) always has room for another record of up to m bytes while it holds fewer than n', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 0, max: 200 }),
        fc.array(fc.tuple(fc.boolean(), fc.double({ min: 0, max: 1, noNaN: true })), { maxLength: 200 }),
        (n, m, ops) => {
          const ring = Ring.create(Ring.capacityFor(n, m));
          const dst = new Uint8Array(m);
          let held = 0;
          for (const [write, x] of ops) {
            if (write && held < n) {
              if (!ring.write(new Uint8Array(Math.floor(x * m)))) throw new Error(`full with ${held} of ${n} records`);
              held++;
            } else if (held > 0) {
              ring.readInto(dst);
              held--;
            }
          }
          // and from wherever it got to, n records of m bytes fit at once
          readAll(ring);
          for (let i = 0; i < n; i++) if (!ring.write(new Uint8Array(m))) throw new Error(`record ${i} of ${n} did not fit`);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('behaves like a model queue under any sequence of operations (fast-check)', () => {
    fc.assert(ringModelProperty(), { numRuns: 5000 });
  });

  it('records() read by a third thread while both sides move is never below zero', () => {
    // Simulates the producer writing and the consumer reading one record between two of the
    // counter loads inside records(), as another thread can.
    const ring = Ring.create(64);
    ring.write(filled(4, 0));
    const realLoad = Atomics.load;
    let loads = 0;
    let result = -1;
    (Atomics as { load: typeof Atomics.load }).load = ((arr: Int32Array, index: number) => {
      const v = realLoad(arr, index);
      if (++loads === 1) {
        (Atomics as { load: typeof Atomics.load }).load = realLoad;
        ring.write(filled(4, 1));
        ring.readInto(new Uint8Array(8));
        ring.readInto(new Uint8Array(8));
        (Atomics as { load: typeof Atomics.load }).load = patched;
      }
      return v;
    }) as typeof Atomics.load;
    const patched = Atomics.load;
    try {
      result = ring.records();
    } finally {
      (Atomics as { load: typeof Atomics.load }).load = realLoad;
    }
    expect(loads).toBeGreaterThan(1);
    // one record before, none after: a snapshot may say either, never 2^32 - 1
    expect([0, 1]).toContain(result);
    expect(ring.records()).toBe(0);
  });

  it('a reader whose record is dropped, overwritten and replaced at the same offset does not take the stale one', () => {
    // The interleaving of a consumer thread that is preempted between reading a record and moving
    // the tail, while the producer (drop-oldest) goes once round the ring and lays a different
    // record at the very same offset: the consumer's compare-and-swap must still fail (ABA).
    const ring = Ring.create(64);
    const r = raw(ring);
    for (let i = 0; i < 3; i++) expect(ring.write(filled(4, 100 + i))).toBe(true); // records at 0, 8, 16
    const produced: Uint8Array[] = [];
    let fired = false;
    class PreemptedCopy extends Uint8Array {
      override set(src: ArrayLike<number>, offset?: number): void {
        super.set(src, offset);
        if (fired) return;
        fired = true;
        // the producer runs while the consumer sleeps: 12-byte payloads (16-byte records)
        let left = false;
        for (let i = 0; i < 100; i++) {
          const rec = filled(12, i);
          ring.writeDroppingOldest(rec);
          produced.push(rec);
          if (r.tail() !== 0) left = true;
          else if (left) return;
        }
        throw new Error('the tail never came back to 0');
      }
    }
    const dst = new PreemptedCopy(64);
    const n = ring.readInto(dst);
    expect(fired).toBe(true);
    const s = ring.stats();
    // what is left in the ring is the newest records the producer wrote, oldest first
    const survivors = produced.slice(produced.length - (s.records + 1));
    expect({ n, first: Uint8Array.from(dst.subarray(0, n)) }).toEqual({ n: 12, first: survivors[0] });
    expect(readAll(ring)).toEqual(survivors.slice(1));
    const after = ring.stats();
    expect(after.read + after.dropped + after.flushed + after.records).toBe(after.written);
  });
});

// ---- across threads ----

const here = path.dirname(fileURLToPath(import.meta.url));
let tmp: string;
let ringUrl: string;

beforeAll(() => {
  // Worker threads cannot load TypeScript: transpile the module under test (it has no imports)
  // so that the workers run exactly the current source, whatever state dist/ is in.
  tmp = mkdtempSync(path.join(os.tmpdir(), 'chorus-ring-test-'));
  const source = readFileSync(path.join(here, '../../src/shared/ring.ts'), 'utf8');
  const js = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
  }).outputText;
  const file = path.join(tmp, 'ring.mjs');
  writeFileSync(file, js);
  ringUrl = pathToFileURL(file).href;
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface ProducerResult {
  role: 'producer';
  written: number;
  zeros: number;
  dropped: number;
  fullSpins: number;
}
interface ConsumerResult {
  role: 'consumer';
  read: number;
  zeros: number;
  last: number;
  emptySpins: number;
  error: string | null;
}

function runWorker<T>(data: Record<string, unknown>, workers: Worker[]): Promise<T> {
  const w = new Worker(new URL('./ring-stress.worker.mjs', import.meta.url), { workerData: { ringUrl, ...data } });
  workers.push(w);
  return new Promise<T>((resolve, reject) => {
    w.once('message', (m: T) => resolve(m));
    w.once('error', reject);
    w.once('exit', (code) => reject(new Error(`worker exited with ${code} before reporting`)));
  });
}

async function stress(opts: { mode: 'write' | 'drop'; records: number; capacity: number; clearEvery?: number; consumerNapEvery?: number }) {
  const ring = Ring.create(opts.capacity);
  const flags = new SharedArrayBuffer(16);
  const common = {
    ringBuffer: ring.buffer,
    flagsBuffer: flags,
    records: opts.records,
    mode: opts.mode,
    clearEvery: opts.clearEvery ?? 0,
    consumerNapEvery: opts.consumerNapEvery ?? 0,
  };
  const workers: Worker[] = [];
  try {
    const [consumer, producer] = await Promise.all([
      runWorker<ConsumerResult>({ ...common, role: 'consumer' }, workers),
      runWorker<ProducerResult>({ ...common, role: 'producer' }, workers),
    ]);
    return { ring, consumer, producer };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

describe('Ring, a producer thread and a consumer thread', () => {
  it('with write (back-pressure): millions of variable-length records, none lost, all intact, in order', async () => {
    const records = 1_500_000;
    const { ring, consumer, producer } = await stress({ mode: 'write', records, capacity: 8 * 1024 });
    expect(consumer.error).toBeNull();
    expect(producer.written).toBe(records + producer.zeros);
    expect(consumer.read).toBe(producer.written);
    expect(consumer.zeros).toBe(producer.zeros);
    expect(consumer.last).toBe(records - 1);
    expect(ring.stats()).toMatchObject({ written: producer.written, read: producer.written, dropped: 0, flushed: 0, records: 0 });
    // the ring was both full and empty many times, so both sides really raced
    expect(producer.fullSpins).toBeGreaterThan(0);
    expect(consumer.emptySpins).toBeGreaterThan(0);
  });

  it('with writeDroppingOldest racing a slower consumer and clear(): what is read is intact and in order, and the counts add up', async () => {
    const records = 1_500_000;
    const { ring, consumer, producer } = await stress({
      mode: 'drop',
      records,
      capacity: 4 * 1024,
      clearEvery: 100_000,
      consumerNapEvery: 20_000,
    });
    expect(consumer.error).toBeNull();
    const s = ring.stats();
    expect(producer.written).toBe(records + producer.zeros);
    expect(s.written).toBe(producer.written);
    expect(s.read).toBe(consumer.read);
    expect(s.dropped).toBe(producer.dropped);
    expect(s.read + s.dropped + s.flushed + s.records).toBe(s.written);
    expect(s.records).toBe(0); // the consumer drained the ring after the producer finished
    // the race really happened: records were dropped, flushed and read
    expect(s.dropped).toBeGreaterThan(0);
    expect(s.flushed).toBeGreaterThan(0);
    expect(consumer.read).toBeGreaterThan(records / 100);
  });
});
