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
 *
 * Origin and Host, the same rule on the gateway and the engine: whatever the token, a browser may
 * not drive either API from another site — a request whose Origin is not the server's own (its
 * Host) is refused; clients that are not browsers send no Origin and are unaffected. With no
 * token, a server bound to loopback also answers only loopback Host names, so a DNS-rebound name
 * cannot reach it; a reverse proxy serving it under another name needs CHORUS_TOKEN set (and must
 * pass the Host header on).
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import net from 'node:net';

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

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

/** An IP address on loopback, however it is written (127.x.y.z, ::1, 0:0::1, ::ffff:127.0.0.1). */
export function isLoopbackAddress(address: string): boolean {
  const family = net.isIP(address);
  return family !== 0 && LOOPBACK.check(address, family === 6 ? 'ipv6' : 'ipv4');
}

function isLoopbackName(host: string): boolean {
  return host === 'localhost' || host.endsWith('.localhost') || isLoopbackAddress(host);
}

/** The host name of a Host header or an origin's host ("[::1]:8080" → "::1"). */
function hostName(hostAndPort: string): string {
  const bracketed = /^\[([^\]]+)\]/.exec(hostAndPort);
  return (bracketed ? bracketed[1]! : hostAndPort.replace(/:\d+$/, '')).toLowerCase();
}

/**
 * The Origin/Host rule of one server (see the top of this file): `server` names it in the
 * reasons ("gateway", "engine"); `bindHost` is the address it listens on.
 */
export class OriginPolicy {
  private readonly loopbackOnly: boolean;

  constructor(
    private readonly server: string,
    secret: string | undefined,
    bindHost: string,
  ) {
    this.loopbackOnly = secret === undefined && isLoopbackName(bindHost.toLowerCase());
  }

  /** Why a request must be refused (a 403), or undefined when its Origin and Host are acceptable. */
  refusal(headers: IncomingHttpHeaders): string | undefined {
    const host = headers.host ?? '';
    if (this.loopbackOnly && host !== '' && !isLoopbackName(hostName(host))) {
      return `Host ${JSON.stringify(host)} is not this ${this.server} (it answers loopback names only)`;
    }
    const origin = headers.origin;
    if (origin === undefined) return undefined;
    let originHost: string;
    try {
      originHost = new URL(origin).host;
    } catch {
      return `Origin ${JSON.stringify(origin.slice(0, 100))} is not a URL`;
    }
    if (originHost.toLowerCase() !== host.toLowerCase()) {
      return `cross-origin request refused: Origin ${JSON.stringify(origin.slice(0, 100))} is not this ${this.server}`;
    }
    return undefined;
  }
}
