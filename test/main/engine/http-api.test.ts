/** The engine's HTTP API on bad input and at its limits: always a 4xx with a JSON `{"error"}`. */
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';
import { api } from './fake-gateway.js';

let engine: EngineFixture;
beforeAll(async () => {
  engine = await startEngineFixture({ CHORUS_MAX_SESSIONS: '2' });
});
afterAll(async () => {
  await engine?.stop();
});

function expectError(res: { status: number; body: any }, status: number, message?: RegExp): void {
  expect(res.status).toBe(status);
  expect(typeof res.body?.error).toBe('string');
  if (message) expect(res.body.error).toMatch(message);
}

/** A request with headers fetch() will not send (Host) or a body that is not JSON. */
function raw(
  base: string,
  method: string,
  path: string,
  headers: http.OutgoingHttpHeaders,
  body?: string,
): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = http.request(base + path, { method, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body: text === '' ? undefined : JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Bytes written as they are on a fresh connection (a request line no client library would send). */
function rawBytes(base: string, request: string): Promise<string> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => socket.end(request));
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
}

describe('engine HTTP API', () => {
  it('refuses a cross-site page and a rebound Host on every route, like the gateway', async () => {
    const host = new URL(engine.url).host;
    const crossSite = await raw(engine.url, 'POST', '/session/xsite/play', { 'content-type': 'text/plain', origin: 'http://evil.example', host }, JSON.stringify({ url: 'tone:440' }));
    expectError(crossSite, 403, /cross-origin request refused/);
    expectError(await api(engine.url, 'GET', '/session/xsite/status'), 404);
    for (const path of ['/health', '/metrics', '/session/xsite/status']) {
      expectError(await raw(engine.url, 'GET', path, { host: `evil.example:${new URL(engine.url).port}` }), 403, /loopback names only/);
      expectError(await raw(engine.url, 'GET', path, { host, origin: 'http://evil.example' }), 403, /cross-origin/);
    }
    // Its own origin, and loopback names, are the engine.
    expect((await raw(engine.url, 'GET', '/health', { host, origin: `http://${host}` })).status).toBe(200);
    expect((await raw(engine.url, 'GET', '/health', { host: `localhost:${new URL(engine.url).port}` })).status).toBe(200);
  });

  it('answers what its HTTP parser refuses with a JSON reason', async () => {
    const big = await rawBytes(engine.url, `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(big).toMatch(/^HTTP\/1.1 431 /);
    expect(JSON.parse(big.slice(big.indexOf('\r\n\r\n') + 4)).error).toMatch(/HPE_HEADER_OVERFLOW/);
    for (const target of ['//[', '//a:99999/x']) {
      const answer = await rawBytes(engine.url, `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
      expect(answer).toMatch(/^HTTP\/1.1 400 /);
      expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)).error).toMatch(/request target/);
    }
  });

  it('refuses bad session ids with 400, never truncating them', async () => {
    const long = 'a'.repeat(25);
    expectError(await api(engine.url, 'POST', `/session/${long}/play`, { url: 'tone:440' }), 400, /25 characters/);
    expectError(await api(engine.url, 'POST', '/session//play', { url: 'tone:440' }), 400, /empty/);
    expectError(await api(engine.url, 'POST', '/session/a%01b/play', { url: 'tone:440' }), 400, /printable ASCII/);
    expectError(await api(engine.url, 'POST', '/session/%20lead/play', { url: 'tone:440' }), 400, /leading or trailing space/);
    expectError(await api(engine.url, 'POST', '/session/%E2%82%AC/play', { url: 'tone:440' }), 400, /printable ASCII/);
    expectError(await api(engine.url, 'GET', `/session/${long}/status`), 400);
    expectError(await api(engine.url, 'POST', '/session/%zz/play', { url: 'tone:440' }), 400, /percent-encoding/);
  });

  it('refuses bad play bodies with 400', async () => {
    expectError(await api(engine.url, 'POST', '/session/b/play', { format: 'opus' }), 400, /"url"/);
    expectError(await api(engine.url, 'POST', '/session/b/play', 'not json {'), 400, /not JSON/);
    expectError(await api(engine.url, 'POST', '/session/b/play', '[1,2]'), 400, /JSON object/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'tone:440', format: 'mp3' }), 400, /format/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'tone:440', start_at: -1 }), 400, /start_at/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'tone:440', duration: -1 }), 400, /duration/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'tone:440', duration: '10' }), 400, /duration/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'tone:440', gain: -0.5 }), 400, /"gain"/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'tone:440', gain: 11 }), 400, /"gain" must be a number from 0 to 10/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'tone:440', gain: '2' }), 400, /"gain"/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'tone:440', filters: { karaoke: { level: 1 } } }), 400, /"karaoke" is not supported/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'tone:440', filters: { timescale: { rate: 50 } } }), 400, /filters\.timescale\.rate/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'tone:440', filters: 'volume=2,amovie=/etc/passwd' }), 400, /filters/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'tone:abc' }), 400, /bad tone/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'gopher://x/' }), 400, /unsupported source scheme/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'http://[' }), 400, /not a valid URL/);
    expectError(await api(engine.url, 'POST', '/session/b/play', { url: 'http://example.com:65536/' }), 400, /not a valid URL/);
    expectError(await api(engine.url, 'POST', '/session/b/play', 'x'.repeat(70 * 1024)), 413, /64/);
  });

  it('answers 404 for unknown ids and routes, 405 for wrong methods', async () => {
    for (const action of ['stop', 'pause', 'resume']) {
      expectError(await api(engine.url, 'POST', `/session/ghost/${action}`), 404, /no session/);
    }
    expectError(await api(engine.url, 'GET', '/session/ghost/status'), 404, /no session/);
    expectError(await api(engine.url, 'GET', '/nowhere'), 404, /no route/);
    expectError(await api(engine.url, 'GET', '/session/ghost/play'), 405, /POST/);
    expectError(await api(engine.url, 'POST', '/health'), 405, /GET/);
  });

  it('answers 429 past CHORUS_MAX_SESSIONS, and a replacing play or a freed slot still works', async () => {
    expect((await api(engine.url, 'POST', '/session/one/play', { url: 'tone:440?seconds=60' })).status).toBe(200);
    expect((await api(engine.url, 'POST', '/session/two/play', { url: 'tone:550?seconds=60' })).status).toBe(200);
    expectError(await api(engine.url, 'POST', '/session/three/play', { url: 'tone:660' }), 429, /CHORUS_MAX_SESSIONS/);
    expect((await api(engine.url, 'GET', '/session/three/status')).status).toBe(404);
    const replaced = await api(engine.url, 'POST', '/session/two/play', { url: 'tone:600?seconds=60' });
    expect(replaced.status).toBe(200);
    expect(replaced.body.play).toBe(2);
    expect((await api(engine.url, 'POST', '/session/one/stop')).status).toBe(200);
    expect((await api(engine.url, 'POST', '/session/three/play', { url: 'tone:660?seconds=60' })).status).toBe(200);
    expect((await api(engine.url, 'GET', '/health')).body).toMatchObject({ status: 'ok', sessions: 2, max_sessions: 2 });
    await api(engine.url, 'POST', '/session/two/stop');
    await api(engine.url, 'POST', '/session/three/stop');
  });

  it('pause and resume answer 409 for an ended session, and are idempotent otherwise', async () => {
    await api(engine.url, 'POST', '/session/p/play', { url: 'tone:440?seconds=60' });
    expect((await api(engine.url, 'POST', '/session/p/pause')).body.state).toBe('paused');
    expect((await api(engine.url, 'POST', '/session/p/pause')).body.state).toBe('paused');
    expect((await api(engine.url, 'POST', '/session/p/resume')).body.state).toMatch(/starting|streaming/);
    expect((await api(engine.url, 'POST', '/session/p/resume')).body.state).toMatch(/starting|streaming/);
    expect((await api(engine.url, 'POST', '/session/p/stop')).body.state).toBe('stopped');
    expect((await api(engine.url, 'POST', '/session/p/stop')).body.state).toBe('stopped');
    expectError(await api(engine.url, 'POST', '/session/p/pause'), 409, /stopped/);
    expectError(await api(engine.url, 'POST', '/session/p/resume'), 409, /stopped/);
  });

  it('serves health and Prometheus metrics', async () => {
    const health = await api(engine.url, 'GET', '/health');
    expect(health.body).toMatchObject({ status: 'ok', gateway_connected: false, flow: 'paced' });
    expect(health.body.ffmpeg).toMatch(/^(CHORUS_FFMPEG|ffmpeg-static|@ffmpeg-installer\/ffmpeg|PATH)$/);
    const metrics = await api(engine.url, 'GET', '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.body).toMatch(/^# HELP chorus_engine_sessions /m);
    expect(metrics.body).toMatch(/^chorus_engine_plays_total \d+$/m);
    expect(metrics.body).toMatch(/^chorus_engine_sessions\{state="stopped"\} \d+$/m);
  });
});
