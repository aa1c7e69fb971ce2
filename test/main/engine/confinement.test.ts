/**
 * Input confinement through the real engine: files only under the media root (by real path),
 * no private hosts (and no connection even attempted), no ffmpeg protocol smuggled in directly
 * or through a remote playlist. Every refusal is a 4xx for the caller and an `error` event for
 * the session; other sessions play on.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveFfmpeg } from '../../../src/shared/ffmpeg.js';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';
import { api, FakeGateway, sleep } from './fake-gateway.js';

function makeMedia(file: string, format: 'wav' | 'mpegts'): void {
  const out = spawnSync(resolveFfmpeg().path, [
    '-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'sine=frequency=440:duration=1', '-ac', '2', '-f', format, '-y', file,
  ]);
  if (out.status !== 0) throw new Error(`cannot make ${file}: ${out.stderr}`);
}

async function ffmpegStarted(url: string): Promise<number> {
  const metrics = (await api(url, 'GET', '/metrics')).body as string;
  return Number(/^chorus_engine_ffmpeg_started_total (\d+)$/m.exec(metrics)![1]);
}

describe('engine confinement (default policy)', () => {
  let engine: EngineFixture;
  let gw: FakeGateway;
  let listener: net.Server;
  let listenerPort = 0;
  let connectionsSeen = 0;

  beforeAll(async () => {
    engine = await startEngineFixture();
    makeMedia(path.join(engine.mediaRoot, 'ok.wav'), 'wav');
    fs.copyFileSync(path.join(engine.mediaRoot, 'ok.wav'), path.join(engine.dir, 'secret.wav'));
    fs.symlinkSync(path.join(engine.dir, 'secret.wav'), path.join(engine.mediaRoot, 'escape.wav'));
    listener = net.createServer((socket) => {
      connectionsSeen++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    listenerPort = (listener.address() as net.AddressInfo).port;
    gw = await FakeGateway.connect(engine.socketPath);
    gw.credit('nobody', 1);
  });
  afterAll(async () => {
    await gw?.close();
    await new Promise((resolve) => listener?.close(resolve));
    await engine?.stop();
  });

  it('plays a file under the media root', async () => {
    expect((await api(engine.url, 'POST', '/session/file-ok/play', { url: 'ok.wav' })).status).toBe(200);
    await gw.waitForEvent('file-ok', 'ready');
    gw.credit('file-ok', 1000);
    await gw.waitForEvent('file-ok', 'finished');
    expect(gw.log('file-ok').frames.length).toBe(50);
    expect(gw.log('file-ok').events[0]).toMatchObject({ type: 'ready', duration: 1 });
  });

  it('refuses `..` and a symlink out of the media root (403), with an error event for that session', async () => {
    for (const [id, url] of [['dots', '../secret.wav'], ['link', 'escape.wav'], ['abs', path.join(engine.dir, 'secret.wav')], ['fileurl', `file://${path.join(engine.dir, 'secret.wav')}`]]) {
      const res = await api(engine.url, 'POST', `/session/${id}/play`, { url });
      expect(res.status, url).toBe(403);
      expect(res.body).toMatchObject({ error: expect.any(String), state: 'error', session_id: id });
      const event = await gw.waitForEvent(id!, 'error');
      expect(event).toMatchObject({ message: res.body.error });
    }
  });

  it('answers 404 for a missing file, with an error event', async () => {
    const res = await api(engine.url, 'POST', '/session/missing/play', { url: 'missing.wav' });
    expect(res.status).toBe(404);
    expect((await gw.waitForEvent('missing', 'error'))).toMatchObject({ message: expect.stringMatching(/no such file/) });
  });

  it('refuses concat:, subfile:, data: and other ffmpeg protocols named in the url', async () => {
    const before = await ffmpegStarted(engine.url);
    for (const url of ['concat:ok.wav|ok.wav', 'subfile:,start,0,end,100,:ok.wav', 'data:audio/wav;base64,UklGRg==', 'pipe:0', 'tcp://127.0.0.1:1']) {
      const res = await api(engine.url, 'POST', '/session/smuggle/play', { url });
      expect(res.status, url).toBe(400);
      expect(res.body.error).toMatch(/unsupported source scheme/);
    }
    expect(await ffmpegStarted(engine.url)).toBe(before);
  });

  it('refuses loopback and private hosts before any connection is attempted', async () => {
    const before = await ffmpegStarted(engine.url);
    const urls = [
      `http://127.0.0.1:${listenerPort}/a.mp3`,
      `http://localhost:${listenerPort}/a.mp3`,
      `http://[::ffff:127.0.0.1]:${listenerPort}/a.mp3`,
      `http://2130706433:${listenerPort}/a.mp3`,
      `https://127.0.0.1:${listenerPort}/a.mp3`,
      'http://10.0.0.1/a.mp3',
      'http://169.254.169.254/latest/meta-data/',
    ];
    for (const url of urls) {
      const started = performance.now();
      const res = await api(engine.url, 'POST', '/session/ssrf/play', { url });
      expect(res.status, url).toBe(403);
      expect(res.body.error).toMatch(/non-public address.*CHORUS_REMOTE_ALLOW/);
      expect(performance.now() - started).toBeLessThan(1000); // refused, not timed out on 10.0.0.1
    }
    await sleep(300);
    expect(connectionsSeen).toBe(0);
    expect(await ffmpegStarted(engine.url)).toBe(before);
  });

  it('keeps other sessions playing through all of it', async () => {
    await api(engine.url, 'POST', '/session/bystander/play', { url: 'tone:440?seconds=1' });
    await gw.waitForEvent('bystander', 'ready');
    gw.credit('bystander', 1000);
    await api(engine.url, 'POST', '/session/bad/play', { url: '../secret.wav' });
    await gw.waitForEvent('bystander', 'finished');
    expect(gw.log('bystander').frames.length).toBe(50);
  });
});

describe('engine confinement (loopback allowed by CHORUS_REMOTE_ALLOW)', () => {
  let engine: EngineFixture;
  let server: http.Server;
  let base = '';
  const requests: string[] = [];
  let segment = '';

  beforeAll(async () => {
    engine = await startEngineFixture({ CHORUS_REMOTE_ALLOW: '127.0.0.1' });
    const wav = path.join(engine.dir, 'ok.wav');
    makeMedia(wav, 'wav');
    makeMedia(path.join(engine.mediaRoot, 'ok.ts'), 'mpegts');
    server = http.createServer((req, res) => {
      requests.push(req.url ?? '');
      if (req.url === '/ok.wav') return res.end(fs.readFileSync(wav));
      if (req.url === '/list.m3u8') return res.end(`#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n${segment}\n#EXT-X-ENDLIST\n`);
      res.statusCode = 404;
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  });
  afterAll(async () => {
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
    await engine?.stop();
  });

  it('plays an allowed http source', async () => {
    const gw = await FakeGateway.connect(engine.socketPath);
    gw.credit('nobody', 1);
    expect((await api(engine.url, 'POST', '/session/web-ok/play', { url: `${base}/ok.wav` })).status).toBe(200);
    await gw.waitForEvent('web-ok', 'ready');
    gw.credit('web-ok', 1000);
    await gw.waitForEvent('web-ok', 'finished');
    expect(gw.log('web-ok').frames.length).toBe(50);
    await gw.close();
  });

  it('a remote playlist cannot make ffmpeg open a local file', async () => {
    const gw = await FakeGateway.connect(engine.socketPath);
    segment = `file://${path.join(engine.mediaRoot, 'ok.ts')}`;
    requests.length = 0;
    expect((await api(engine.url, 'POST', '/session/playlist/play', { url: `${base}/list.m3u8` })).status).toBe(200);
    const event = await gw.waitForEvent('playlist', 'error');
    expect(event).toMatchObject({ message: expect.stringMatching(/not on whitelist|Failed to open segment/) });
    expect((await api(engine.url, 'GET', '/session/playlist/status')).body).toMatchObject({ state: 'error' });
    expect(requests).toEqual(['/list.m3u8']);
    expect(gw.log('playlist').frames.length).toBe(0);
    await gw.close();
  });

  it('an ffmpeg failure (404 from the server) is an error event with its reason', async () => {
    const gw = await FakeGateway.connect(engine.socketPath);
    expect((await api(engine.url, 'POST', '/session/gone/play', { url: `${base}/gone.mp3` })).status).toBe(200);
    const event = await gw.waitForEvent('gone', 'error');
    expect(event).toMatchObject({ message: expect.stringMatching(/ffmpeg exited with code \d+: .*404 Not Found/) });
    await gw.close();
  });
});
