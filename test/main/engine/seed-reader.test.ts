/**
 * A second reader of the engine's socket, written from the seed's description alone and sharing
 * no code with src/shared/protocol.ts: "a 4-byte big-endian length, a 24-byte space-padded
 * session id, the payload; or a JSON object on one line". It must read the engine correctly.
 */
import net from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';
import { api } from './fake-gateway.js';

let engine: EngineFixture;
beforeAll(async () => {
  engine = await startEngineFixture();
});
afterAll(async () => {
  await engine?.stop();
});

interface SeedRecord {
  frames: Map<string, Buffer[]>;
  events: Record<string, unknown>[];
}

/** The seed's reader: keep a byte buffer; `{` starts a line of JSON, anything else a frame. */
function seedReader(socket: net.Socket): SeedRecord {
  const record: SeedRecord = { frames: new Map(), events: [] };
  let pending = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    for (;;) {
      if (pending.length === 0) return;
      if (pending[0] === 0x7b) {
        const end = pending.indexOf(0x0a);
        if (end < 0) return;
        record.events.push(JSON.parse(pending.subarray(0, end).toString('utf8')));
        pending = pending.subarray(end + 1);
        continue;
      }
      if (pending.length < 4) return;
      const length = pending.readUInt32BE(0);
      if (pending.length < 4 + length) return;
      const id = pending.subarray(4, 28).toString('ascii').replace(/ +$/, '');
      const list = record.frames.get(id) ?? [];
      list.push(Buffer.from(pending.subarray(28, 4 + length)));
      record.frames.set(id, list);
      pending = pending.subarray(4 + length);
    }
  });
  return record;
}

it('an independent seed-style reader reads frames and events of several sessions correctly', async () => {
  const socket = net.connect(engine.socketPath);
  const record = seedReader(socket);
  // Ids that look like JSON or padding to a naive reader: a leading `{`, inner spaces, 24 bytes.
  const ids = ['{not json}', 'x y z', 'exactly-24-bytes-long-id'];
  await api(engine.url, 'POST', `/session/${encodeURIComponent(ids[0]!)}/play`, { url: 'tone:300?seconds=1', format: 'opus' });
  await api(engine.url, 'POST', `/session/${encodeURIComponent(ids[1]!)}/play`, { url: 'tone:400?seconds=1', format: 'pcm' });
  await api(engine.url, 'POST', `/session/${encodeURIComponent(ids[2]!)}/play`, { url: 'tone:500?seconds=1', format: 'web' });
  const deadline = Date.now() + 5000;
  while (record.events.filter((e) => e.type === 'finished').length < 3 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  socket.destroy();

  expect(record.events[0]).toEqual({ type: 'hello', protocol: 2, features: ['credit', 'next', 'alive'] });
  for (const id of ids) {
    const events = record.events.filter((e) => e.session_id === id);
    expect(events.map((e) => e.type)).toEqual(['ready', 'finished']);
    expect(events[0]).toMatchObject({ play: 1, duration: 1 });
    const frames = record.frames.get(id) ?? [];
    expect(frames.length).toBe(50);
    if (id === ids[1]) expect(frames.every((f) => f.length === 3840)).toBe(true);
    else expect(frames.every((f) => f.length > 0 && f.length <= 1275)).toBe(true);
  }
  expect([...record.frames.keys()].sort()).toEqual([...ids].sort());
});
