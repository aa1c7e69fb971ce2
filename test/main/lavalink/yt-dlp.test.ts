/**
 * Lavalink loadtracks and play through yt-dlp, against a real gateway and engine:
 *
 * - a web page on a loopback HTTP server with an <audio> element, read by the real yt-dlp's
 *   generic extractor (no internet here), loads as a track and plays to the stand-in Discord
 *   voice server (yt-dlp finds the media URL at play time);
 * - yt-dlp's requests go through the guarded proxy: a redirect to an address CHORUS_REMOTE_ALLOW
 *   does not list is refused and never reaches the server;
 * - searches: the real yt-dlp cannot search offline, so a stand-in executable answers them as
 *   yt-dlp's --dump-single-json does; a run over CHORUS_YTDLP_TIMEOUT_MS is killed.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { resolveFfmpeg } from '../../../src/shared/ffmpeg.js';
import { startChorus, tempDir, type ChorusProcess } from '../../helpers/chorus-process.js';
import { VoiceServer } from '../../helpers/discord-voice-server.js';
import { resolveYtDlp } from '../../../src/main/lavalink/yt-dlp.js';

const TOKEN = 'lavalink-ytdlp-password';
const USER_ID = '830000000000000077';

let dir: string;
let engine: ChorusProcess;
let fakeEngine: ChorusProcess;
let real: ChorusProcess;
let fake: ChorusProcess;
let voice: VoiceServer;
let site: http.Server;
let siteBase: string;
const siteHosts: string[] = [];

async function rest(gateway: ChorusProcess, method: string, url: string, body?: unknown) {
  const res = await fetch(gateway.httpUrl + url, { method, headers: { authorization: TOKEN, 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}
const load = async (gateway: ChorusProcess, identifier: string) => (await rest(gateway, 'GET', `/v4/loadtracks?identifier=${encodeURIComponent(identifier)}`)).body;

/** A yt-dlp stand-in for searches: prints what --dump-single-json would, and records its arguments. */
const FAKE_YTDLP = `#!/usr/bin/env node
const fs = require('node:fs');
const args = process.argv.slice(2);
fs.appendFileSync(process.env.FAKE_YTDLP_LOG, JSON.stringify(args) + '\\n');
const target = args[args.length - 1];
if (target.includes('slow')) setTimeout(() => {}, 60000);
else if (target.startsWith('ytsearch10:') || target.startsWith('scsearch10:')) {
  const sc = target.startsWith('sc');
  const entries = target.endsWith('nothing') ? [] : [1, 2].map((n) => ({
    _type: 'url', ie_key: sc ? 'Soundcloud' : 'Youtube', id: 'vid' + n, title: 'Result ' + n + ' for ' + target.split(':')[1],
    url: sc ? 'https://soundcloud.com/a/t' + n : 'https://www.youtube.com/watch?v=vid' + n, duration: 100 + n, channel: 'Channel ' + n,
    thumbnails: [{ url: 'https://i.ytimg.com/vi/vid' + n + '/hq.jpg' }],
  }));
  process.stdout.write(JSON.stringify({ _type: 'playlist', id: target, title: target, entries }));
} else { process.stderr.write('ERROR: Unsupported URL: ' + target + '\\n'); process.exit(1); }
`;

beforeAll(async () => {
  const ytDlp = resolveYtDlp('');
  if (!ytDlp) throw new Error('these tests need yt-dlp on PATH (Debian: apt-get install yt-dlp; .ci/run installs it)');
  dir = tempDir('chorus-ytdlp-');
  const media = path.join(dir, 'media');
  fs.mkdirSync(media);
  execFileSync(resolveFfmpeg().path, ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'sine=frequency=660:duration=3', path.join(dir, 'song.mp3')]);
  const song = fs.readFileSync(path.join(dir, 'song.mp3'));
  site = http.createServer((req, res) => {
    siteHosts.push(req.headers.host ?? '');
    if (req.url === '/page.html') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html><head><title>A Page With Audio</title></head><body><audio controls src="/song.mp3"></audio></body></html>');
    } else if (req.url === '/song.mp3') {
      res.writeHead(200, { 'content-type': 'audio/mpeg', 'content-length': song.length });
      res.end(song);
    } else if (req.url === '/elsewhere') {
      res.writeHead(302, { location: `http://127.0.0.2:${(site.address() as AddressInfo).port}/page.html` });
      res.end();
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((r) => site.listen(0, '0.0.0.0', () => r()));
  siteBase = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
  const fakePath = path.join(dir, 'fake-yt-dlp');
  fs.writeFileSync(fakePath, FAKE_YTDLP, { mode: 0o755 });
  voice = await VoiceServer.start();
  const common = { CHORUS_TOKEN: TOKEN, CHORUS_SOCKET: path.join(dir, 'engine.sock'), CHORUS_MEDIA_ROOT: media, CHORUS_REMOTE_ALLOW: '127.0.0.1' };
  // An engine serves one gateway at a time (a second one is refused while the first is healthy),
  // so each gateway has its own.
  const fakeSocket = path.join(dir, 'fake-engine.sock');
  [engine, fakeEngine] = await Promise.all([
    startChorus('engine', { ...common, CHORUS_ENGINE_PORT: '0' }),
    startChorus('engine', { ...common, CHORUS_SOCKET: fakeSocket, CHORUS_ENGINE_PORT: '0' }),
  ]);
  const gatewayEnv = { ...common, CHORUS_PORT: '0', CHORUS_VOICE_ALLOW: '127.0.0.1', NODE_EXTRA_CA_CERTS: voice.caFile };
  real = await startChorus('gateway', { ...gatewayEnv, CHORUS_ENGINE_URL: engine.httpUrl, CHORUS_YTDLP: ytDlp });
  fake = await startChorus('gateway', {
    ...gatewayEnv,
    CHORUS_SOCKET: fakeSocket,
    CHORUS_ENGINE_URL: fakeEngine.httpUrl,
    CHORUS_YTDLP: fakePath,
    CHORUS_YTDLP_TIMEOUT_MS: '1500',
    FAKE_YTDLP_LOG: path.join(dir, 'fake.log'),
  });
}, 60_000);

afterAll(async () => {
  await Promise.allSettled([real?.stop(), fake?.stop(), engine?.stop(), fakeEngine?.stop()]);
  await voice?.stop();
  await new Promise((r) => site?.close(r));
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('yt-dlp', () => {
  it('/v4/info lists the yt-dlp sources when yt-dlp is there', async () => {
    expect((await rest(real, 'GET', '/v4/info')).body.sourceManagers).toEqual(['local', 'http', 'tone', 'youtube', 'soundcloud', 'yt-dlp']);
  });

  it('a web page with an <audio> loads through the generic extractor and plays to the voice server', async () => {
    const result = await load(real, `${siteBase}/page.html`);
    expect(result.loadType, JSON.stringify(result)).toBe('track');
    // The generic extractor names the page's media after the page and reads no duration: a stream, as Lavalink's http source shows one.
    expect(result.data.info).toMatchObject({ title: expect.stringMatching(/^A Page With Audio/), sourceName: 'yt-dlp', uri: `${siteBase}/page.html`, isStream: true });
    // A bot plays it: yt-dlp finds the media URL now, the engine plays it under its own source rules.
    const ws = new WebSocket(real.httpUrl.replace('http', 'ws') + '/v4/websocket', { headers: { Authorization: TOKEN, 'User-Id': USER_ID } });
    const messages: any[] = [];
    ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
    await new Promise((r) => ws.once('open', r));
    while (!messages.some((m) => m.op === 'ready')) await new Promise((r) => setTimeout(r, 20));
    const creds = { guildId: '931000000000000001', channelId: '932000000000000001', userId: USER_ID, sessionId: `s-${randomUUID()}`, token: `t-${randomUUID()}` };
    const g = voice.guild(creds);
    const base = `/v4/sessions/${messages[0].sessionId}/players/${creds.guildId}`;
    const r = await rest(real, 'PATCH', base, { voice: { token: creds.token, endpoint: voice.endpoint, sessionId: creds.sessionId, channelId: creds.channelId }, track: { encoded: result.data.encoded } });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    // A yt-dlp run (Python) for the media URL stands before the first packet: allow a slow machine.
    await g.waitForPackets(50, 20_000).catch(async (err: Error) => {
      // Say what the client heard and what the player shows, not just that no audio came.
      const player = (await rest(real, 'GET', base)).body;
      throw new Error(`${err.message}; client messages ${JSON.stringify(messages.filter((m) => m.op !== 'stats'))}; player ${JSON.stringify(player)}`);
    });
    expect(g.packets.filter((p) => !p.silence).length).toBeGreaterThanOrEqual(50);
    expect(messages.filter((m) => m.op === 'event').map((m) => m.type)).toEqual(['TrackStartEvent']);
    expect(g.violations).toEqual([]);
    await rest(real, 'DELETE', base);
    ws.close();
  });

  it("yt-dlp's requests pass the remote-source check: a redirect to an address not allowed is refused", async () => {
    const before = siteHosts.length;
    const result = await load(real, `${siteBase}/elsewhere`);
    expect(result.loadType).toBe('error');
    expect(result.data.message).toMatch(/yt-dlp/);
    expect(siteHosts.slice(before).some((h) => h.startsWith('127.0.0.2'))).toBe(false);
  });

  it('searches answer Lavalink\'s search result from yt-dlp\'s JSON; ytmsearch searches YouTube; no result is empty', async () => {
    const yt = await load(fake, 'ytsearch:never gonna');
    expect(yt.loadType).toBe('search');
    expect(yt.data).toHaveLength(2);
    expect(yt.data[0].info).toMatchObject({ title: 'Result 1 for never gonna', author: 'Channel 1', length: 101_000, identifier: 'vid1', uri: 'https://www.youtube.com/watch?v=vid1', sourceName: 'youtube', artworkUrl: 'https://i.ytimg.com/vi/vid1/hq.jpg', isStream: false });
    const decoded = (await rest(fake, 'GET', `/v4/decodetrack?encodedTrack=${encodeURIComponent(yt.data[0].encoded)}`)).body;
    expect(decoded.info).toMatchObject({ identifier: 'vid1', sourceName: 'youtube' });
    expect((await load(fake, 'ytmsearch:x')).loadType).toBe('search');
    const sc = await load(fake, 'scsearch:y');
    expect(sc.data[0].info).toMatchObject({ sourceName: 'soundcloud', uri: 'https://soundcloud.com/a/t1' });
    expect((await load(fake, 'ytsearch:nothing')).loadType).toBe('empty');
    const calls = fs.readFileSync(path.join(dir, 'fake.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as string[]);
    expect(calls.map((c) => c.at(-1))).toEqual(['ytsearch10:never gonna', 'ytsearch10:x', 'scsearch10:y', 'ytsearch10:nothing']);
    // Every run goes through the guarded proxy, and reads no configuration of its own.
    expect(calls.every((c) => c.includes('--ignore-config') && /^http:\/\/127\.0\.0\.1:\d+$/.test(c[c.indexOf('--proxy') + 1]!))).toBe(true);
  });

  it('a run over CHORUS_YTDLP_TIMEOUT_MS is killed and answers an error', async () => {
    const started = performance.now();
    const result = await load(fake, 'ytsearch:slow');
    expect(result).toMatchObject({ loadType: 'error', data: { severity: 'fault', message: expect.stringMatching(/took more than 1.5 s/) } });
    expect(performance.now() - started).toBeLessThan(5000);
  });
});
