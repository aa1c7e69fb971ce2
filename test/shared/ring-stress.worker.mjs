// One side of the ring's cross-thread stress test (test/shared/ring.test.ts). Plain JS: worker
// threads cannot load TypeScript, so the test transpiles src/shared/ring.ts and passes its URL.
//
// Record `seq` has a length fixed by seq (8–263 bytes): u32 seq · u32 (seq ^ length) · a pattern
// of seq. Before some records the producer writes an extra zero-length record.
import { workerData, parentPort } from 'node:worker_threads';

const { ringUrl, role, ringBuffer, flagsBuffer, records, mode, clearEvery, consumerNapEvery } = workerData;
const { Ring } = await import(ringUrl);
const ring = new Ring(ringBuffer);
// flags[0]: producer done; flags[1]: a word to sleep on; flags[2]: consumer gave up
const flags = new Int32Array(flagsBuffer);

function hash(x) {
  x = Math.imul(x ^ (x >>> 16), 0x45d9f3b);
  x = Math.imul(x ^ (x >>> 16), 0x45d9f3b);
  return (x ^ (x >>> 16)) >>> 0;
}
const lengthOf = (seq) => 8 + (hash(seq) % 256);
const zeroBefore = (seq) => hash(seq ^ 0x5bd1e995) % 17 === 0;

function fill(buf, seq, len) {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  dv.setUint32(0, seq, true);
  dv.setUint32(4, (seq ^ len) >>> 0, true);
  for (let j = 8; j < len; j++) buf[j] = (seq + j * 13 + (j >> 4)) & 0xff;
}

/** Records the ring holds at least when the producer clears it. */
const CLEAR_WHEN_HOLDING = 4;

function sleep(ms) {
  Atomics.wait(flags, 1, 0, ms);
}

if (role === 'producer') {
  const buf = new Uint8Array(8 + 256);
  const empty = new Uint8Array(0);
  let written = 0;
  let zeros = 0;
  let dropped = 0;
  let fullSpins = 0;
  let clearAt = clearEvery - 1;
  for (let seq = 0; seq < records; seq++) {
    const len = lengthOf(seq);
    fill(buf, seq, len);
    if (mode === 'write') {
      if (zeroBefore(seq)) {
        while (!ring.write(empty) && Atomics.load(flags, 2) === 0) if (++fullSpins % 64 === 0) sleep(0.02);
        zeros++;
        written++;
      }
      while (!ring.write(buf, 0, len)) {
        // spin a little, then give the core away: on a busy machine the consumer may need it
        if (++fullSpins % 64 === 0) {
          if (Atomics.load(flags, 2) === 1) break;
          sleep(0.02);
        }
      }
    } else {
      if (zeroBefore(seq)) {
        dropped += ring.writeDroppingOldest(empty);
        zeros++;
        written++;
      }
      dropped += ring.writeDroppingOldest(buf, 0, len);
      // Every clearEvery records, a clear() as soon as the ring holds a few: one that lands on a
      // ring the consumer keeps empty races nothing, and on a busy machine every one of them may.
      if (clearEvery > 0 && seq >= clearAt && ring.records() >= CLEAR_WHEN_HOLDING) {
        ring.clear();
        clearAt = seq + clearEvery;
      }
    }
    written++;
  }
  Atomics.store(flags, 0, 1);
  parentPort.postMessage({ role, written, zeros, dropped, fullSpins });
} else {
  const dst = new Uint8Array(ring.maxPayload);
  const dv = new DataView(dst.buffer);
  let read = 0;
  let zeros = 0;
  let last = -1;
  let emptySpins = 0;
  let error = null;
  for (;;) {
    const n = ring.readInto(dst);
    if (n < 0) {
      if (Atomics.load(flags, 0) === 1 && ring.isEmpty()) break;
      if (++emptySpins % 64 === 0) sleep(0.02);
      continue;
    }
    read++;
    if (n === 0) {
      zeros++;
      continue;
    }
    const seq = n >= 8 ? dv.getUint32(0, true) : -1;
    if (n < 8 || seq >= records || n !== lengthOf(seq) || dv.getUint32(4, true) !== ((seq ^ n) >>> 0)) {
      error = `read #${read}: a record of ${n} bytes with a bad header (seq ${seq}, after ${last})`;
      break;
    }
    for (let j = 8; j < n; j++) {
      if (dst[j] !== ((seq + j * 13 + (j >> 4)) & 0xff)) {
        error = `read #${read}: record ${seq} corrupted at byte ${j} of ${n}`;
        break;
      }
    }
    if (error) break;
    if (mode === 'write' ? seq !== last + 1 : seq <= last) {
      error = `read #${read}: record ${seq} after ${last}`;
      break;
    }
    last = seq;
    if (consumerNapEvery > 0 && read % consumerNapEvery === 0) sleep(1);
  }
  if (error) Atomics.store(flags, 2, 1);
  parentPort.postMessage({ role, read, zeros, last, emptySpins, error });
}
