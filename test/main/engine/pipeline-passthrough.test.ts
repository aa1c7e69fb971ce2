/**
 * Opus passthrough (src/main/engine/pipeline.ts, manager.ts, source.ts): a real engine plays Opus
 * files made by the bundled ffmpeg (libopus) in Ogg and in WebM. A play that may pass through
 * sends the file's own packets, byte for byte, with no frame encoded; a gain, a filter, the
 * `web` format, a source of 60 ms packets or an mp3 are encoded; a file whose packets turn from
 * 20 ms to 60 ms half way passes its first half through and is encoded from the frame reached.
 * The reference packets are cut out independently: the Ogg file read straight with the shared
 * reader, the WebM one through ffmpeg `-c copy -f ogg`.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { resolveFfmpeg } from '../../../src/shared/ffmpeg.js';
import { OggPacketReader } from '../../../src/shared/ogg.js';
import { opusPacketSamples } from '../../../src/shared/opus-packet.js';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';
import { api, decodeOpus, FakeGateway, type SessionLog } from './fake-gateway.js';

const FFMPEG = resolveFfmpeg().path;
const SECONDS = 3;

afterEach(() => FakeGateway.closeAll());

/** A tone under noise (so packets differ from one another), `seconds` long, encoded by ffmpeg's libopus or lame. */
function make(file: string, seconds: number, codec: string[], channels = 2): void {
  const input = `sine=frequency=440:sample_rate=48000:duration=${seconds}[a];anoisesrc=color=pink:amplitude=0.1:sample_rate=48000:duration=${seconds}[b];[a][b]amix=inputs=2`;
  execFileSync(FFMPEG, ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', input, '-ac', String(channels), ...codec, file]);
}

const opusCodec = (frameMs: number) => ['-c:a', 'libopus', '-b:a', '96k', '-frame_duration', String(frameMs)];

/** The Opus packets of an Ogg stream, cut by the shared reader. */
function oggPackets(ogg: Buffer): Buffer[] {
  const packets: Buffer[] = [];
  new OggPacketReader((b, s, e) => packets.push(Buffer.from(b.subarray(s, e)))).push(ogg);
  return packets;
}

/** The Opus packets of any container, as ffmpeg copies them into Ogg. */
function copiedPackets(file: string): Buffer[] {
  return oggPackets(execFileSync(FFMPEG, ['-hide_banner', '-loglevel', 'error', '-i', file, '-c', 'copy', '-f', 'ogg', 'pipe:1'], { maxBuffer: 16 * 1024 * 1024 }));
}

interface Counters {
  encoded: number;
  passthrough: number;
  runs: number;
  fallbacks: number;
}

async function counters(engine: EngineFixture): Promise<Counters> {
  const text = (await api(engine.url, 'GET', '/metrics')).body as string;
  const read = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)![1]);
  return {
    encoded: read('chorus_engine_frames_encoded_total'),
    passthrough: read('chorus_engine_frames_passthrough_total'),
    runs: read('chorus_engine_passthrough_runs_total'),
    fallbacks: read('chorus_engine_passthrough_fallbacks_total'),
  };
}

function delta(after: Counters, before: Counters): Counters {
  return {
    encoded: after.encoded - before.encoded,
    passthrough: after.passthrough - before.passthrough,
    runs: after.runs - before.runs,
    fallbacks: after.fallbacks - before.fallbacks,
  };
}

/** Plays `body` on `id` with credit to spare; resolves with its frames and the counters' change once `finished`. */
async function play(engine: EngineFixture, id: string, body: Record<string, unknown>): Promise<{ log: SessionLog; payloads: Buffer[]; counted: Counters }> {
  const gw = await FakeGateway.connect(engine.socketPath);
  const before = await counters(engine);
  const started = await api(engine.url, 'POST', `/session/${id}/play`, body);
  expect(started.status).toBe(200);
  gw.credit(id, 100_000);
  await gw.waitForEvent(id, 'finished', 40_000);
  const log = gw.log(id);
  await gw.close();
  return { log, payloads: log.frames.map((f) => f.payload!), counted: delta(await counters(engine), before) };
}

/**
 * Serves `file` at any path in 8 KiB writes, taking Range requests as a media server does. With
 * `cutAt`, the first response is cut there (the socket closed), and ffmpeg's own reconnects at
 * the byte reached are refused (403, as an expired media URL is) until a request from byte 0
 * comes: the engine's, opening the source again.
 */
async function serve(file: Buffer, cutAt?: number): Promise<{ base: string; requests: string[]; close(): Promise<void> }> {
  let cut = cutAt !== undefined;
  let refusing = false;
  const requests: string[] = [];
  const server = http.createServer(async (req, res) => {
    requests.push(req.headers.range ?? '');
    const from = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0);
    if (from === 0) refusing = false;
    if (refusing) {
      res.writeHead(403).end();
      return;
    }
    const headers = { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', 'content-length': file.length - from };
    if (from > 0) res.writeHead(206, { ...headers, 'content-range': `bytes ${from}-${file.length - 1}/${file.length}` });
    else res.writeHead(200, headers);
    const stopAt = cut ? cutAt! : file.length;
    refusing = cut;
    cut = false;
    for (let off = from; off < stopAt && !res.destroyed; off += 8192) {
      if (!res.write(file.subarray(off, Math.min(stopAt, off + 8192)))) await new Promise((r) => res.once('drain', r));
      await new Promise((r) => setTimeout(r, 2));
    }
    if (stopAt < file.length) res.socket?.end();
    else res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function expectSamePackets(got: Buffer[], want: Buffer[]): void {
  expect(got.length).toBe(want.length);
  const firstDifferent = got.findIndex((p, i) => !p.equals(want[i]!));
  expect(firstDifferent).toBe(-1);
}

describe('Opus passthrough', () => {
  let engine: EngineFixture;
  let oggRef: Buffer[];
  let webmRef: Buffer[];

  beforeAll(async () => {
    engine = await startEngineFixture({ CHORUS_ENCODER_THREADS: '1', CHORUS_REMOTE_ALLOW: '127.0.0.1', CHORUS_SOURCE_RETRIES: '3', CHORUS_SOURCE_RETRY_MS: '100' });
    const media = (name: string) => path.join(engine.mediaRoot, name);
    make(media('track.opus'), SECONDS, opusCodec(20));
    make(media('track.webm'), SECONDS, opusCodec(20));
    make(media('mono.opus'), SECONDS, opusCodec(20), 1);
    make(media('long-frames.opus'), SECONDS, opusCodec(60));
    make(media('track.mp3'), SECONDS, ['-c:a', 'libmp3lame', '-b:a', '128k']);
    // 2 s of 20 ms packets, then 2 s of 60 ms ones, in one WebM stream.
    make(media('half20.mka'), 2, opusCodec(20));
    make(media('half60.mka'), 2, opusCodec(60));
    fs.writeFileSync(media('halves.txt'), `file '${media('half20.mka')}'\nfile '${media('half60.mka')}'\n`);
    execFileSync(FFMPEG, ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'concat', '-safe', '0', '-i', media('halves.txt'), '-c', 'copy', media('turns-60.webm')]);
    oggRef = oggPackets(fs.readFileSync(media('track.opus')));
    webmRef = copiedPackets(media('track.webm'));
  }, 60_000);

  afterAll(async () => {
    await engine?.stop();
  });

  it('plays an Ogg Opus file by passthrough: the wire frames are its packets, byte for byte, none encoded', async () => {
    expect(oggRef.length).toBeGreaterThanOrEqual(SECONDS * 50);
    expect(oggRef.every((p) => opusPacketSamples(p) === 960)).toBe(true);
    const { log, payloads, counted } = await play(engine, 'ogg', { url: 'track.opus', format: 'opus' });
    expectSamePackets(payloads, oggRef);
    expect(counted).toEqual({ encoded: 0, passthrough: oggRef.length, runs: 1, fallbacks: 0 });
    const ready = log.events.find((e) => e.type === 'ready')!;
    expect(ready.duration).toBeCloseTo(SECONDS, 1);
    // What goes out decodes: the tone is there, as long as the file.
    expect(decodeOpus(payloads).length).toBe(payloads.length * 3840);
  });

  it('plays a WebM Opus file by passthrough, and `status` says so while it plays', async () => {
    const gw = await FakeGateway.connect(engine.socketPath);
    await api(engine.url, 'POST', '/session/webm-status/play', { url: 'track.webm', format: 'opus' });
    await gw.waitForEvent('webm-status', 'ready');
    expect((await api(engine.url, 'GET', '/session/webm-status/status')).body).toMatchObject({ state: 'streaming', passthrough: true });
    await api(engine.url, 'POST', '/session/webm-status/stop');
    await gw.close();

    const { log, payloads, counted } = await play(engine, 'webm', { url: 'track.webm', format: 'opus' });
    expectSamePackets(payloads, webmRef);
    expect(counted).toEqual({ encoded: 0, passthrough: webmRef.length, runs: 1, fallbacks: 0 });
    expect(log.events.find((e) => e.type === 'ready')!.duration).toBeCloseTo(SECONDS, 1);
  });

  it('keeps a mono source mono: its own packets go out (TOC stereo bit clear)', async () => {
    const { payloads, counted } = await play(engine, 'mono', { url: 'mono.opus', format: 'opus' });
    expectSamePackets(payloads, oggPackets(fs.readFileSync(path.join(engine.mediaRoot, 'mono.opus'))));
    expect(counted.encoded).toBe(0);
    expect(payloads.every((p) => (p[0]! & 0x04) === 0)).toBe(true);
  });

  it('encodes the same file when a gain or a filter changes its sound, or the format is web', async () => {
    for (const [id, extra] of [
      ['gain', { gain: 0.5 }],
      ['filter', { filters: { tremolo: { frequency: 4, depth: 0.5 } } }],
      ['web', { format: 'web' }],
    ] as const) {
      const { payloads, counted } = await play(engine, id, { url: 'track.opus', format: 'opus', ...extra });
      expect(counted, id).toEqual({ encoded: payloads.length, passthrough: 0, runs: 0, fallbacks: 0 });
      expect(Math.abs(payloads.length - oggRef.length), id).toBeLessThanOrEqual(2);
      expect(payloads[10]!.equals(oggRef[10]!), id).toBe(false);
    }
    // A gain of 1 changes nothing: passthrough.
    const unity = await play(engine, 'unity', { url: 'track.opus', format: 'opus', gain: 1 });
    expect(unity.counted.encoded).toBe(0);
    expectSamePackets(unity.payloads, oggRef);
  });

  it('encodes a source of 60 ms packets, in 20 ms frames: as many as its length holds', async () => {
    const { log, payloads, counted } = await play(engine, 'long', { url: 'long-frames.opus', format: 'opus' });
    expect(counted).toEqual({ encoded: payloads.length, passthrough: 0, runs: 1, fallbacks: 1 });
    expect(Math.abs(payloads.length - SECONDS * 50)).toBeLessThanOrEqual(3);
    expect(payloads.every((p) => opusPacketSamples(p) === 960)).toBe(true);
    expect(log.events.filter((e) => e.type === 'ready')).toHaveLength(1);
    expect(log.events.at(-1)!.type).toBe('finished');
  });

  it('a source whose packets turn to 60 ms half way passes its first half through, then is encoded from the frame reached', async () => {
    const whole = copiedPackets(path.join(engine.mediaRoot, 'turns-60.webm'));
    const passable = whole.findIndex((p) => opusPacketSamples(p) !== 960);
    expect(passable).toBeGreaterThanOrEqual(95);
    const sourceSamples = whole.reduce((n, p) => n + opusPacketSamples(p)!, 0);

    const { log, payloads, counted } = await play(engine, 'turns', { url: 'turns-60.webm', format: 'opus' });
    expect(counted).toMatchObject({ passthrough: passable, runs: 1, fallbacks: 1 });
    expect(counted.encoded).toBe(payloads.length - passable);
    expectSamePackets(payloads.slice(0, passable), whole.slice(0, passable));
    // Nothing lost or repeated at the turn: the frames add up to the source's length.
    expect(Math.abs(payloads.length - sourceSamples / 960)).toBeLessThanOrEqual(3);
    expect(log.events.filter((e) => e.type === 'ready')).toHaveLength(1);
    expect(log.events.at(-1)!.type).toBe('finished');
  });

  it('a seek (start_at) in passthrough starts at the packet of the asked position (an Ogg seek lands up to a page before it)', async () => {
    const startAt = 1.5;
    const { log, payloads, counted } = await play(engine, 'seek', { url: 'track.opus', format: 'opus', start_at: startAt });
    expect(counted.encoded).toBe(0);
    const first = oggRef.findIndex((p) => p.equals(payloads[0]!));
    expect(first).toBe(startAt * 50);
    expectSamePackets(payloads, oggRef.slice(first));
    const ready = log.events.find((e) => e.type === 'ready')!;
    expect(ready).toMatchObject({ start_at: startAt });
    expect(ready.duration).toBeCloseTo(SECONDS - startAt, 1);
  });

  it('an mp3 is encoded as ever: no passthrough run', async () => {
    const { payloads, counted } = await play(engine, 'mp3', { url: 'track.mp3', format: 'opus' });
    expect(counted).toEqual({ encoded: payloads.length, passthrough: 0, runs: 0, fallbacks: 0 });
    expect(Math.abs(payloads.length - SECONDS * 50)).toBeLessThanOrEqual(3);
  });

  it('passes a remote WebM through when its URL says Opus (a .webm name, a mime=audio/webm query), not when nothing says so', async () => {
    const webm = fs.readFileSync(path.join(engine.mediaRoot, 'track.webm'));
    const server = await serve(webm);
    try {
      for (const url of [`${server.base}/track.webm`, `${server.base}/videoplayback?itag=251&mime=audio%2Fwebm&dur=3.0`]) {
        const { payloads, counted } = await play(engine, `remote-${url.length}`, { url, format: 'opus' });
        expectSamePackets(payloads, webmRef);
        expect(counted, url).toEqual({ encoded: 0, passthrough: webmRef.length, runs: 1, fallbacks: 0 });
      }
      const unnamed = await play(engine, 'remote-unnamed', { url: `${server.base}/stream`, format: 'opus' });
      expect(unnamed.counted).toEqual({ encoded: unnamed.payloads.length, passthrough: 0, runs: 0, fallbacks: 0 });
    } finally {
      await server.close();
    }
  });

  it('a remote Opus source cut short is opened again at the packet reached, still by passthrough: every packet once', async () => {
    const webm = fs.readFileSync(path.join(engine.mediaRoot, 'track.webm'));
    const server = await serve(webm, Math.floor(webm.length * 0.4));
    try {
      const { log, payloads, counted } = await play(engine, 'remote-cut', { url: `${server.base}/track.webm`, format: 'opus' });
      expect(server.requests.length).toBeGreaterThanOrEqual(3);
      expect(log.events.map((e) => e.type)).toEqual(['ready', 'finished']);
      expectSamePackets(payloads, webmRef);
      expect(counted).toEqual({ encoded: 0, passthrough: webmRef.length, runs: 2, fallbacks: 0 });
    } finally {
      await server.close();
    }
  }, 60_000);
});

describe('CHORUS_OPUS_PASSTHROUGH=0', () => {
  it('encodes an Ogg Opus file that would pass through', async () => {
    const engine = await startEngineFixture({ CHORUS_OPUS_PASSTHROUGH: '0' });
    try {
      make(path.join(engine.mediaRoot, 'track.opus'), 1, opusCodec(20));
      const { payloads, counted } = await play(engine, 'off', { url: 'track.opus', format: 'opus' });
      expect(payloads.length).toBeGreaterThanOrEqual(50);
      expect(counted).toEqual({ encoded: payloads.length, passthrough: 0, runs: 0, fallbacks: 0 });
    } finally {
      await engine.stop();
    }
  });
});

describe('an ffmpeg whose log comes after its output', () => {
  it('`ready` still carries the source length: the output waits for ffmpeg to describe its input', async () => {
    // The two pipes are read in no set order; this ffmpeg holds its log in a file until it exits,
    // so every packet is read before the `Duration:` line.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-late-log-'));
    const wrapper = path.join(dir, 'ffmpeg');
    fs.writeFileSync(wrapper, `#!/bin/sh\nlog="${dir}/log.$$"\n${JSON.stringify(FFMPEG)} "$@" 2>"$log"\ncode=$?\ncat "$log" >&2\nrm -f "$log"\nexit $code\n`, { mode: 0o755 });
    const engine = await startEngineFixture({ CHORUS_FFMPEG: wrapper });
    try {
      const file = path.join(engine.mediaRoot, 'track.opus');
      make(file, SECONDS, opusCodec(20));
      const { log, payloads, counted } = await play(engine, 'late-log', { url: 'track.opus', format: 'opus' });
      expectSamePackets(payloads, oggPackets(fs.readFileSync(file)));
      expect(counted).toMatchObject({ encoded: 0, runs: 1 });
      const ready = log.events.find((e) => e.type === 'ready')!;
      expect(ready.duration).toBeCloseTo(SECONDS, 1);
    } finally {
      await engine.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
