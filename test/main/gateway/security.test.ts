/**
 * Hardening against the real engine and gateway (built CLI, real ffmpeg, real sockets):
 * CHORUS_TOKEN and listen tokens, every limit hit with its documented status and reason while
 * another session plays on untouched, and the engine's source confinement as a gateway client
 * meets it — including ffmpeg protocols smuggled in through an http URL (a redirect, a playlist,
 * a path), which the engine's own tests (test/main/engine/) do not cover.
 */
import { spawnSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { SessionsResponse } from '../../../src/shared/gateway-api.js';
import { loadConfig, ConfigError } from '../../../src/shared/config.js';
import { resolveFfmpeg } from '../../../src/shared/ffmpeg.js';
import { request } from '../../helpers/http.js';
import { startStack, stopStack, type Stack } from '../../helpers/stack.js';
import { TestListener } from '../../helpers/listener.js';

const call = (url: string, method: string, body?: unknown, headers: Record<string, string> = {}) => request(url, method, body, headers);

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** The answer to a WebSocket upgrade that is refused: status and JSON body. Fails if it opens. */
function refusedUpgrade(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.on('open', () => {
      ws.close();
      reject(new Error(`the WebSocket ${url} was let in`));
    });
    ws.on('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> }));
    });
    ws.on('error', () => undefined);
  });
}

function wsUrl(base: string, id: string, token?: string): string {
  return `${base.replace(/^http/, 'ws')}/ws?session=${encodeURIComponent(id)}${token === undefined ? '' : `&token=${encodeURIComponent(token)}`}`;
}

/** The listen token as the README defines it, computed here without the gateway's code. */
function expectedListenToken(token: string, id: string): string {
  return createHmac('sha256', token).update(`chorus-listen\0${id}`).digest('base64url');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function makeTone(file: string, hz: number, format: 'wav' | 'mpegts'): void {
  const out = spawnSync(resolveFfmpeg().path, ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', `sine=frequency=${hz}:duration=1`, '-ac', '2', '-f', format, '-y', file]);
  if (out.status !== 0) throw new Error(`cannot make ${file}: ${out.stderr}`);
}

describe('CHORUS_TOKEN as configured', () => {
  it('is empty by default, trimmed, at least 16 printable characters, and never echoed when refused', () => {
    expect(loadConfig({}).CHORUS_TOKEN).toBeUndefined();
    expect(loadConfig({ CHORUS_TOKEN: '  0123456789abcdef\n' }).CHORUS_TOKEN).toBe('0123456789abcdef');
    for (const bad of ['short-secret', 'has a space in it ok', 'tab\tinside-the-token', 'ü'.repeat(20)]) {
      const err = (() => {
        try {
          loadConfig({ CHORUS_TOKEN: bad });
        } catch (e) {
          return e as Error;
        }
        throw new Error(`${bad} was accepted`);
      })();
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.message).toContain('CHORUS_TOKEN=<hidden>');
      expect(err.message).not.toContain(bad);
    }
  });
});

describe('with CHORUS_TOKEN set: access, limits, and another session playing through it all', () => {
  const TOKEN = randomBytes(24).toString('base64url');
  let stack: Stack;
  let bystander: TestListener;
  const listeners: TestListener[] = [];
  const listen = async (id: string, token = TOKEN) => {
    const l = await TestListener.connect(stack.url, id, token);
    listeners.push(l);
    return l;
  };
  const post = (route: string, body?: unknown, token = TOKEN) => call(stack.url + route, 'POST', body, bearer(token));
  /** The bystander keeps its cadence: another second of frames arrives within 1.5 s. */
  const bystanderPlaysOn = async () => {
    const n = bystander.frames.length;
    await bystander.waitForFrames(n + 50, 1500);
  };

  beforeAll(async () => {
    stack = await startStack(
      { CHORUS_TOKEN: TOKEN },
      {},
      {
        CHORUS_MAX_LISTENERS: '2',
        CHORUS_MAX_RTP_SINKS: '2',
        CHORUS_PLAY_RATE: '2',
        CHORUS_MAX_BODY_BYTES: '2048',
        CHORUS_MAX_WS_MESSAGE_BYTES: '512',
      },
    );
    makeTone(path.join(stack.dir, 'secret.wav'), 1000, 'wav');
    fs.symlinkSync(path.join(stack.dir, 'secret.wav'), path.join(stack.dir, 'media', 'escape.wav'));
    bystander = await listen('bystander');
    expect((await post('/sessions/bystander/play', { url: 'tone:440?seconds=120' })).status).toBe(200);
    await bystander.waitForFrames(25);
  });
  afterAll(async () => {
    for (const l of listeners) l.close();
    await stopStack(stack);
  });

  // ---- access ----

  it('without the token every control route and the WebSocket are 401 with a JSON reason; /health and the page stay open', async () => {
    const routes: [string, string, unknown?][] = [
      ['GET', '/sessions'],
      ['GET', '/metrics'],
      ['GET', '/sessions/bystander'],
      ['GET', '/sessions/bystander/sdp'],
      ['POST', '/sessions/intruder/play', { url: 'tone:440' }],
      ['POST', '/sessions/bystander/pause'],
      ['POST', '/sessions/bystander/resume'],
      ['POST', '/sessions/bystander/stop'],
      ['POST', '/sessions/bystander/seek', { seconds: 1 }],
      ['POST', '/sessions/bystander/rtp', { host: '127.0.0.1', port: 9 }],
      ['DELETE', '/sessions/bystander/rtp', { host: '127.0.0.1', port: 9 }],
      ['POST', '/debug/block?ms=1000'],
      ['GET', '/nowhere'],
    ];
    const credentials: [Record<string, string>, string, RegExp][] = [
      [{}, '', /a token is required/],
      [bearer('wrong-token-0123456789'), '', /not valid/],
      [{ authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}` }, '', /Bearer <token>/],
      [{}, '?token=wrong-token-0123456789', /not valid/],
      [bearer(TOKEN.toUpperCase() === TOKEN ? TOKEN.toLowerCase() : TOKEN.toUpperCase()), '', /not valid/],
    ];
    for (const [method, route, body] of routes) {
      for (const [headers, query, reason] of credentials) {
        const target = route.includes('?') && query ? route + '&' + query.slice(1) : route + query;
        const res = await call(stack.url + target, method, body, headers);
        expect(res.status, `${method} ${target} ${JSON.stringify(headers)}`).toBe(401);
        expect(res.json.error).toMatch(reason);
        expect(res.headers.get('www-authenticate')).toBe('Bearer realm="chorus"');
      }
    }
    const ws = await refusedUpgrade(wsUrl(stack.url, 'bystander'));
    expect(ws).toEqual({ status: 401, body: { error: expect.stringMatching(/a token is required/) } });
    expect((await refusedUpgrade(wsUrl(stack.url, 'bystander', 'wrong-token-0123456789'))).status).toBe(401);

    // Nothing of it happened: no session made, the bystander was neither paused nor stopped.
    const list = (await call(`${stack.url}/sessions`, 'GET', undefined, bearer(TOKEN))).json as unknown as SessionsResponse;
    expect(list.sessions.map((s) => s.id)).not.toContain('intruder');
    expect(list.sessions.find((s) => s.id === 'bystander')?.state).toBe('playing');
    await bystanderPlaysOn();

    const health = await call(`${stack.url}/health`, 'GET');
    expect(health.status).toBe(200);
    expect(health.json.status).toBe('ok');
    const page = await fetch(`${stack.url}/?session=x&token=whatever`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
  });

  it('behind a reverse proxy (a Host that is no loopback name) the token is what counts', async () => {
    const { port } = new URL(stack.url);
    const status = (headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, path: '/sessions', headers }, (res) => {
          res.resume();
          resolve(res.statusCode!);
        });
        req.on('error', reject);
        req.end();
      });
    expect(await status({ host: 'chorus.example', origin: 'https://chorus.example', authorization: `Bearer ${TOKEN}` })).toBe(200);
    expect(await status({ host: 'chorus.example', origin: 'https://elsewhere.example', authorization: `Bearer ${TOKEN}` })).toBe(403);
    expect(await status({ host: 'chorus.example' })).toBe(401);
  });

  it('takes the token as a Bearer header or as ?token=; a play answers with the listen token of its session', async () => {
    const byHeader = await post('/sessions/tok-a/play', { url: 'tone:440?seconds=30' });
    expect(byHeader.status).toBe(200);
    expect(byHeader.json.listenToken).toBe(expectedListenToken(TOKEN, 'tok-a'));
    const byQuery = await call(`${stack.url}/sessions/tok-b/play?token=${encodeURIComponent(TOKEN)}`, 'POST', { url: 'tone:660?seconds=30' });
    expect(byQuery.status).toBe(200);
    expect(byQuery.json.listenToken).toBe(expectedListenToken(TOKEN, 'tok-b'));
    expect(byQuery.json.listenToken).not.toBe(byHeader.json.listenToken);
    expect((await call(`${stack.url}/sessions?token=${encodeURIComponent(TOKEN)}`, 'GET')).status).toBe(200);
  });

  it("a listen token lets a WebSocket listen to its own session only: A's token on B is 401, and it cannot control A", async () => {
    const tokenA = expectedListenToken(TOKEN, 'tok-a');
    const a = await listen('tok-a', tokenA);
    await a.waitForFrames(60);
    expect(Math.abs(a.heardFrequency() - 440)).toBeLessThan(5);

    const onB = await refusedUpgrade(wsUrl(stack.url, 'tok-b', tokenA));
    expect(onB).toEqual({ status: 401, body: { error: expect.stringMatching(/not valid/) } });
    expect((await refusedUpgrade(wsUrl(stack.url, 'tok-b'), { authorization: `Bearer ${tokenA}` })).status).toBe(401);
    const b = await listen('tok-b'); // the main token works everywhere
    await b.waitForFrames(10);

    // Its session's status, but nothing else, and no control.
    const own = await call(`${stack.url}/sessions/tok-a`, 'GET', undefined, bearer(tokenA));
    expect(own.status).toBe(200);
    expect(own.json.session).toMatchObject({ id: 'tok-a', state: 'playing' });
    expect(own.json.session).not.toHaveProperty('url'); // the source is the controller's business
    expect((await call(`${stack.url}/sessions/tok-a`, 'GET', undefined, bearer(TOKEN))).json.session).toMatchObject({ url: 'tone:440?seconds=30' });
    expect((await call(`${stack.url}/sessions/tok-b`, 'GET', undefined, bearer(tokenA))).status).toBe(401);
    expect((await call(`${stack.url}/sessions`, 'GET', undefined, bearer(tokenA))).status).toBe(401);
    const pause = await call(`${stack.url}/sessions/tok-a/pause`, 'POST', undefined, bearer(tokenA));
    expect(pause.status).toBe(403);
    expect(pause.json.error).toMatch(/listen token only listens/);
    a.ws.send(JSON.stringify({ action: 'stop' }));
    const refused = await a.waitForEvent('error');
    expect(refused).toMatchObject({ session: 'tok-a', message: expect.stringMatching(/listen token only listens.*CHORUS_TOKEN/) });
    const before = a.frames.length;
    await a.waitForFrames(before + 25);
    const status = await call(`${stack.url}/sessions/tok-a`, 'GET', undefined, bearer(TOKEN));
    expect((status.json.session as { state: string }).state).toBe('playing');
    await post('/sessions/tok-a/stop');
    await post('/sessions/tok-b/stop');
  });

  it("the engine's API needs the token too (but /health); the gateway sends it; both bind loopback by default", async () => {
    const engine = stack.engine.httpUrl;
    expect(engine).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(stack.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const bare = await call(`${engine}/session/engine-direct/play`, 'POST', { url: 'tone:440' });
    expect(bare.status).toBe(401);
    expect(bare.json.error).toMatch(/a token is required/);
    expect((await call(`${engine}/metrics`, 'GET')).status).toBe(401);
    expect((await call(`${engine}/session/bystander/stop`, 'POST', undefined, bearer('wrong-token-0123456789'))).status).toBe(401);
    expect((await call(`${engine}/health`, 'GET')).status).toBe(200);
    const status = await call(`${engine}/session/bystander/status`, 'GET', undefined, bearer(TOKEN));
    expect(status.status).toBe(200);
    expect(status.json.state).toBe('streaming');
    await bystanderPlaysOn();
  });

  // ---- limits ----

  it('CHORUS_MAX_LISTENERS: the next listener of a full session gets 429 with a JSON reason; one leaving makes room', async () => {
    expect((await post('/sessions/crowd/play', { url: 'tone:550?seconds=30' })).status).toBe(200);
    const first = await listen('crowd');
    await listen('crowd');
    const third = await refusedUpgrade(wsUrl(stack.url, 'crowd', TOKEN));
    expect(third).toEqual({ status: 429, body: { error: 'listener limit reached for session "crowd" (CHORUS_MAX_LISTENERS=2)' } });
    await bystanderPlaysOn();
    first.close();
    await sleep(200);
    const again = await listen('crowd');
    await again.waitForFrames(5);
    await post('/sessions/crowd/stop');
  });

  it('CHORUS_MAX_WS_MESSAGE_BYTES: a larger message closes that socket with 1009; the session and its other listener play on', async () => {
    const loud = await listen('bystander');
    await loud.waitForFrames(5);
    const closed = new Promise<number>((resolve) => loud.ws.once('close', (code) => resolve(code)));
    loud.ws.send(JSON.stringify({ action: 'pause', pad: 'x'.repeat(600) }));
    expect(await closed).toBe(1009);
    await bystanderPlaysOn();
    const metrics = await (await fetch(`${stack.url}/metrics`, { headers: bearer(TOKEN) })).text();
    expect(metrics).toMatch(/^chorus_gateway_refused_total\{kind="ws_message"\} [1-9]/m);
    // A message under the cap is still an action (refused here for its unknown name, as the protocol says).
    const ok = await listen('bystander');
    ok.ws.send(JSON.stringify({ action: 'nope', pad: 'x'.repeat(400) }));
    expect(await ok.waitForEvent('error')).toMatchObject({ message: expect.stringMatching(/unknown action/) });
  });

  it('CHORUS_MAX_BODY_BYTES: a larger body, declared or streamed, gets 413 with a JSON reason and nothing is played', async () => {
    const big = { url: 'tone:440', pad: 'x'.repeat(3000) };
    const declared = await post('/sessions/body/play', big);
    expect(declared.status).toBe(413);
    expect(declared.json.error).toBe('request body is larger than 2048 bytes (CHORUS_MAX_BODY_BYTES)');
    // Streamed with no length: refused once 2048 bytes have come, without waiting for the rest.
    const streamed = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const u = new URL(`${stack.url}/sessions/body/play`);
      const req = http.request({ host: u.hostname, port: u.port, method: 'POST', path: u.pathname, headers: { ...bearer(TOKEN), 'transfer-encoding': 'chunked' } }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      req.write('{"url":"tone:440","pad":"');
      const chunk = 'x'.repeat(1024);
      let sent = 0;
      const timer = setInterval(() => {
        // Keeps sending (as a client that never stops would) until the answer has come.
        if (sent++ > 200) return clearInterval(timer);
        req.write(chunk);
      }, 5);
      req.on('response', () => clearInterval(timer));
      req.on('close', () => clearInterval(timer));
    });
    expect(streamed.status).toBe(413);
    expect(JSON.parse(streamed.body)).toEqual({ error: 'request body is larger than 2048 bytes (CHORUS_MAX_BODY_BYTES)' });
    const list = (await call(`${stack.url}/sessions`, 'GET', undefined, bearer(TOKEN))).json as unknown as SessionsResponse;
    expect(list.sessions.map((s) => s.id)).not.toContain('body');
    expect((await post('/sessions/body/play', { url: 'tone:440?seconds=1' })).status).toBe(200);
    await bystanderPlaysOn();
  });

  it('CHORUS_PLAY_RATE: the third play within a second is 429 with Retry-After, also over the WebSocket; other sessions play at once', async () => {
    const plays = await Promise.all([1, 2, 3].map((i) => post('/sessions/rate/play', { url: `tone:${400 + i * 100}?seconds=10` })));
    const statuses = plays.map((p) => p.status).sort();
    expect(statuses).toEqual([200, 200, 429]);
    const refused = plays.find((p) => p.status === 429)!;
    expect(refused.json.error).toMatch(/^too many plays for session "rate" \(CHORUS_PLAY_RATE=2 per second\); try again in 0\.\d s$/);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect((await post('/sessions/rate-other/play', { url: 'tone:880?seconds=2' })).status).toBe(200);

    // Over the WebSocket: three plays in a row, the third refused with an error event.
    const l = await listen('rate-ws');
    for (const hz of [300, 350, 400]) l.ws.send(JSON.stringify({ action: 'play', url: `tone:${hz}?seconds=10` }));
    expect(await l.waitForEvent('error')).toMatchObject({ session: 'rate-ws', message: expect.stringMatching(/^too many plays for session "rate-ws"/) });
    await l.waitForFrames(60);
    expect(Math.abs(l.heardFrequency(30) - 350)).toBeLessThan(5); // the second play replaced the first
    expect(l.events.filter((e) => e.type === 'error')).toHaveLength(1);
    // A second later the bucket has refilled.
    await sleep(1100);
    expect((await post('/sessions/rate/play', { url: 'tone:700?seconds=10' })).status).toBe(200);
    await bystanderPlaysOn();
    await post('/sessions/rate/stop');
    await post('/sessions/rate-ws/stop');
  });

  it('CHORUS_MAX_RTP_SINKS: a third RTP target is 429 with a JSON reason; the same target again is no new sink', async () => {
    const sockets = await Promise.all(
      [0, 1, 2].map(
        () =>
          new Promise<dgram.Socket>((resolve) => {
            const s = dgram.createSocket('udp4');
            s.bind(0, '127.0.0.1', () => resolve(s));
          }),
      ),
    );
    try {
      const ports = sockets.map((s) => s.address().port);
      expect((await post('/sessions/rtp/play', { url: 'tone:440?seconds=10' })).status).toBe(200);
      for (const port of ports.slice(0, 2)) expect((await post('/sessions/rtp/rtp', { host: '127.0.0.1', port })).status).toBe(200);
      const third = await post('/sessions/rtp/rtp', { host: '127.0.0.1', port: ports[2] });
      expect(third.status).toBe(429);
      expect(third.json.error).toBe('RTP sink limit reached (2 per session)');
      expect((await post('/sessions/rtp/rtp', { host: '127.0.0.1', port: ports[0] })).status).toBe(200);
      await bystanderPlaysOn();
      await post('/sessions/rtp/stop');
    } finally {
      for (const s of sockets) s.close();
    }
  });

  // ---- confinement, as a client of the gateway meets it ----

  it("the engine's refusals reach the client as 403 with its reason: `..`, a symlink out, loopback and private hosts (nothing connects)", async () => {
    let connections = 0;
    const trap = net.createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((resolve) => trap.listen(0, '127.0.0.1', resolve));
    const port = (trap.address() as net.AddressInfo).port;
    try {
      const l = await listen('confined');
      for (const [url, reason] of [
        ['../secret.wav', /"\.\."/],
        ['escape.wav', /outside the media root/],
        [`http://127.0.0.1:${port}/a.mp3`, /non-public address/],
        [`http://10.0.0.1/a.mp3`, /non-public address/],
      ] as const) {
        const started = performance.now();
        const res = await post('/sessions/confined/play', { url });
        expect(res.status, url).toBe(403);
        expect(res.json.error).toMatch(reason);
        expect(performance.now() - started).toBeLessThan(1000);
        await sleep(600); // the play rate: two a second
      }
      await sleep(200);
      expect(connections).toBe(0);
      expect(l.frames).toHaveLength(0);
      expect(l.events.filter((e) => e.type === 'error').length).toBeGreaterThanOrEqual(4);
    } finally {
      await new Promise((resolve) => trap.close(resolve));
    }
  });

  it('the bystander heard every frame of its own tone through all of it', async () => {
    await bystanderPlaysOn();
    expect(bystander.seqBreaks()).toEqual([]);
    expect(Math.abs(bystander.heardFrequency() - 440)).toBeLessThan(3);
    expect(bystander.events.filter((e) => e.type === 'error')).toEqual([]);
  });
});

describe('without CHORUS_TOKEN, with loopback sources allowed: smuggled protocols and the session limit', () => {
  let stack: Stack;
  let server: http.Server;
  let base = '';
  const requests: string[] = [];
  const listeners: TestListener[] = [];
  const listen = async (id: string) => {
    const l = await TestListener.connect(stack.url, id);
    listeners.push(l);
    return l;
  };
  let secretWav = '';
  let secretTs = '';

  beforeAll(async () => {
    stack = await startStack({}, { CHORUS_REMOTE_ALLOW: '127.0.0.1' }, { CHORUS_MAX_SESSIONS: '6' });
    secretWav = path.join(stack.dir, 'secret.wav');
    secretTs = path.join(stack.dir, 'secret.ts');
    makeTone(secretWav, 1000, 'wav');
    makeTone(secretTs, 1000, 'mpegts');
    makeTone(path.join(stack.dir, 'ok.wav'), 440, 'wav');
    const playlist = (segment: string) => `#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n${segment}\n#EXT-X-ENDLIST\n`;
    server = http.createServer((req, res) => {
      const url = req.url ?? '';
      requests.push(url);
      if (url === '/ok.wav') return res.end(fs.readFileSync(path.join(stack.dir, 'ok.wav')));
      if (url === '/to-file') return res.writeHead(302, { location: `file://${secretWav}` }).end();
      if (url === '/to-concat') return res.writeHead(302, { location: `concat:${secretWav}|${secretWav}` }).end();
      if (url === '/concat.m3u8') return res.end(playlist(`concat:file://${secretTs}|file://${secretTs}`));
      if (url === '/subfile.m3u8') return res.end(playlist(`subfile:,start,0,end,0,:file://${secretTs}`));
      if (url === '/file.m3u8') return res.end(playlist(`file://${secretTs}`));
      if (url === '/list.ffconcat') return res.end(`ffconcat version 1.0\nfile 'file://${secretTs}'\nfile '${secretTs}'\n`);
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const l of listeners) l.close();
    server?.closeAllConnections();
    await new Promise((resolve) => server?.close(resolve));
    await stopStack(stack);
  });

  it('with no token set, control needs none and a play hands out no listen token', async () => {
    const l = await listen('open');
    const res = await call(`${stack.url}/sessions/open/play`, 'POST', { url: `${base}/ok.wav` });
    expect(res.status).toBe(200);
    expect(res.json).not.toHaveProperty('listenToken');
    await l.waitForEvent('finished', 10_000);
    expect(l.frames).toHaveLength(50);
    expect(Math.abs(l.heardFrequency() - 440)).toBeLessThan(5);
  });

  it('concat:, subfile: and file: inside an http URL — redirect, playlist or path — end in an error event, and no frame of the file is heard', async () => {
    const l = await listen('smuggle');
    const urls = [
      `${base}/to-file`,
      `${base}/to-concat`,
      `${base}/concat.m3u8`,
      `${base}/subfile.m3u8`,
      `${base}/file.m3u8`,
      `${base}/list.ffconcat`,
      `${base}/concat:${secretWav}|${secretWav}`,
      `${base}/x?u=subfile:,start,0,end,0,:${secretWav}`,
    ];
    for (const url of urls) {
      requests.length = 0;
      const errorsBefore = l.events.filter((e) => e.type === 'error').length;
      const res = await call(`${stack.url}/sessions/smuggle/play`, 'POST', { url });
      // The engine takes the http URL (its host is allowed) and ffmpeg refuses what it points to.
      expect(res.status, url).toBe(200);
      await l.until(() => l.events.filter((e) => e.type === 'error').length > errorsBefore, 10_000, `an error event for ${url}`);
      expect(l.events.filter((e) => e.type === 'error').at(-1)).toMatchObject({ message: expect.stringMatching(/^ffmpeg exited with code \d+: /) });
      // ffmpeg asked the server for the URL's own path first; whatever it did next was http too
      // (this ffmpeg takes a redirect to `concat:…` as a path on the same server).
      const own = new URL(url);
      expect(requests[0], url).toBe(own.pathname + own.search);
      await sleep(250); // the play rate
    }
    expect(l.frames).toHaveLength(0);
  });

  it("a browser page of another site may not drive it, nor a DNS-rebound name reach it; clients without Origin may", async () => {
    const { port } = new URL(stack.url);
    const raw = (headers: Record<string, string>) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = http.request(
          { host: '127.0.0.1', port, method: 'POST', path: '/sessions/origin-check/pause', headers },
          (res) => {
            let body = '';
            res.on('data', (c: Buffer) => (body += c));
            res.on('end', () => resolve({ status: res.statusCode!, body }));
          },
        );
        req.on('error', reject);
        req.end();
      });
    const crossSite = await raw({ origin: 'http://evil.example' });
    expect(crossSite.status).toBe(403);
    expect(JSON.parse(crossSite.body).error).toMatch(/cross-origin/);
    const rebound = await raw({ host: `rebound.example:${port}`, origin: `http://rebound.example:${port}` });
    expect(rebound.status).toBe(403);
    expect(JSON.parse(rebound.body).error).toMatch(/loopback names only/);
    // Its own page's origin, and no Origin at all (curl, bots), get through to the route itself.
    expect((await raw({ origin: `http://127.0.0.1:${port}` })).status).toBe(404);
    expect((await raw({})).status).toBe(404);
    // The same for a WebSocket.
    const ws = new WebSocket(`${stack.url.replace('http', 'ws')}/ws?session=origin-check`, { origin: 'http://evil.example' });
    const status = await new Promise<number>((resolve) => {
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode!));
      ws.on('open', () => resolve(101));
    });
    expect(status).toBe(403);
  });

  it('CHORUS_MAX_SESSIONS: the next session, by play or by WebSocket, is 429; the sessions there play and obey on', async () => {
    const keeper = await listen('keeper');
    expect((await call(`${stack.url}/sessions/keeper/play`, 'POST', { url: 'tone:660?seconds=30' })).status).toBe(200);
    await keeper.waitForFrames(10);
    const existing = ((await call(`${stack.url}/sessions`, 'GET')).json as unknown as SessionsResponse).sessions.length;
    for (let i = existing; i < 6; i++) expect((await call(`${stack.url}/sessions/fill-${i}/play`, 'POST', { url: 'tone:440?seconds=5' })).status).toBe(200);
    const refused = await call(`${stack.url}/sessions/one-too-many/play`, 'POST', { url: 'tone:440' });
    expect(refused.status).toBe(429);
    expect(refused.json.error).toBe('session limit reached (CHORUS_MAX_SESSIONS=6)');
    expect(await refusedUpgrade(wsUrl(stack.url, 'one-too-many'))).toEqual({ status: 429, body: { error: 'session limit reached (CHORUS_MAX_SESSIONS=6)' } });
    // The sessions there are untouched and still take control.
    const n = keeper.frames.length;
    await keeper.waitForFrames(n + 50, 1500);
    expect((await call(`${stack.url}/sessions/keeper/pause`, 'POST')).status).toBe(200);
    expect((await call(`${stack.url}/sessions/keeper/resume`, 'POST')).status).toBe(200);
    await keeper.waitForFrames(keeper.frames.length + 25, 1500);
    expect(keeper.seqBreaks()).toEqual([]);
    expect(Math.abs(keeper.heardFrequency() - 660)).toBeLessThan(3);
  });
});
