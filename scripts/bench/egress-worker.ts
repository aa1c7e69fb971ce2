/**
 * The worker side of the egress benchmark: `sessions` sessions each send a 320-byte frame every
 * 20 ms, spread over four phases of the 20 ms, handed to the main thread either as one
 * transferred batch per wake (the gateway's EgressBatch) or through a shared Ring plus one
 * notification per wake. Each payload starts with its send time (epoch ms, float64).
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { Ring } from '../../src/shared/ring.js';
import { EgressBatch } from '../../src/workers/egress-batch.js';

interface Options {
  mode: 'port' | 'ring';
  sessions: number;
  seconds: number;
  port: MessagePort;
  ring?: SharedArrayBuffer;
}

const { mode, sessions, seconds, port, ring: ringBuffer } = workerData as Options;
const PHASES = 4;
const payload = new Uint8Array(320);
const stamp = new DataView(payload.buffer);
const batch = new EgressBatch(port);
const ring = ringBuffer ? new Ring(ringBuffer) : undefined;
const notify = new Int32Array(new SharedArrayBuffer(4));
let phase = 0;
let full = 0;

const timer = setInterval(() => {
  const from = Math.floor((phase * sessions) / PHASES);
  const to = Math.floor(((phase + 1) * sessions) / PHASES);
  phase = (phase + 1) % PHASES;
  for (let sid = from; sid < to; sid++) {
    stamp.setFloat64(0, performance.timeOrigin + performance.now(), true);
    if (mode === 'port') {
      const { bytes, offset } = batch.reserve(payload.length);
      bytes.set(payload, offset);
      batch.commit(sid, 0, 0, payload.length);
    } else if (!ring!.write(payload)) full++;
  }
  if (mode === 'port') batch.flush();
  else port.postMessage(Atomics.add(notify, 0, 1));
}, 20 / PHASES);

setTimeout(() => {
  clearInterval(timer);
  parentPort!.postMessage({ done: true, full });
}, seconds * 1000);
