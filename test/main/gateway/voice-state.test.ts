/**
 * The voice state a bot PUTs, and where chorus may connect for it (CHORUS_VOICE_ALLOW).
 */
import { describe, expect, it } from 'vitest';
import { endpointHost, hostAllowed, parseVoiceState } from '../../../src/main/gateway/voice-state.js';
import { HttpError } from '../../../src/main/http-kit.js';
import { loadConfig } from '../../../src/shared/config.js';

const good = {
  guildId: '810000000000000001',
  channelId: '820000000000000001',
  userId: '830000000000000001',
  sessionId: 'c0ffee0123456789abcdef',
  token: 'a1b2c3d4e5f6',
  endpoint: 'c-fra05-1234.discord.media:443',
};
const DEFAULT_ALLOW = loadConfig({}).CHORUS_VOICE_ALLOW;

function statusOf(body: Record<string, unknown>, allow = DEFAULT_ALLOW): number {
  try {
    parseVoiceState(body, allow);
    return 200;
  } catch (err) {
    if (err instanceof HttpError) return err.status;
    throw err;
  }
}

describe('parseVoiceState', () => {
  it('takes a voice state as Discord gives it, with or without a port, and nothing more', () => {
    expect(parseVoiceState(good, DEFAULT_ALLOW)).toEqual(good);
    expect(statusOf({ ...good, endpoint: 'c-fra05-1234.discord.media' })).toBe(200);
  });

  it('refuses a bad field with a 400 that names it', () => {
    expect(() => parseVoiceState({ ...good, guildId: undefined }, DEFAULT_ALLOW)).toThrow(/missing "guildId"/);
    expect(() => parseVoiceState({ ...good, token: 5 }, DEFAULT_ALLOW)).toThrow(/"token" must be a string/);
    expect(() => parseVoiceState({ ...good, channelId: 'general' }, DEFAULT_ALLOW)).toThrow(/"channelId" must be a Discord id/);
    expect(() => parseVoiceState({ ...good, guild_id: good.guildId }, DEFAULT_ALLOW)).toThrow(/unknown field "guild_id"/);
    for (const endpoint of ['', 'wss://a.discord.media', 'a.discord.media/x', 'a.discord.media:0', 'a.discord.media:65536', 'a b.discord.media', '[::1', ':443', 'user@a.discord.media']) {
      expect(statusOf({ ...good, endpoint }), endpoint).toBe(400);
    }
  });

  it('allows only *.discord.media by default: a 403 for any other host, the bare domain included', () => {
    for (const endpoint of ['127.0.0.1:443', 'localhost', 'discord.media', 'evil-discord.media', 'a.discord.media.evil.com', '[::1]:443']) {
      expect(statusOf({ ...good, endpoint }), endpoint).toBe(403);
    }
    expect(statusOf({ ...good, endpoint: 'C-FRA05.Discord.Media' })).toBe(200);
  });
});

describe('endpointHost and hostAllowed', () => {
  it('reads host names, IPv4 and bracketed IPv6, with an optional port', () => {
    expect(endpointHost('Example.COM:8443')).toBe('example.com');
    expect(endpointHost('10.0.0.1')).toBe('10.0.0.1');
    expect(endpointHost('[::1]:80')).toBe('::1');
    expect(endpointHost('::1')).toBeUndefined();
  });

  it('matches exact entries and *.domain patterns', () => {
    expect(hostAllowed('127.0.0.1', ['127.0.0.1'])).toBe(true);
    expect(hostAllowed('x.y.example.org', ['*.example.org'])).toBe(true);
    expect(hostAllowed('example.org', ['*.example.org'])).toBe(false);
    expect(hostAllowed('badexample.org', ['*.example.org'])).toBe(false);
  });

  it('CHORUS_VOICE_ALLOW refuses an entry that is no host, address or *.domain pattern', () => {
    expect(loadConfig({ CHORUS_VOICE_ALLOW: '127.0.0.1, *.Example.org' }).CHORUS_VOICE_ALLOW).toEqual(['127.0.0.1', '*.example.org']);
    for (const bad of ['*', 'http://x', 'a b', '*.', 'x.*.org']) {
      expect(() => loadConfig({ CHORUS_VOICE_ALLOW: bad }), bad).toThrow(/CHORUS_VOICE_ALLOW/);
    }
  });
});
