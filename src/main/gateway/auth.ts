/**
 * Who may do what on the gateway (CHORUS_TOKEN).
 *
 * With no token set, everyone may do everything (the default: the gateway binds to 127.0.0.1).
 * With a token set:
 *   open to all          GET /health, and the web player's files (GET / and /static/…: the page
 *                        holds no secret; it passes on the ?token= of its own URL)
 *   the token            everything else: every other route, every WebSocket and its actions
 *   a listen token       (from the answer to POST /sessions/:id/play) only for its own session:
 *                        the WebSocket /ws?session=<id>, to listen — actions on it get an error
 *                        event — and GET /sessions/<id>; for another session it is no token (401),
 *                        for control of its own session it is not enough (403)
 * Every refusal is a RefusedError of kind `auth`, with WWW-Authenticate on a 401.
 *
 * Whatever the token, a browser may not drive the API from another site: a request whose Origin
 * is not the gateway's own (its Host) is refused with 403; clients that are not browsers send no
 * Origin and are unaffected. With no token, a gateway bound to loopback also answers only
 * loopback Host names, so a DNS-rebound name cannot reach it; a reverse proxy serving it under
 * another name needs CHORUS_TOKEN set (and must pass the Host header on).
 */
import type { IncomingHttpHeaders } from 'node:http';
import net from 'node:net';
import { credentialOf, listenToken, sameSecret, unauthorizedReason, UNAUTHORIZED_HEADERS } from '../../shared/access.js';
import { RefusedError } from './limits.js';

/** What a request may do: everything, or listen to one session. */
export type Grant = { kind: 'all' } | { kind: 'listen'; session: string };

const ALL: Grant = { kind: 'all' };

const LOOPBACK_NAMES = new Set(['localhost', '127.0.0.1', '::1']);

function isLoopback(host: string): boolean {
  return LOOPBACK_NAMES.has(host) || host.endsWith('.localhost') || (net.isIPv4(host) && host.startsWith('127.'));
}

/** The host name of a Host header or an origin's host ("[::1]:8080" → "::1"). */
function hostName(hostAndPort: string): string {
  const bracketed = /^\[([^\]]+)\]/.exec(hostAndPort);
  return (bracketed ? bracketed[1]! : hostAndPort.replace(/:\d+$/, '')).toLowerCase();
}

export class GatewayAccess {
  private readonly loopbackOnly: boolean;

  constructor(
    private readonly secret: string | undefined,
    /** The address the gateway binds to (CHORUS_HOST). */
    bindHost: string,
  ) {
    this.loopbackOnly = secret === undefined && isLoopback(bindHost.toLowerCase());
  }

  /** Refuses a request from another site's page, or (no token) for a Host a loopback gateway is not. */
  checkOrigin(headers: IncomingHttpHeaders): void {
    const host = headers.host ?? '';
    if (this.loopbackOnly && host !== '' && !isLoopback(hostName(host))) {
      throw new RefusedError('auth', 403, `Host ${JSON.stringify(host)} is not this gateway (it answers loopback names only)`);
    }
    const origin = headers.origin;
    if (origin === undefined) return;
    let originHost: string;
    try {
      originHost = new URL(origin).host;
    } catch {
      throw new RefusedError('auth', 403, `Origin ${JSON.stringify(origin.slice(0, 100))} is not a URL`);
    }
    if (originHost.toLowerCase() !== host.toLowerCase()) {
      throw new RefusedError('auth', 403, `cross-origin request refused: Origin ${JSON.stringify(origin.slice(0, 100))} is not this gateway`);
    }
  }

  get enabled(): boolean {
    return this.secret !== undefined;
  }

  /** The listen token to hand out with a play of `sessionId`, when a token is set. */
  listenTokenFor(sessionId: string): string | undefined {
    return this.secret === undefined ? undefined : listenToken(this.secret, sessionId);
  }

  /**
   * The grant of a request, or a 401. `listenFor` is the session whose listen token this route
   * also takes (the WebSocket's and GET /sessions/:id's own session).
   */
  authorize(headers: IncomingHttpHeaders, url: URL, listenFor?: string): Grant {
    const secret = this.secret;
    if (secret === undefined) return ALL;
    const credential = credentialOf(headers, url);
    if (credential.kind === 'token') {
      // Both comparisons run whatever the first answers, so the timing says nothing of which matched.
      const main = sameSecret(credential.token, secret);
      const listen = listenFor !== undefined && sameSecret(credential.token, listenToken(secret, listenFor));
      if (main) return ALL;
      if (listen) return { kind: 'listen', session: listenFor };
    }
    throw new RefusedError('auth', 401, unauthorizedReason(credential), UNAUTHORIZED_HEADERS);
  }
}

/** The 403 for a listen token used where the token is needed. */
export function listenOnly(): RefusedError {
  return new RefusedError('auth', 403, 'a listen token only listens to its own session; this needs CHORUS_TOKEN');
}
