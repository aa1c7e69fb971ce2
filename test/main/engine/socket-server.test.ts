/**
 * The frame socket belongs to the engine that bound it: a second engine (same path, same port,
 * or a regular file at the path) is refused without touching the running one's socket or its
 * gateway; only a stale socket (connect refused) is removed; a socket file removed under a
 * running engine is bound again.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
    // A gateway that comes (back) now can connect, and takes over.
    const next = await FakeGateway.connect(engine.socketPath);
    await gw.closed;
    await expectStillDelivering(next);
    gw = next;
  });
});
