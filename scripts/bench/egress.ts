/**
 * Egress: how paced frames get from a session worker to the main thread (which owns the
 * WebSocket sockets). Two ways, same load, same run:
 *   port  one ArrayBuffer per wake, transferred over a MessagePort; main hands out views of it
 *         (no copy) — what the gateway does (src/workers/egress-batch.ts)
 *   ring  the worker writes each frame into a shared Ring and posts one notification per wake;
 *         main drains the ring, copying each frame out (ws.send needs memory that stays put)
 * Measured: main-thread busy time per frame (event-loop utilisation) and the handoff latency.
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { Histogram } from '../../src/shared/histogram.js';
import { Ring } from '../../src/shared/ring.js';
import { forEachEgressEntry } from '../../src/workers/egress-batch.js';
import type { EgressMessage } from '../../src/shared/worker-messages.js';

export interface EgressResult {
  mode: 'port' | 'ring';
  sessions: number;
  frames: number;
  mainBusyPerFrameUs: number;
  latencyMs: { p50: number; p99: number; max: number };
}

export async function benchEgress(mode: 'port' | 'ring', sessions: number, seconds = 4): Promise<EgressResult> {
  const { port1, port2 } = new MessageChannel();
  const ring = mode === 'ring' ? Ring.create(4 << 20) : undefined;
  const latency = new Histogram(1000, 0.01);
  let frames = 0;
  const sink = (frame: Buffer) => {
    frames++;
    latency.record(performance.timeOrigin + performance.now() - frame.readDoubleLE(0));
  };
  const scratch = new Uint8Array(4096);
  port2.on('message', (m: EgressMessage | number) => {
    if (typeof m !== 'number') {
      if (m.kind === 'frames') forEachEgressEntry(m.batch, m.used, (_sid, frame) => sink(frame.subarray(8)));
      return;
    }
    for (;;) {
      const len = ring!.readInto(scratch);
      if (len < 0) break;
      sink(Buffer.from(scratch.subarray(0, len)));
    }
  });
  const worker = new Worker(new URL('./egress-worker.js', import.meta.url), {
    workerData: { mode, sessions, seconds, port: port1, ring: ring?.buffer },
    transferList: [port1],
  });
  // Let the worker's JIT warm up before measuring.
  await new Promise((r) => setTimeout(r, 500));
  frames = 0;
  const elu = performance.eventLoopUtilization();
  const done = await new Promise<{ full: number }>((resolve) => worker.on('message', resolve));
  const busy = performance.eventLoopUtilization(elu);
  await worker.terminate();
  port2.close();
  if (done.full > 0) throw new Error(`egress ring filled ${done.full} times`);
  const p = latency.percentiles();
  return {
    mode,
    sessions,
    frames,
    mainBusyPerFrameUs: (busy.active * 1000) / frames,
    latencyMs: { p50: p.p50, p99: p.p99, max: p.max },
  };
}
