import { MessageChannel } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { EgressBatch, forEachEgressEntry } from '../../src/workers/egress-batch.js';
import { parseListenerFrame } from '../../src/shared/listener-protocol.js';
import type { EgressMessage } from '../../src/shared/worker-messages.js';

/** Gathers frames of odd sizes through growth and several flushes, and reads them back on the other side. */
describe('EgressBatch', () => {
  it('hands every entry across intact, whatever the sizes and however often it grows', async () => {
    const { port1, port2 } = new MessageChannel();
    const batch = new EgressBatch(port1);
    const received: { sid: number; seq: number; ts: number; payload: Buffer }[] = [];
    port2.on('message', (m: EgressMessage) => {
      if (m.kind !== 'frames') return;
      forEachEgressEntry(m.batch, m.used, (sid, frame) => {
        const f = parseListenerFrame(frame)!;
        received.push({ sid, seq: f.seq, ts: f.timestamp, payload: Buffer.from(f.payload) });
      });
    });
    const sent: typeof received = [];
    let seq = 0;
    // Sizes 0..1276 in an order that makes the batch grow and shrink between flushes.
    for (let round = 0; round < 40; round++) {
      for (let k = 0; k < (round % 7) + 1; k++) {
        const len = (round * 131 + k * 977) % 1277;
        const payload = Buffer.alloc(len, (round + k) & 0xff);
        const { bytes, offset } = batch.reserve(1276);
        bytes.set(payload, offset);
        batch.commit(round, seq, seq * 960, len);
        sent.push({ sid: round, seq, ts: (seq * 960) >>> 0, payload });
        seq++;
      }
      batch.flush();
    }
    batch.flush();
    await new Promise((r) => setTimeout(r, 50));
    port1.close();
    expect(received).toEqual(sent);
  });
});
