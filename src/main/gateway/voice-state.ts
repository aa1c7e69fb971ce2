/**
 * The body of PUT /sessions/:id/voice: the bot's voice state for the session's guild, checked
 * field by field (a bad one is a 400 that says which), and its endpoint checked against
 * CHORUS_VOICE_ALLOW (403) before anything is opened to it.
 *
 *   { "guildId", "channelId", "userId": snowflakes (decimal strings),
 *     "sessionId", "token": from Discord's VOICE_STATE_UPDATE / VOICE_SERVER_UPDATE,
 *     "endpoint": "host[:port]" from VOICE_SERVER_UPDATE (no scheme, no path) }
 */
import net from 'node:net';
import { HOST_NAME } from '../../shared/config.js';
import type { VoiceServerState } from '../../shared/worker-messages.js';
import { HttpError } from '../http-kit.js';

const FIELDS = ['guildId', 'channelId', 'userId', 'sessionId', 'token', 'endpoint'] as const;
const SNOWFLAKE = /^\d{1,20}$/;
/** Discord's session ids and tokens: printable ASCII without spaces. */
const OPAQUE = /^[\x21-\x7e]{1,512}$/;

export function parseVoiceState(body: Record<string, unknown>, allow: readonly string[]): VoiceServerState {
  const unknown = Object.keys(body).filter((k) => !(FIELDS as readonly string[]).includes(k));
  if (unknown.length > 0) throw new HttpError(400, `unknown field ${JSON.stringify(unknown[0])}; a voice state has ${FIELDS.join(', ')}`);
  const missing = FIELDS.filter((k) => body[k] === undefined);
  if (missing.length > 0) throw new HttpError(400, `voice state is missing ${missing.map((k) => `"${k}"`).join(', ')}`);
  for (const k of FIELDS) {
    if (typeof body[k] !== 'string') throw new HttpError(400, `"${k}" must be a string`);
  }
  const state = body as unknown as VoiceServerState;
  for (const k of ['guildId', 'channelId', 'userId'] as const) {
    if (!SNOWFLAKE.test(state[k])) throw new HttpError(400, `"${k}" must be a Discord id (1 to 20 digits)`);
  }
  for (const k of ['sessionId', 'token'] as const) {
    if (!OPAQUE.test(state[k])) throw new HttpError(400, `"${k}" must be 1 to 512 printable ASCII characters without spaces`);
  }
  const host = endpointHost(state.endpoint);
  if (host === undefined) throw new HttpError(400, '"endpoint" must be host[:port] (a host name or IP address, no scheme or path)');
  if (!hostAllowed(host, allow)) {
    throw new HttpError(403, `voice endpoint ${host} is not allowed: only CHORUS_VOICE_ALLOW (${allow.join(', ')})`);
  }
  return { guildId: state.guildId, channelId: state.channelId, userId: state.userId, sessionId: state.sessionId, token: state.token, endpoint: state.endpoint };
}

/** The host of `host[:port]` or `[v6][:port]`, lower-cased; undefined if it is not that. */
export function endpointHost(endpoint: string): string | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:/?#@\s[\]]+))(?::(\d{1,5}))?$/.exec(endpoint);
  if (!m) return undefined;
  if (m[3] !== undefined) {
    const port = Number(m[3]);
    if (port < 1 || port > 65535) return undefined;
  }
  if (m[1] !== undefined) return net.isIPv6(m[1]) ? m[1].toLowerCase() : undefined;
  const host = m[2]!.toLowerCase();
  return net.isIPv4(host) || HOST_NAME.test(host) ? host.replace(/\.$/, '') : undefined;
}

/** Whether `host` matches a pattern: the same name or address, or a name under a `*.domain`. */
export function hostAllowed(host: string, allow: readonly string[]): boolean {
  return allow.some((pattern) => (pattern.startsWith('*.') ? host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1 : host === pattern));
}
