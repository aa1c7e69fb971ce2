/**
 * A listener's lag and bounds (src/main/gateway/listener.ts) over a real WebSocket on loopback:
 * only the pong that answers our own ping counts, and a client that never reads cannot make the
 * gateway keep more than MAX_QUEUED_BYTES for it.
 */
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { LAG_LIMIT_MS, Listener, MAX_QUEUED_BYTES } from '../../../src/main/gateway/listener.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup) c();
  cleanup = [];
});

/** A server-side socket wrapped in a Listener, and the client at the other end. */
async function pair(): Promise<{ listener: Listener; client: WebSocket }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  const accepted = new Promise<WebSocket>((resolve) => wss.once('connection', resolve));
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  client.on('error', () => undefined);
  await new Promise<void>((resolve) => client.once('open', () => resolve()));
  const ws = await accepted;
  cleanup.push(() => {
    client.terminate();
    ws.terminate();
    wss.close();
  });
  return { listener: new Listener(ws, (ws as unknown as { _socket: Duplex })._socket, Date.now(), 20), client };
}

describe('Listener', () => {
  it('a client that reads answers our ping and is not behind', async () => {
    const { listener } = await pair();
    listener.check(Date.now());
    await sleep(LAG_LIMIT_MS + 300);
    expect(listener.check(Date.now())).toBe(false);
  });

  it('unsolicited pongs from a client that never reads do not hide its lag', async () => {
    const { listener, client } = await pair();
    (client as unknown as { _socket: { pause(): void } })._socket.pause();
    const pongs = setInterval(() => client.pong(Buffer.from('chorus-1')), 100);
    cleanup.push(() => clearInterval(pongs));
    listener.check(Date.now());
    await sleep(LAG_LIMIT_MS + 300);
    expect(listener.check(Date.now())).toBe(true);
  });

  it('a client that never reads is closed once more than MAX_QUEUED_BYTES are queued for it, and nothing more is queued', async () => {
    const { listener, client } = await pair();
    (client as unknown as { _socket: { pause(): void } })._socket.pause();
    const chunk = Buffer.alloc(16 * 1024);
    let most = 0;
    for (let i = 0; i < 2000 && !listener.closed; i++) {
      listener.send(chunk);
      most = Math.max(most, listener.ws.bufferedAmount);
      if (i % 50 === 0) await sleep(1);
    }
    expect(listener.closed).toBe(true);
    expect(most).toBeLessThanOrEqual(MAX_QUEUED_BYTES + chunk.length);
    const queued = listener.ws.bufferedAmount;
    for (let i = 0; i < 100; i++) listener.send(chunk);
    expect(listener.ws.bufferedAmount).toBeLessThanOrEqual(queued + 64);
  });
});
