/**
 * chorus's Lavalink v4 REST API on a real gateway (with its engine), from the built CLI: version,
 * info, stats, track loading from tone:, a local file and an http file (tags read by ffmpeg),
 * decoding, Lavalink's authorization and error body, and chorus's own routes beside them.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveFfmpeg } from '../../../src/shared/ffmpeg.js';
import { decodeTrack } from '../../../src/main/lavalink/track-codec.js';
import { startChorus, tempDir, type ChorusProcess } from '../../helpers/chorus-process.js';

const TOKEN = 'lavalink-test-password-0123';
const LAVALINK_EXAMPLE =
  'QAAAjQIAJVJpY2sgQXN0bGV5IC0gTmV2ZXIgR29ubmEgR2l2ZSBZb3UgVXAADlJpY2tBc3RsZXlWRVZPAAAAAAADPCAAC2RRdzR3OVdnWGNRAAEAK2h0dHBzOi8vd3d3LnlvdXR1YmUuY29tL3dhdGNoP3Y9ZFF3NHc5V2dYY1EAB3lvdXR1YmUAAAAAAAAAAA==';

let dir: string;
let engine: ChorusProcess;
let gateway: ChorusProcess;
let fileServer: http.Server;
let fileBase: string;

async function call(method: string, url: string, opts: { auth?: string | null; body?: unknown } = {}) {
  const headers: Record<string, string> = {};
  if (opts.auth !== null) headers.authorization = opts.auth ?? TOKEN;
  const res = await fetch(gateway.httpUrl + url, {
    method,
    headers,
    ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
  });
  const text = await res.text();
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: res.status, body, text, type: res.headers.get('content-type'), apiVersion: res.headers.get('lavalink-api-version') };
}

const load = async (identifier: string) => (await call('GET', `/v4/loadtracks?identifier=${encodeURIComponent(identifier)}`)).body;

function expectLavalinkError(body: any, status: number, pathname: string): void {
  expect(body).toEqual({ timestamp: expect.any(Number), status, error: http.STATUS_CODES[status], message: expect.any(String), path: pathname });
  expect(Math.abs(body.timestamp - Date.now())).toBeLessThan(60_000);
}

beforeAll(async () => {
  dir = tempDir('chorus-lavalink-');
  const media = path.join(dir, 'media');
  fs.mkdirSync(media);
  const ffmpeg = resolveFfmpeg().path;
  execFileSync(ffmpeg, ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'sine=frequency=440:duration=2', '-metadata', 'title=Test Song', '-metadata', 'artist=The Band', path.join(media, 'song.mp3')]);
  fs.writeFileSync(path.join(media, 'noise.mp3'), 'this is not audio at all, just text');
  fs.writeFileSync(path.join(dir, 'outside.mp3'), fs.readFileSync(path.join(media, 'song.mp3')));
  fileServer = http.createServer((req, res) => {
    const file = path.join(media, path.basename(req.url ?? ''));
    if (!fs.existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'audio/mpeg' });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise<void>((r) => fileServer.listen(0, '127.0.0.1', r));
  fileBase = `http://127.0.0.1:${(fileServer.address() as AddressInfo).port}`;
  const socket = path.join(dir, 'engine.sock');
  const common = { CHORUS_TOKEN: TOKEN, CHORUS_SOCKET: socket, CHORUS_MEDIA_ROOT: media, CHORUS_REMOTE_ALLOW: '127.0.0.1' };
  engine = await startChorus('engine', { ...common, CHORUS_ENGINE_PORT: '0' });
  gateway = await startChorus('gateway', { ...common, CHORUS_PORT: '0', CHORUS_ENGINE_URL: engine.httpUrl, CHORUS_YTDLP: 'off' });
}, 30_000);

afterAll(async () => {
  await Promise.allSettled([gateway?.stop(), engine?.stop()]);
  fileServer?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('Lavalink REST on the gateway', () => {
  it('GET /version answers plain text, with the password itself as Authorization', async () => {
    const r = await call('GET', '/version');
    expect(r.status).toBe(200);
    expect(r.type).toMatch(/^text\/plain/);
    expect(r.text).toMatch(/^4\.\d+\.\d+/);
    expect(r.apiVersion).toBe('4');
  });

  it('refuses a wrong or missing password with Lavalink\'s error body; Bearer <password> is taken too', async () => {
    const none = await call('GET', '/v4/info', { auth: null });
    expect(none.status).toBe(401);
    expectLavalinkError(none.body, 401, '/v4/info');
    expect(none.apiVersion).toBe('4');
    const wrong = await call('GET', '/v4/info', { auth: 'youshallnotpass' });
    expect(wrong.status).toBe(401);
    expect((await call('GET', '/v4/info', { auth: `Bearer ${TOKEN}` })).status).toBe(200);
  });

  it("leaves chorus's own routes to the Bearer form", async () => {
    expect((await call('GET', '/sessions', { auth: `Bearer ${TOKEN}` })).status).toBe(200);
    const raw = await call('GET', '/sessions', { auth: TOKEN });
    expect(raw.status).toBe(401);
    expect(raw.body).toEqual({ error: expect.any(String) });
  });

  it('GET /v4/info names only what chorus has: its sources, the filters it applies', async () => {
    const { body } = await call('GET', '/v4/info');
    expect(body.version).toMatchObject({ major: 4, minor: 0, patch: 0 });
    expect(body.sourceManagers).toEqual(['local', 'http', 'tone']);
    expect(body.filters).toEqual(['volume', 'equalizer', 'timescale', 'tremolo', 'vibrato', 'rotation', 'channelMix', 'lowPass']);
    expect(body.plugins).toEqual([]);
  });

  it('GET /v4/stats has Lavalink\'s fields and no frameStats', async () => {
    const { body } = await call('GET', '/v4/stats');
    expect(body).toEqual({
      players: 0,
      playingPlayers: 0,
      uptime: expect.any(Number),
      memory: { free: expect.any(Number), used: expect.any(Number), allocated: expect.any(Number), reservable: expect.any(Number) },
      cpu: { cores: expect.any(Number), systemLoad: expect.any(Number), lavalinkLoad: expect.any(Number) },
    });
    expect(body.memory.used).toBeGreaterThan(1e6);
  });

  it('loads a tone as a track whose encoding decodes to its info', async () => {
    const result = await load('tone:440?seconds=5');
    expect(result.loadType).toBe('track');
    expect(result.data.info).toEqual({
      identifier: 'tone:440?seconds=5',
      isSeekable: true,
      author: 'chorus',
      length: 5000,
      isStream: false,
      position: 0,
      title: 'Tone 440 Hz',
      uri: 'tone:440?seconds=5',
      artworkUrl: null,
      isrc: null,
      sourceName: 'tone',
    });
    const { isSeekable, ...info } = result.data.info;
    expect(isSeekable).toBe(true);
    expect(decodeTrack(result.data.encoded).info).toEqual(info);
  });

  it('loads a local file under the media root with its tags and length', async () => {
    const result = await load('song.mp3');
    expect(result.loadType).toBe('track');
    expect(result.data.info).toMatchObject({ title: 'Test Song', author: 'The Band', identifier: 'song.mp3', sourceName: 'local', isStream: false });
    expect(result.data.info.length).toBeGreaterThan(1900);
    expect(result.data.info.length).toBeLessThan(2200);
  });

  it('loads an http file with its tags', async () => {
    const result = await load(`${fileBase}/song.mp3`);
    expect(result.loadType).toBe('track');
    expect(result.data.info).toMatchObject({ title: 'Test Song', author: 'The Band', uri: `${fileBase}/song.mp3`, sourceName: 'http' });
  });

  it('answers empty for nothing found, error with an exception for a refused or unreadable source', async () => {
    expect(await load('missing.mp3')).toEqual({ loadType: 'empty', data: {} });
    expect(await load('spotify:track:abc')).toEqual({ loadType: 'empty', data: {} });
    const outside = await load('../outside.mp3');
    expect(outside.loadType).toBe('error');
    expect(outside.data).toEqual({ message: expect.stringMatching(/\.\./), severity: 'common', cause: expect.any(String) });
    const noise = await load('noise.mp3');
    expect(noise.loadType).toBe('error');
    expect(noise.data.severity).toBe('suspicious');
    expect(noise.data.message).toMatch(/ffmpeg cannot read/);
    const search = await load('ytsearch:never gonna give you up');
    expect(search.loadType).toBe('error');
    expect(search.data).toMatchObject({ severity: 'common', message: expect.stringMatching(/need yt-dlp/) });
    const missing = await call('GET', '/v4/loadtracks');
    expect(missing.status).toBe(400);
    expectLavalinkError(missing.body, 400, '/v4/loadtracks');
  });

  it("decodes Lavalink's own track, alone and in a batch, and refuses what is not one", async () => {
    const one = await call('GET', `/v4/decodetrack?encodedTrack=${encodeURIComponent(LAVALINK_EXAMPLE)}`);
    expect(one.status).toBe(200);
    expect(one.body.encoded).toBe(LAVALINK_EXAMPLE);
    expect(one.body.info).toMatchObject({ identifier: 'dQw4w9WgXcQ', author: 'RickAstleyVEVO', length: 212000, title: 'Rick Astley - Never Gonna Give You Up', sourceName: 'youtube', isSeekable: true });
    const many = await call('POST', '/v4/decodetracks', { body: [LAVALINK_EXAMPLE, (await load('tone:300')).data.encoded] });
    expect(many.status).toBe(200);
    expect(many.body.map((t: any) => t.info.sourceName)).toEqual(['youtube', 'tone']);
    const bad = await call('GET', '/v4/decodetrack?encodedTrack=QUJD');
    expect(bad.status).toBe(400);
    expectLavalinkError(bad.body, 400, '/v4/decodetrack');
    expect((await call('POST', '/v4/decodetracks', { body: { not: 'an array' } })).status).toBe(400);
  });

  it('answers an unknown session with 404 Session not found', async () => {
    const r = await call('GET', '/v4/sessions/nosuchsession/players');
    expect(r.status).toBe(404);
    expectLavalinkError(r.body, 404, '/v4/sessions/nosuchsession/players');
    expect(r.body.message).toBe('Session not found');
  });
});
