/**
 * The access token (CHORUS_TOKEN) as both HTTP servers read it, and the listen tokens derived
 * from it (Node only: node:crypto).
 *
 *   Authorization: Bearer <token>      any client that can set a header
 *   ?token=<token>                     a browser's WebSocket, which cannot
 *
 * A listen token is HMAC-SHA256(key = CHORUS_TOKEN, "chorus-listen\0" + session id), base64url:
 * it names one session, cannot be turned into another session's, and needs no state on the
 * server (it stays valid as long as CHORUS_TOKEN does). Every comparison takes the same time
 * whatever the bytes: both sides are hashed to 32 bytes first, then compared with
 * crypto.timingSafeEqual, so neither the content nor the length of a guess shows in the timing.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

/** What a request presented: nothing, a token, or an Authorization header that is not Bearer. */
export type Credential = { kind: 'none' } | { kind: 'token'; token: string } | { kind: 'malformed'; reason: string };

/** The credential of a request: its Authorization header if it has one, else its `?token=`. */
export function credentialOf(headers: IncomingHttpHeaders, url: URL): Credential {
  const header = headers.authorization;
  if (header !== undefined) {
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
    if (!m) return { kind: 'malformed', reason: 'the Authorization header must be "Bearer <token>"' };
    return { kind: 'token', token: m[1]! };
  }
  const given = [...new Set(url.searchParams.getAll('token').filter((t) => t !== ''))];
  if (given.length > 1) return { kind: 'malformed', reason: 'more than one ?token= was given' };
  return given.length === 0 ? { kind: 'none' } : { kind: 'token', token: given[0]! };
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

/** Whether two secrets are equal, in time that depends on neither. */
export function sameSecret(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/** The listen token for `sessionId` under `secret`. */
export function listenToken(secret: string, sessionId: string): string {
  return createHmac('sha256', secret).update(`chorus-listen\0${sessionId}`, 'utf8').digest('base64url');
}

/** The JSON reason of a 401 for a credential that is not the token. */
export function unauthorizedReason(credential: Credential): string {
  switch (credential.kind) {
    case 'none':
      return 'a token is required: send "Authorization: Bearer <CHORUS_TOKEN>" or ?token=';
    case 'malformed':
      return credential.reason;
    case 'token':
      return 'the token is not valid here';
  }
}

/** Headers of every 401 (RFC 6750). */
export const UNAUTHORIZED_HEADERS: Readonly<Record<string, string>> = { 'www-authenticate': 'Bearer realm="chorus"' };
