/**
 * The frame socket belongs to the engine that bound it: a second engine (same path, same port,
 * or a regular file at the path) is refused without touching the running one's socket or its
 * gateway; only a stale socket (connect refused) is removed; a socket file removed under a
 * running engine is bound again. And one gateway is served at a time: a new connection is refused
 * while the current gateway is healthy, and takes over from one that is not (it stopped reading,
 * or fell silent).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SILENT_MS } from '../../../src/main/engine/socket-server.js';
import { startChorus } from '../../helpers/chorus-process.js';
import { startEngineFixture, type EngineFixture } from './engine-fixture.js';
import { api, FakeGateway, sleep } from './fake-gateway.js';

function isSocket(file: string): boolean {
  try {
    return fs.lstatSync(file).isSocket();
  } catch {
    return false;
  }
}

async function waitUntil(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(50);
  }
}

describe('engine frame socket ownership', () => {
  let engine: EngineFixture;
  let gw: FakeGateway;
  const engineEnv = () => ({ CHORUS_ENGINE_PORT: '0', CHORUS_SOCKET: engine.socketPath, CHORUS_MEDIA_ROOT: engine.mediaRoot, CHORUS_LOG_LEVEL: 'info' });

  /** The running engine still delivers to its gateway: frames of `keep` keep arriving on `gw`. */
  async function expectStillDelivering(to: FakeGateway): Promise<void> {
    const before = to.log('keep').frames.length;
    await to.waitFor(() => to.log('keep').frames.length >= before + 5, 3000, 'more frames of keep');
    expect(to.socket.destroyed).toBe(false);
    expect(isSocket(engine.socketPath)).toBe(true);
  }

  beforeAll(async () => {
    engine = await startEngineFixture();
    gw = await FakeGateway.connect(engine.socketPath);
    expect((await api(engine.url, 'POST', '/session/keep/play', { url: 'tone:440?seconds=120' })).status).toBe(200);
    await gw.waitForEvent('keep', 'ready');
  });
  afterAll(async () => {
    await gw?.close();
    await engine?.stop();
  });

  it('a second engine on the same socket path is refused; the running one keeps its socket and its gateway', async () => {
    await expect(startChorus('engine', engineEnv())).rejects.toThrow(/is in use by a running engine/);
    await expectStillDelivering(gw);
    expect((await api(engine.url, 'GET', '/health')).body.gateway_connected).toBe(true);
  });

  it('a second engine on the same port (and path) fails (port in use) and removes nothing', async () => {
    const port = new URL(engine.url).port;
    await expect(startChorus('engine', { ...engineEnv(), CHORUS_ENGINE_PORT: port })).rejects.toThrow(/already in use/);
    await expectStillDelivering(gw);
  });

  it('a regular file at CHORUS_SOCKET is refused and left as it was', async () => {
    const file = path.join(engine.dir, 'not-a-socket');
    fs.writeFileSync(file, 'precious');
    await expect(startChorus('engine', { ...engineEnv(), CHORUS_SOCKET: file })).rejects.toThrow(/is not a socket/);
    expect(fs.readFileSync(file, 'utf8')).toBe('precious');
  });

  it('a stale socket (connect refused) is removed and bound', async () => {
    const stale = path.join(engine.dir, 'stale.sock');
    // A process that listened on it and was killed leaves the file with nobody behind it.
    const holder = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`]);
    await new Promise((resolve) => holder.stdout.once('data', resolve));
    holder.kill('SIGKILL');
    await new Promise((resolve) => holder.once('exit', resolve));
    expect(isSocket(stale)).toBe(true);
    const second = await startChorus('engine', { ...engineEnv(), CHORUS_SOCKET: stale });
    try {
      expect(second.logs.join('\n')).toMatch(/removing stale socket/);
      const other = await FakeGateway.connect(stale);
      await other.close();
    } finally {
      await second.stop();
    }
    expect(fs.existsSync(stale)).toBe(false);
  });

  it('a socket file removed under the running engine is bound again; the open connection is kept', async () => {
    fs.rmSync(engine.socketPath);
    await waitUntil(() => isSocket(engine.socketPath), 3000, 'the socket file to be bound again');
    await expectStillDelivering(gw);
    expect(await engine.process.waitForLog(/was removed; binding it again/, 1000)).toBeTruthy();
    const metrics = (await api(engine.url, 'GET', '/metrics')).body as string;
    expect(metrics).toMatch(/^chorus_engine_socket_rebinds_total 1$/m);
    // A gateway that comes (back) now can connect on the file bound again, and is served.
    await gw.close();
    const next = await FakeGateway.connect(engine.socketPath);
    await expectStillDelivering(next);
    gw = next;
  });
});

describe('which gateway the engine serves', () => {
  let engine: EngineFixture;
  const metric = async (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec((await api(engine.url, 'GET', '/metrics')).body as string)![1]);
  const logged = (pattern: RegExp) => engine.process.logs.filter((line) => pattern.test(line)).length;
  /** Frames of `id` keep arriving on `gw`. */
  const expectServed = async (gw: FakeGateway, id: string) => {
    const before = gw.log(id).frames.length;
    await gw.waitFor(() => gw.log(id).frames.length >= before + 5, 5000, `more frames of ${id}`);
    expect(gw.socket.destroyed).toBe(false);
  };
  /** Asks until the engine admits a connection (it refuses while the current gateway is healthy). */
  const askUntilAdmitted = async (timeoutMs: number): Promise<{ admitted: FakeGateway; refusedFirst: number }> => {
    const deadline = performance.now() + timeoutMs;
    for (let refusedFirst = 0; ; refusedFirst++) {
      const gw = await FakeGateway.ask(engine.socketPath);
      if (gw.refused === undefined) return { admitted: gw, refusedFirst };
      await gw.closed;
      if (performance.now() > deadline) throw new Error(`still refused after ${timeoutMs} ms`);
      await sleep(250);
    }
  };

  beforeAll(async () => {
    engine = await startEngineFixture();
  });
  afterEach(async () => {
    await FakeGateway.closeAll();
    await api(engine.url, 'POST', '/session/keep/stop');
  });
  afterAll(async () => {
    await engine?.stop();
  });

  it('refuses a second connection while the gateway is healthy, saying why; a probe (connect, close) costs nothing; silent, the gateway is taken over from', async () => {
    const gw = await FakeGateway.connect(engine.socketPath);
    gw.keepAlive();
    expect((await api(engine.url, 'POST', '/session/keep/play', { url: 'tone:440?seconds=120' })).status).toBe(200);
    await gw.waitForEvent('keep', 'ready');

    const probe = net.connect(engine.socketPath);
    await new Promise((resolve) => probe.once('connect', resolve));
    probe.destroy();
    const second = await FakeGateway.ask(engine.socketPath);
    expect(second.refused).toBe('another gateway is connected and healthy');
    await second.closed;
    expect(second.log('keep').frames).toHaveLength(0);
    await expectServed(gw, 'keep');
    expect(logged(/refused a gateway connection: another gateway is connected and healthy/)).toBe(1);
    expect(await metric('chorus_engine_gateway_refused_total')).toBe(1);

    // A gateway that promised `alive` and says nothing for SILENT_MS is stuck: the next connection takes over.
    gw.stopAlive();
    const { admitted } = await askUntilAdmitted(SILENT_MS + 10_000);
    await gw.closed;
    await expectServed(admitted, 'keep');
    expect(await engine.process.waitForLog(/takes over from the current one, which is not healthy.*said nothing for/, 1000)).toBeTruthy();
    expect(await metric('chorus_engine_gateway_takeovers_total')).toBe(1);
  });

  it('takes over from a gateway that stops reading its socket (writes wait for drain)', async () => {
    const stuck = await FakeGateway.connect(engine.socketPath);
    stuck.keepAlive(); // it still speaks: what gives it away is that it does not read
    expect((await api(engine.url, 'POST', '/session/keep/play', { url: 'tone:440?seconds=600', format: 'pcm' })).status).toBe(200);
    await stuck.waitForEvent('keep', 'ready');
    stuck.credit('keep', 1_000_000);
    stuck.socket.pause();
    const { admitted } = await askUntilAdmitted(20_000);
    await stuck.closed;
    await expectServed(admitted, 'keep');
    expect(await engine.process.waitForLog(/takes over from the current one, which is not healthy.*not read what it was sent/, 1000)).toBeTruthy();
  });

  it('keeps a gateway that granted credit without `alive` and then says nothing (its rings are full): silence is no sign there', async () => {
    const gw = await FakeGateway.connect(engine.socketPath);
    expect((await api(engine.url, 'POST', '/session/keep/play', { url: 'tone:440?seconds=120' })).status).toBe(200);
    await gw.waitForEvent('keep', 'ready');
    gw.credit('keep', 20);
    await gw.waitFor(() => gw.log('keep').frames.length >= 20, 5000, 'the 20 frames granted');
    await sleep(SILENT_MS + 500);
    const second = await FakeGateway.ask(engine.socketPath);
    expect(second.refused).toBe('another gateway is connected and healthy');
    gw.credit('keep', 10);
    await expectServed(gw, 'keep');
  });

  it('a stray connection that never says anything holds the engine only until a gateway asks after SILENT_MS', async () => {
    const stray = net.connect(engine.socketPath);
    stray.on('error', () => undefined);
    const strayClosed = new Promise((resolve) => stray.once('close', resolve));
    await new Promise((resolve) => stray.once('data', resolve)); // its hello: it is the current connection
    const { admitted, refusedFirst } = await askUntilAdmitted(SILENT_MS + 10_000);
    expect(refusedFirst).toBeGreaterThan(0);
    await strayClosed;
    expect((await api(engine.url, 'POST', '/session/keep/play', { url: 'tone:440?seconds=120' })).status).toBe(200);
    await expectServed(admitted, 'keep');
  });
});
