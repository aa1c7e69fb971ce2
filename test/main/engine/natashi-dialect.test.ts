/**
 * The engine with CHORUS_ENGINE_DIALECT=natashi, read the way natashi's Node layer reads it (a
 * brace-counting reader, every payload of a session appended to one Ogg stream): no `hello`,
 * each session's bytes are a valid Ogg Opus stream (checked by ffmpeg, which shares no code with
 * chorus) that decodes to that session's tone (@discordjs/opus on the packets).
 */
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import net from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { OggPacketReader } from '../../../src/shared/ogg.js';
import { resolveFfmpeg } from '../../../src/shared/ffmpeg.js';
import { channel, dominantFrequency, goertzel } from '../../helpers/audio-analysis.js';
import { NatashiReader } from '../../helpers/natashi-engine.js';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';
import { api } from './fake-gateway.js';

const require = createRequire(import.meta.url);
const { OpusEncoder } = require('@discordjs/opus') as typeof import('@discordjs/opus');

let engine: EngineFixture;
beforeAll(async () => {
  engine = await startEngineFixture({ CHORUS_ENGINE_DIALECT: 'natashi' });
});
afterAll(async () => {
  await engine?.stop();
});

it('serves natashi: no hello, Ogg Opus per session (headers first, a page per packet), the right tone in each', async () => {
  const reader = new NatashiReader();
  const socket = net.connect(engine.socketPath);
  socket.on('data', (chunk: Buffer) => reader.push(chunk));
  await new Promise((r) => socket.once('connect', r));
  const tones = { 'ogg-a': { hz: 440, format: 'opus' }, 'ogg-b': { hz: 660, format: 'web' }, 'ogg-{c}': { hz: 880, format: 'opus' } } as const;
  for (const [id, t] of Object.entries(tones)) {
    const res = await api(engine.url, 'POST', `/session/${encodeURIComponent(id)}/play`, { url: `tone:${t.hz}?seconds=1`, format: t.format, duration: 0 });
    expect(res.status).toBe(200);
  }
  // An error whose message holds braces and quotes must not lose the reader the stream.
  await api(engine.url, 'POST', '/session/broken/play', { url: 'no}such{"file.wav' });
  const deadline = Date.now() + 8000;
  while (reader.read.events.filter((e) => e.type === 'finished').length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  socket.destroy();

  expect(reader.read.events.some((e) => e.type === 'hello')).toBe(false);
  expect(reader.read.events.find((e) => e.session_id === 'broken')).toMatchObject({ type: 'error' });
  for (const [id, t] of Object.entries(tones)) {
    expect(reader.read.events.filter((e) => e.session_id === id).map((e) => e.type)).toEqual(['ready', 'finished']);
    const payloads = reader.read.payloads.get(id)!;
    const stream = Buffer.concat(payloads);
    // One page a frame: two header pages, then 50 pages of one 20 ms packet.
    expect(payloads.every((p) => p.subarray(0, 4).toString() === 'OggS')).toBe(true);
    expect(payloads[0]!.subarray(28, 36).toString()).toBe('OpusHead');
    expect(payloads[1]!.subarray(28, 36).toString()).toBe('OpusTags');

    const packets: Buffer[] = [];
    const ogg = new OggPacketReader((b, s, e) => packets.push(Buffer.from(b.subarray(s, e))));
    ogg.push(stream);
    expect(ogg.counters).toMatchObject({ pages: 52, badPages: 0, skippedBytes: 0 });
    expect(packets).toHaveLength(50);
    const decoder = new OpusEncoder(48_000, 2);
    const heard = channel(Buffer.concat(packets.map((p) => decoder.decode(p)))).subarray(960 * 3);
    expect(Math.abs(dominantFrequency(heard) - t.hz)).toBeLessThanOrEqual(2);

    // ffmpeg, a demuxer that is not chorus's, reads the same bytes: valid CRCs, granules, headers.
    const pcm = execFileSync(resolveFfmpeg().path, ['-hide_banner', '-loglevel', 'error', '-f', 'ogg', '-i', 'pipe:0', '-f', 's16le', '-ac', '2', '-ar', '48000', 'pipe:1'], { input: stream });
    const samples = channel(pcm);
    expect(Math.abs(samples.length - 48_000)).toBeLessThanOrEqual(960);
    const own = goertzel(samples.subarray(4800), 48_000, t.hz);
    expect(Math.abs(dominantFrequency(samples.subarray(4800)) - t.hz)).toBeLessThanOrEqual(2);
    for (const other of Object.values(tones)) if (other.hz !== t.hz) expect(goertzel(samples.subarray(4800), 48_000, other.hz)).toBeLessThan(own / 1000);
  }
});
