/**
 * The worker's voice link on this machine's Node (20; @discordjs/voice 0.19 declares >= 22.12):
 * the parts of the library chorus uses load and run here, DAVE's native session included, and a
 * rejoin the library would ask Discord for comes back as a `rejoin` event instead.
 * The full connection (WSS voice gateway, UDP, encryption) is test/main/gateway/voice.test.ts.
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { DAVESession } from '@discordjs/voice';
import { VoiceLink } from '../../src/workers/voice-link.js';
import type { VoiceEvent } from '../../src/shared/worker-messages.js';

describe('VoiceLink on Node ' + process.versions.node, () => {
  it('creates a DAVE session at protocol version 1 and its MLS key package (native @snazzah/davey)', async () => {
    const dave = new DAVESession(1, '830000000000000001', '820000000000000001', {});
    const keyPackage = new Promise<Buffer>((resolve) => dave.once('keyPackage', resolve));
    dave.reinit();
    expect(dave.session).toBeDefined();
    expect((await keyPackage).length).toBeGreaterThan(100);
    dave.destroy();
  });

  it('a voice server that cannot be reached: disconnected, and the bot is asked to rejoin', async () => {
    // A port nothing listens on: the WebSocket fails before Ready, which the library answers with a rejoin.
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const events: VoiceEvent[] = [];
    const link = new VoiceLink(
      {
        guildId: '810000000000000001',
        channelId: '820000000000000001',
        userId: '830000000000000001',
        sessionId: 'abc',
        token: 'def',
        endpoint: `127.0.0.1:${port}`,
      },
      15_000,
      (e) => events.push(e),
    );
    try {
      await expect.poll(() => events.at(-1)?.status, { timeout: 5000 }).toBe('disconnected');
      expect(events.at(-1)).toMatchObject({ rejoin: true });
      expect(events.at(-1)!.reason).toMatch(/rejoin/);
      expect(link.ready).toBe(false);
      expect(link.send(Buffer.from([0xf8, 0xff, 0xfe]))).toBe(false);
      expect(link.stats()).toMatchObject({ status: 'disconnected', packets: 0, connects: 1, dave: false });
    } finally {
      link.destroy();
    }
  });
});
