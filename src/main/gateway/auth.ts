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
 * Whatever the token, a browser may not drive the API from another site, and with no token a
 * loopback gateway answers loopback Host names only: the OriginPolicy shared with the engine
 * (src/shared/access.ts); a refusal is a 403.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { credentialOf, listenToken, OriginPolicy, sameSecret, unauthorizedReason, UNAUTHORIZED_HEADERS } from '../../shared/access.js';
import { RefusedError } from './limits.js';

/** What a request may do: everything, or listen to one session. */
export type Grant = { kind: 'all' } | { kind: 'listen'; session: string };

const ALL: Grant = { kind: 'all' };

export class GatewayAccess {
  private readonly origins: OriginPolicy;

  constructor(
    private readonly secret: string | undefined,
    /** The address the gateway binds to (CHORUS_HOST). */
    bindHost: string,
  ) {
    this.origins = new OriginPolicy('gateway', secret, bindHost);
  }

  /** Refuses a request from another site's page, or (no token) for a Host a loopback gateway is not. */
  checkOrigin(headers: IncomingHttpHeaders): void {
    const refusal = this.origins.refusal(headers);
    if (refusal !== undefined) throw new RefusedError('auth', 403, refusal);
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
