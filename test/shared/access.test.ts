/**
 * The loopback rule of access.ts: one address judged the same however it is written, for the
 * Origin/Host check of both servers and for the gateway's RTP targets.
 */
import { describe, expect, it } from 'vitest';
import { isLoopbackAddress, OriginPolicy } from '../../src/shared/access.js';

describe('isLoopbackAddress', () => {
  it('takes every spelling of a loopback address', () => {
    for (const a of ['127.0.0.1', '127.255.0.9', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', '::FFFF:7f00:1']) {
      expect(isLoopbackAddress(a), a).toBe(true);
    }
  });

  it('refuses other addresses and anything that is no address', () => {
    for (const a of ['128.0.0.1', '10.0.0.1', '::2', '::ffff:10.0.0.1', 'localhost', '127.0.0.1.example', '', '127.1']) {
      expect(isLoopbackAddress(a), a).toBe(false);
    }
  });
});

describe('OriginPolicy without a token, bound to loopback', () => {
  const policy = new OriginPolicy('gateway', undefined, '127.0.0.1');

  it('answers loopback Host names in any spelling', () => {
    for (const host of ['127.0.0.1:8080', 'localhost:8080', 'app.localhost', '[::1]:8080', '[0:0::1]:8080', '[::ffff:127.0.0.1]:8080']) {
      expect(policy.refusal({ host }), host).toBeUndefined();
    }
  });

  it('refuses a Host that is not loopback (a DNS-rebound name)', () => {
    for (const host of ['evil.example:8080', '10.0.0.1:8080', '[::ffff:10.0.0.1]:8080']) {
      expect(policy.refusal({ host }), host).toMatch(/is not this gateway/);
    }
  });
});
