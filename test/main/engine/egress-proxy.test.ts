/**
 * The egress proxy, ffmpeg's only way out.
 *
 * In process, with an injected resolver: names under `.test` resolve nowhere but here, so a
 * request that reaches a server at all proves the proxy connected to the address it checked
 * (what closes DNS rebinding), and one that does not proves the refusal. Through the real engine
 * and the real bundled ffmpeg, on loopback only: a hostname source plays (`localhost`, which the
 * bundled static ffmpeg crashes on when it resolves a name itself), and a redirect hop or an HLS
 * segment that points at a loopback address the allow list does not name is refused before any
 * connection; an https source (a certificate made for `localhost` now, trusted through
 * NODE_EXTRA_CA_CERTS) plays, also behind an absolute https redirect. What no test here can
 * show: a public name resolved through real DNS — there is no network — though it takes the same
 * path (dns.lookup in the engine) as `localhost`.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EgressProxy } from '../../../src/main/engine/egress-proxy.js';
import { remoteGuard } from '../../../src/main/engine/source.js';
import { resolveFfmpeg } from '../../../src/shared/ffmpeg.js';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';
import { api, FakeGateway } from './fake-gateway.js';

interface Origin {
  server: http.Server;
  port: number;
  /** Requests seen: method, url, Host header. */
  seen: { url: string; host: string | undefined }[];
  connections: number;
  close(): Promise<void>;
}

async function origin(address: string, handler: (req: http.IncomingMessage, res: http.ServerResponse) => void): Promise<Origin> {
  const seen: Origin['seen'] = [];
  const server = http.createServer((req, res) => {
    seen.push({ url: req.url ?? '', host: req.headers.host });
    handler(req, res);
  });
  const o = { server, port: 0, seen, connections: 0, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  server.on('connection', () => o.connections++);
  await new Promise<void>((resolve) => server.listen(0, address, resolve));
  o.port = (server.address() as net.AddressInfo).port;
  return o;
}

/** One request through the proxy, as ffmpeg sends it: absolute-form. */
function viaProxy(proxyUrl: string, target: string): Promise<{ status: number; reason: string; headers: http.IncomingHttpHeaders; body: string }> {
  const proxy = new URL(proxyUrl);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: proxy.hostname, port: proxy.port, path: target, headers: { host: new URL(target).host } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, reason: res.statusMessage ?? '', headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('egress proxy (in process, names resolved by a stand-in)', () => {
  let proxy: EgressProxy;
  let proxyUrl: string;
  let allowed: Origin;
  let forbidden: Origin;

  beforeAll(async () => {
    allowed = await origin('127.0.0.1', (req, res) => {
      if (req.url === '/hop') {
        res.writeHead(302, { location: `http://rebound.test:${forbidden.port}/secret` });
        return res.end();
      }
      if (req.url === '/to-https') {
        res.writeHead(301, { location: 'https://cdn.example:8443/a.mp3' });
        return res.end();
      }
      if (req.url === '/list.m3u8') {
        res.writeHead(200, { 'content-type': 'application/vnd.apple.mpegurl' });
        return res.end('#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI="https://keys.example/k"\n#EXTINF:2,\nhttps://cdn.example/seg1.ts\n#EXTINF:2,\nseg2.ts\n');
      }
      res.end('hello');
    });
    forbidden = await origin('127.0.0.2', (_req, res) => res.end('secret'));
    const lookup = async (host: string) => ({ 'good.test': ['127.0.0.1'], 'rebound.test': ['127.0.0.2'], 'mixed.test': ['127.0.0.1', '127.0.0.2'] })[host] ?? [];
    proxy = new EgressProxy(remoteGuard({ remoteAllow: ['127.0.0.1'], lookup }));
    proxyUrl = await proxy.listen();
  });
  afterAll(async () => {
    await proxy?.close();
    await allowed?.close();
    await forbidden?.close();
  });

  it('connects to the address it checked, with the Host the client asked for', async () => {
    const res = await viaProxy(proxyUrl, `http://good.test:${allowed.port}/x?y=1`);
    expect(res).toMatchObject({ status: 200, body: 'hello' });
    expect(allowed.seen.at(-1)).toEqual({ url: '/x?y=1', host: `good.test:${allowed.port}` });
  });

  it('refuses a name that resolves to an address not allowed (in whole or in part), before any connection', async () => {
    for (const name of ['rebound.test', 'mixed.test']) {
      const res = await viaProxy(proxyUrl, `http://${name}:${forbidden.port}/secret`);
      expect(res.status).toBe(403);
      expect(res.reason).toMatch(/127\.0\.0\.2, a non-public address/);
    }
    expect((await viaProxy(proxyUrl, `http://127.0.0.2:${forbidden.port}/secret`)).status).toBe(403);
    expect((await viaProxy(proxyUrl, `http://[::ffff:127.0.0.2]:${forbidden.port}/secret`)).status).toBe(403);
    expect((await viaProxy(proxyUrl, `http://nowhere.test:${forbidden.port}/`)).status).toBe(502);
    expect(forbidden.connections).toBe(0);
  });

  it('hands a redirect on unchanged for http (the next hop is checked in turn), in the marker form for https', async () => {
    const hop = await viaProxy(proxyUrl, `http://good.test:${allowed.port}/hop`);
    expect(hop.status).toBe(302);
    expect((await viaProxy(proxyUrl, hop.headers.location!)).status).toBe(403);
    expect(forbidden.connections).toBe(0);
    const tls = await viaProxy(proxyUrl, `http://good.test:${allowed.port}/to-https`);
    expect(tls.headers.location).toBe('http://cdn.example.tls.chorus.invalid:8443/a.mp3');
  });

  it('rewrites the absolute https URIs of an HLS playlist, and nothing else', async () => {
    const res = await viaProxy(proxyUrl, `http://good.test:${allowed.port}/list.m3u8`);
    expect(res.body).toBe(
      '#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI="http://keys.example.tls.chorus.invalid/k"\n#EXTINF:2,\nhttp://cdn.example.tls.chorus.invalid/seg1.ts\n#EXTINF:2,\nseg2.ts\n',
    );
    expect(Number(res.headers['content-length'])).toBe(Buffer.byteLength(res.body));
  });

  it('relays nothing but absolute http requests: origin-form gets 400, CONNECT 405', async () => {
    const origin400 = await new Promise<number>((resolve, reject) => {
      const port = new URL(proxyUrl).port;
      http.get({ host: '127.0.0.1', port, path: '/x', headers: { host: `good.test:${allowed.port}` } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      }).on('error', reject);
    });
    expect(origin400).toBe(400);
    const connect = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(new URL(proxyUrl).port), '127.0.0.1', () => socket.write(`CONNECT good.test:${allowed.port} HTTP/1.1\r\nHost: good.test\r\n\r\n`));
      let text = '';
      socket.on('data', (chunk) => (text += chunk.toString()));
      socket.on('close', () => resolve(text));
      socket.on('error', reject);
    });
    expect(connect).toMatch(/^HTTP\/1.1 405 /);
  });

  it('with tunnels (for yt-dlp), CONNECT opens a tunnel to a checked address and refuses one not allowed', async () => {
    const tunnels = new EgressProxy(remoteGuard({ remoteAllow: ['127.0.0.1'], lookup: async (host: string) => ({ 'good.test': ['127.0.0.1'], 'rebound.test': ['127.0.0.2'] })[host] ?? [] }), { tunnels: true });
    const port = Number(new URL(await tunnels.listen()).port);
    const through = (target: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = net.connect(port, '127.0.0.1', () => socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
        let text = '';
        socket.on('data', (chunk) => {
          text += chunk.toString();
          // Once the tunnel is open, speak HTTP to the origin through it.
          if (/^HTTP\/1.1 200 [^\n]*\r\n\r\n$/.test(text)) socket.write(`GET /tunnelled HTTP/1.1\r\nHost: good.test\r\nConnection: close\r\n\r\n`);
        });
        socket.on('close', () => resolve(text));
        socket.on('error', reject);
      });
    try {
      const open = await through(`good.test:${allowed.port}`);
      expect(open).toMatch(/^HTTP\/1.1 200 Connection established\r\n\r\nHTTP\/1.1 200 OK[\s\S]*hello$/);
      expect(allowed.seen.at(-1)).toEqual({ url: '/tunnelled', host: 'good.test' });
      expect(await through(`rebound.test:${forbidden.port}`)).toMatch(/^HTTP\/1.1 403 [^\r]*non-public address/);
      expect(await through('good.test')).toMatch(/^HTTP\/1.1 400 /);
      expect(forbidden.connections).toBe(0);
    } finally {
      await tunnels.close();
    }
  });
});

describe('egress proxy through the real engine and ffmpeg', () => {
  let engine: EngineFixture;
  let gw: FakeGateway;
  let media: Origin;
  let forbidden: Origin;
  let wav: Buffer;

  beforeAll(async () => {
    engine = await startEngineFixture({ CHORUS_REMOTE_ALLOW: 'localhost,127.0.0.1' });
    const file = path.join(engine.dir, 'tone.wav');
    const made = spawnSync(resolveFfmpeg().path, ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'sine=frequency=440:duration=1', '-ac', '2', '-y', file]);
    if (made.status !== 0) throw new Error(`cannot make ${file}: ${made.stderr}`);
    wav = fs.readFileSync(file);
    forbidden = await origin('127.0.0.2', (_req, res) => res.end(wav));
    media = await origin('127.0.0.1', (req, res) => {
      if (req.url === '/redirect') {
        res.writeHead(302, { location: `http://127.0.0.2:${forbidden.port}/tone.wav` });
        return res.end();
      }
      if (req.url === '/list.m3u8') {
        res.writeHead(200, { 'content-type': 'application/vnd.apple.mpegurl' });
        return res.end(`#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://127.0.0.2:${forbidden.port}/seg.wav\n#EXT-X-ENDLIST\n`);
      }
      res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': wav.length });
      res.end(wav);
    });
    gw = await FakeGateway.connect(engine.socketPath);
    gw.credit('nobody', 1); // credit mode: frames as fast as they are made
  });
  afterEach(() => {
    expect(forbidden.connections).toBe(0);
  });
  afterAll(async () => {
    await gw?.close();
    await media?.close();
    await forbidden?.close();
    await engine?.stop();
  });

  it('plays a source named by a host name: the engine resolves it, not ffmpeg', async () => {
    const play = await api(engine.url, 'POST', '/session/named/play', { url: `http://localhost:${media.port}/tone.wav` });
    expect(play.status).toBe(200);
    await gw.waitForEvent('named', 'ready', 10_000);
    gw.credit('named', 1000);
    await gw.waitForEvent('named', 'finished', 10_000);
    expect(gw.log('named').frames.length).toBe(50);
    expect(media.seen.some((r) => r.url === '/tone.wav' && r.host === `localhost:${media.port}`)).toBe(true);
  });

  it('refuses a redirect hop to an address the allow list does not name, as it would the URL itself', async () => {
    expect((await api(engine.url, 'POST', '/session/hop/play', { url: `http://127.0.0.1:${media.port}/redirect` })).status).toBe(200);
    const error = await gw.waitForEvent('hop', 'error', 10_000);
    expect(error.message).toMatch(/403.*127\.0\.0\.2, a non-public address/);
  });

  it('refuses an HLS segment at an address the allow list does not name', async () => {
    expect((await api(engine.url, 'POST', '/session/hls/play', { url: `http://127.0.0.1:${media.port}/list.m3u8` })).status).toBe(200);
    await gw.waitForEvent('hls', 'error', 10_000);
    expect(media.seen.some((r) => r.url === '/list.m3u8')).toBe(true);
    const metrics = (await api(engine.url, 'GET', '/metrics')).body as string;
    expect(Number(/^chorus_engine_egress_refused_total (\d+)$/m.exec(metrics)![1])).toBeGreaterThanOrEqual(2);
  });
});

describe('egress proxy: https through the real engine and ffmpeg', () => {
  let engine: EngineFixture;
  let gw: FakeGateway;
  let server: https.Server;
  let port = 0;

  beforeAll(async () => {
    const dir = fs.mkdtempSync(path.join(fs.realpathSync('/tmp'), 'chorus-tls-'));
    const [key, cert] = [path.join(dir, 'key.pem'), path.join(dir, 'cert.pem')];
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost']);
    if (made.status !== 0) throw new Error(`openssl could not make a certificate: ${made.stderr}`);
    const wavFile = path.join(dir, 'tone.wav');
    const tone = spawnSync(resolveFfmpeg().path, ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'sine=frequency=440:duration=1', '-ac', '2', '-y', wavFile]);
    if (tone.status !== 0) throw new Error(`cannot make ${wavFile}: ${tone.stderr}`);
    const wav = fs.readFileSync(wavFile);
    server = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, (req, res) => {
      if (req.url === '/hop') {
        res.writeHead(302, { location: `https://localhost:${port}/tone.wav` });
        return res.end();
      }
      res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': wav.length });
      res.end(wav);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
    // NODE_EXTRA_CA_CERTS is read once at start: only the engine process trusts this certificate.
    const extraCerts = process.env.NODE_EXTRA_CA_CERTS;
    process.env.NODE_EXTRA_CA_CERTS = cert;
    try {
      engine = await startEngineFixture({ CHORUS_REMOTE_ALLOW: 'localhost' });
    } finally {
      if (extraCerts === undefined) delete process.env.NODE_EXTRA_CA_CERTS;
      else process.env.NODE_EXTRA_CA_CERTS = extraCerts;
    }
    gw = await FakeGateway.connect(engine.socketPath);
    gw.credit('nobody', 1);
  });
  afterAll(async () => {
    await gw?.close();
    await new Promise((resolve) => server?.close(resolve));
    await engine?.stop();
  });

  for (const [id, route] of [['tls', '/tone.wav'], ['tlshop', '/hop']] as const) {
    it(`plays https://localhost${route}`, async () => {
      expect((await api(engine.url, 'POST', `/session/${id}/play`, { url: `https://localhost:${port}${route}` })).status).toBe(200);
      await gw.waitForEvent(id, 'ready', 10_000);
      gw.credit(id, 1000);
      await gw.waitForEvent(id, 'finished', 10_000);
      expect(gw.log(id).frames.length).toBe(50);
    });
  }
});
