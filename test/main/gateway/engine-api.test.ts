/** The gateway's client of the engine's HTTP API (src/main/gateway/engine-api.ts): the token it sends, and what a refusal becomes. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineApi } from '../../../src/main/gateway/engine-api.js';
import { HttpError } from '../../../src/main/http-kit.js';

describe('EngineApi and CHORUS_TOKEN', () => {
  let server: http.Server;
  let base = '';
  const seen: (string | undefined)[] = [];

  beforeAll(async () => {
    // An engine with token "engine-token-0123456789", as src/main/engine/http-api.ts answers.
    server = http.createServer((req, res) => {
      seen.push(req.headers.authorization);
      req.resume();
      const ok = req.headers.authorization === 'Bearer engine-token-0123456789';
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
      res.end(JSON.stringify(ok ? { play: 7, state: 'starting' } : { error: 'the token is not valid here' }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise((resolve) => server.close(resolve)));

  it('sends the token as a Bearer header on every call, and nothing without one', async () => {
    seen.length = 0;
    const api = new EngineApi(base, 'engine-token-0123456789');
    expect(await api.play('a', { url: 'tone:440', format: 'opus' })).toEqual({ play: 7 });
    await api.control('a', 'pause');
    expect(await api.status('a')).toBe('starting');
    expect(seen).toEqual(Array(3).fill('Bearer engine-token-0123456789'));
    seen.length = 0;
    await new EngineApi(base).play('a', { url: 'tone:440', format: 'opus' }).catch(() => undefined);
    expect(seen).toEqual([undefined]);
  });

  it("an engine that refuses the gateway's token is a 502 that says to give both the same token, not the client's 401", async () => {
    const err = await new EngineApi(base, 'another-token-0123456789').play('a', { url: 'tone:440', format: 'opus' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HttpError);
    expect((err as HttpError).status).toBe(502);
    expect((err as HttpError).message).toBe('engine refused the gateway (the token is not valid here): give both the same CHORUS_TOKEN');
  });
});
