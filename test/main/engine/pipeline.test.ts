/**
 * A remote source that fails mid-track (src/main/engine/pipeline.ts, manager.ts, and the egress
 * proxy between): loopback HTTP servers that reset the connection, cut the body short, or
 * throttle and stall, each serving a WAV chirp. The track must play to its end with every frame
 * once: the engine's PCM frames are compared byte for byte with the source decoded straight.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveFfmpeg } from '../../../src/shared/ffmpeg.js';
import { chirpExpression } from '../../helpers/audio-analysis.js';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';
import { api, FakeGateway } from './fake-gateway.js';

const SECONDS = 6;
const CHUNK = 16 * 1024;

interface Fault {
  /** Byte of the file where the response is cut. */
  at: number;
  how: 'reset' | 'close';
}

interface SourceServer {
  url: string;
  /** Range headers asked for, in order ('' for none). */
  requests: string[];
  close(): Promise<void>;
}

/**
 * Serves `file` in 16 KiB writes (`gapMs` apart, `stallMs` once at `stallAt`), honouring Range
 * only when `ranges`; each fault cuts the first response that reaches its byte, in order.
 */
async function sourceServer(file: Buffer, opts: { ranges: boolean; faults?: Fault[]; gapMs?: number; stall?: { at: number; ms: number } }): Promise<SourceServer> {
  const faults = [...(opts.faults ?? [])];
  const requests: string[] = [];
  let stalled = false;
  const server = http.createServer(async (req, res) => {
    requests.push(req.headers.range ?? '');
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const from = opts.ranges && m ? Number(m[1]) : 0;
    const headers: http.OutgoingHttpHeaders = { 'content-type': 'audio/wav', 'content-length': file.length - from };
    if (opts.ranges) headers['accept-ranges'] = 'bytes';
    if (from > 0) res.writeHead(206, { ...headers, 'content-range': `bytes ${from}-${file.length - 1}/${file.length}` });
    else res.writeHead(200, headers);
    let closed = false;
    res.on('close', () => (closed = true));
    for (let off = from; off < file.length && !closed; off += CHUNK) {
      const end = Math.min(file.length, off + CHUNK);
      const fault = faults[0];
      if (fault && off <= fault.at && end > fault.at) {
        faults.shift();
        res.write(file.subarray(off, fault.at), () => setTimeout(() => (fault.how === 'reset' ? res.socket?.resetAndDestroy() : res.socket?.end()), 20));
        return;
      }
      if (opts.stall && !stalled && end > opts.stall.at) {
        stalled = true;
        await new Promise((r) => setTimeout(r, opts.stall!.ms));
      }
      if (!res.write(file.subarray(off, end))) await new Promise((r) => res.once('drain', r));
      await new Promise((r) => setTimeout(r, opts.gapMs ?? 2));
    }
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/chirp.wav`,
    requests,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

let engine: EngineFixture;
let gw: FakeGateway;
let wav: Buffer;
/** The source's PCM as ffmpeg decodes the file directly. */
let expected: Buffer;
let plays = 0;

beforeAll(async () => {
  engine = await startEngineFixture({ CHORUS_REMOTE_ALLOW: '127.0.0.1', CHORUS_SOURCE_RETRIES: '3', CHORUS_SOURCE_RETRY_MS: '100', CHORUS_PAUSE_RELEASE_S: '1' });
  const file = path.join(engine.dir, 'chirp.wav');
  const ffmpeg = resolveFfmpeg().path;
  const made = spawnSync(ffmpeg, ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', `aevalsrc=${chirpExpression({ f0: 200, slope: 300 })}:s=48000:d=${SECONDS}`, '-ac', '2', '-c:a', 'pcm_s16le', '-y', file]);
  expect(made.status, String(made.stderr)).toBe(0);
  wav = fs.readFileSync(file);
  fs.copyFileSync(file, path.join(engine.mediaRoot, 'chirp.wav'));
  expected = spawnSync(ffmpeg, ['-hide_banner', '-loglevel', 'error', '-i', file, '-f', 's16le', '-ac', '2', '-ar', '48000', 'pipe:1'], { maxBuffer: 64 << 20 }).stdout;
  expect(expected.length).toBe(SECONDS * 48_000 * 4);
  gw = await FakeGateway.connect(engine.socketPath);
}, 30_000);

afterAll(async () => {
  await gw?.close();
  await engine?.stop();
});

/** Plays `url` as PCM with all the credit it wants; resolves with its frames joined, and its events. */
async function playAll(url: string, timeoutMs = 30_000): Promise<{ pcm: Buffer; events: string[]; error?: string }> {
  const id = `remote-${++plays}`;
  const res = await api(engine.url, 'POST', `/session/${id}/play`, { url, format: 'pcm' });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  gw.credit(id, 1_000_000);
  const log = gw.log(id);
  await gw.waitFor(() => log.events.some((e) => e.type === 'finished' || e.type === 'error'), timeoutMs, `the end of ${id}`);
  const error = log.events.find((e) => e.type === 'error');
  return {
    pcm: Buffer.concat(log.frames.map((f) => f.payload!)),
    events: log.events.map((e) => e.type),
    ...(error && 'message' in error ? { error: error.message } : {}),
  };
}

async function retries(): Promise<number> {
  const text = await (await fetch(`${engine.url}/metrics`)).text();
  return Number(/^chorus_engine_source_retries_total (\d+)$/m.exec(text)?.[1]);
}

describe('a remote source that ends early is opened again at the frame reached', () => {
  it('a reset mid-file from a server that takes ranges: ffmpeg reconnects at the byte reached; every frame once', async () => {
    const server = await sourceServer(wav, { ranges: true, faults: [{ at: 500_000, how: 'reset' }] });
    try {
      const { pcm, events } = await playAll(server.url);
      expect(events).toEqual(['ready', 'finished']);
      expect(pcm.equals(expected), `${pcm.length} bytes of ${expected.length}`).toBe(true);
      expect(server.requests).toContain('bytes=500000-');
    } finally {
      await server.close();
    }
  });

  it('a body cut short (clean close) and a reset, from a server that ignores ranges: the engine opens it again at the frame, twice; every frame once', async () => {
    const before = await retries();
    const server = await sourceServer(wav, { ranges: false, faults: [{ at: 400_000, how: 'close' }, { at: 900_000, how: 'reset' }] });
    try {
      const { pcm, events } = await playAll(server.url);
      expect(events).toEqual(['ready', 'finished']);
      expect(pcm.length).toBe(expected.length);
      expect(pcm.equals(expected)).toBe(true);
      expect(await retries()).toBe(before + 2);
    } finally {
      await server.close();
    }
  });

  it('a throttled server that stalls for 2 s mid-file: the track plays to its end, nothing repeated or lost', async () => {
    const server = await sourceServer(wav, { ranges: true, gapMs: 60, stall: { at: 600_000, ms: 2000 } });
    try {
      const { pcm, events } = await playAll(server.url, 60_000);
      expect(events).toEqual(['ready', 'finished']);
      expect(pcm.equals(expected)).toBe(true);
    } finally {
      await server.close();
    }
  }, 60_000);

  it('more failures than CHORUS_SOURCE_RETRIES: `error` saying so, after the frames it had', async () => {
    const faults: Fault[] = [200_000, 300_000, 400_000, 500_000, 600_000].map((at) => ({ at, how: 'close' }));
    const server = await sourceServer(wav, { ranges: false, faults });
    try {
      const { pcm, events, error } = await playAll(server.url);
      expect(events).toEqual(['ready', 'error']);
      expect(error).toMatch(/ended early.*gave up after 3 retries: CHORUS_SOURCE_RETRIES/);
      // What came is the source's start, each frame once, up to the last failure.
      expect(pcm.length).toBeGreaterThan(0);
      expect(pcm.equals(expected.subarray(0, pcm.length))).toBe(true);
    } finally {
      await server.close();
    }
  });
});

describe('a session paused past CHORUS_PAUSE_RELEASE_S', () => {
  it('gives back its ffmpeg and unsent frames, and on resume plays on from the first frame not sent: every frame once, one ready', async () => {
    const id = 'long-pause';
    const res = await api(engine.url, 'POST', `/session/${id}/play`, { url: 'chirp.wav', format: 'pcm' });
    expect(res.status).toBe(200);
    const log = gw.log(id);
    gw.credit(id, 100);
    await gw.waitFor(() => log.frames.length === 100, 10_000, '100 frames');
    // The engine holds frames made past the credit (its buffer), and ffmpeg, until the release.
    expect((await api(engine.url, 'POST', `/session/${id}/pause`)).status).toBe(200);
    const held = (await api(engine.url, 'GET', `/session/${id}/status`)).body;
    expect(held.frames_queued).toBeGreaterThan(0);
    const t0 = Date.now();
    let status = held;
    while (status.ffmpeg_pid !== null && Date.now() - t0 < 10_000) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await api(engine.url, 'GET', `/session/${id}/status`)).body;
    }
    expect(status).toMatchObject({ state: 'paused', ffmpeg_pid: null, frames_queued: 0, frames_sent: 100, position: 2 });
    expect(fs.existsSync(`/proc/${held.ffmpeg_pid}`)).toBe(false);

    expect((await api(engine.url, 'POST', `/session/${id}/resume`)).status).toBe(200);
    gw.credit(id, 1_000_000);
    await gw.waitForEvent(id, 'finished', 20_000);
    expect(log.events.map((e) => e.type)).toEqual(['ready', 'finished']);
    const pcm = Buffer.concat(log.frames.map((f) => f.payload!));
    expect(pcm.length).toBe(expected.length);
    expect(pcm.equals(expected)).toBe(true);
  });
});
