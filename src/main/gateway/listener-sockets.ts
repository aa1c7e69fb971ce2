/**
 * WebSocket listeners, `GET /ws?session=<id>`: the upgrade (Host, origin, token, the session's
 * listener limit), then the listener's life: its session's state first, paced frames from the
 * egress, and the JSON actions it may send (play, pause, resume, stop, seek; a listen token may
 * only listen). Every refusal is a close or an `error` event saying why; the session and its
 * other listeners are untouched.
 */
import http, { type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Config } from '../../shared/config.js';
import { parseListenerAction, type ListenerAction } from '../../shared/listener-protocol.js';
import type { ErrorResponse } from '../../shared/gateway-api.js';
import { logger } from '../../shared/log.js';
import { listenOnly, type GatewayAccess, type Grant } from './auth.js';
import { errorMessage, HttpError } from '../http-kit.js';
import type { Gateway } from './gateway.js';
import { RefusedError } from './limits.js';
import { checkFormat, checkUrl, pathOf } from './request-checks.js';
import { AddCancelled, type QueuePlayers } from './queue-player.js';
import type { GatewaySession } from './session.js';

const log = logger('gateway');
/** What the WebSocket close of a listener over CHORUS_MAX_LISTENERS says (1013: try again later). */
const CLOSE_TRY_AGAIN = 1013;
/** How long listeners get to answer a 1001 "going away" before they are cut off. */
const CLOSE_GRACE_MS = 500;

/** An upgrade that passed the checks: whose listener it is to be, and what its token allows. */
export interface ListenerRequest {
  sessionId: string;
  grant: Grant;
}

export class ListenerSockets {
  // Listeners are pinged (for lag and liveness) by their session: see listener.ts.
  private readonly wss: WebSocketServer;

  constructor(
    private readonly gateway: Gateway,
    private readonly config: Config,
    private readonly access: GatewayAccess,
    private readonly queues: QueuePlayers,
  ) {
    this.wss = new WebSocketServer({ noServer: true, maxPayload: config.CHORUS_MAX_WS_MESSAGE_BYTES, perMessageDeflate: false });
  }

  /** Checks an upgrade to `url` (not Lavalink's); throws the HttpError to refuse it with. */
  check(req: IncomingMessage, url: URL): ListenerRequest {
    const sessionId = url.searchParams.get('session') ?? '';
    this.access.checkOrigin(req.headers);
    const grant = this.access.authorize(req.headers, url, url.pathname === '/ws' && sessionId ? sessionId : undefined);
    if (url.pathname !== '/ws') throw new HttpError(404, 'WebSocket endpoint is /ws?session=<id>');
    if (!sessionId) throw new HttpError(400, 'missing ?session=<id>');
    this.checkRoom(this.gateway.session(sessionId, true));
    return { sessionId, grant };
  }

  /** Completes a checked upgrade at once (no verifyClient): nothing can take the room checked. */
  open(req: IncomingMessage, socket: Duplex, head: Buffer, request: ListenerRequest): void {
    this.wss.handleUpgrade(req, socket, head, (ws) => this.attach(ws, socket, request));
  }

  /** Answers a refused upgrade with its status and a JSON reason, and closes the socket. */
  refuse(req: IncomingMessage, socket: Duplex, err: unknown): void {
    const status = err instanceof HttpError ? err.status : 500;
    if (status >= 500) log.error('WebSocket upgrade failed', { status, message: errorMessage(err) });
    if (err instanceof RefusedError) this.gateway.refusals.note(err, { path: pathOf(req), upgrade: true });
    const body = JSON.stringify({ error: errorMessage(err) } satisfies ErrorResponse);
    const extra = err instanceof HttpError ? Object.entries(err.headers).filter(([k]) => k !== 'connection') : [];
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}\r\n` +
        extra.map(([k, v]) => `${k}: ${v}\r\n`).join('') +
        `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  }

  /** Tells every listener the gateway is going away; resolves once all are gone. */
  async closeAll(): Promise<void> {
    for (const ws of this.wss.clients) ws.close(1001, 'gateway shutting down');
    const deadline = Date.now() + CLOSE_GRACE_MS;
    while (this.wss.clients.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const ws of this.wss.clients) ws.terminate();
  }

  private checkRoom(session: GatewaySession): void {
    const max = this.config.CHORUS_MAX_LISTENERS;
    if (session.listeners.size >= max) {
      throw new RefusedError('listeners', 429, `listener limit reached for session ${JSON.stringify(session.id)} (CHORUS_MAX_LISTENERS=${max})`);
    }
  }

  private attach(ws: WebSocket, socket: Duplex, { sessionId, grant }: ListenerRequest): void {
    const { gateway } = this;
    let session: GatewaySession;
    try {
      session = gateway.session(sessionId, true);
      this.checkRoom(session);
    } catch (err) {
      if (err instanceof RefusedError) gateway.refusals.note(err, { session: sessionId });
      ws.close(err instanceof RefusedError && err.kind === 'listeners' ? CLOSE_TRY_AGAIN : 1008, errorMessage(err).slice(0, 120));
      return;
    }
    const listener = gateway.addListener(session, ws, socket);
    const reply = (message: string) => listener.send(JSON.stringify({ type: 'error', session: session.id, message: gateway.redactor.redact(message) }));
    listener.send(JSON.stringify({ type: 'state', session: session.id, state: session.state.status }));
    ws.on('message', (data, isBinary) => {
      if (listener.closed) return;
      if (!listener.takeMessage()) {
        gateway.refusals.note(new RefusedError('ws_rate', 1008, `WebSocket messages over CHORUS_WS_MESSAGE_RATE (${this.config.CHORUS_WS_MESSAGE_RATE} a second)`), { session: session.id });
        return;
      }
      if (isBinary) {
        reply('binary messages are not accepted; send JSON actions as text');
        return;
      }
      const action = parseListenerAction(data.toString());
      if (typeof action === 'string') {
        reply(action);
        return;
      }
      if (grant.kind !== 'all') {
        const err = listenOnly();
        gateway.refusals.note(err, { session: session.id, action: action.action });
        reply(err.message);
        return;
      }
      runAction(gateway, this.queues, session.id, action).catch((err: unknown) => {
        // A stop or a clear cancelled it, as asked: no error to report.
        if (err instanceof AddCancelled) return;
        if (err instanceof RefusedError) gateway.refusals.note(err, { session: session.id, action: action.action });
        reply(errorMessage(err));
      });
    });
    ws.on('close', () => gateway.removeListener(session, ws));
    ws.on('error', (err) => {
      // ws closes a socket whose message is over maxPayload with 1009 and says so here.
      if ((err as { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        gateway.refusals.note(
          new RefusedError('ws_message', 1009, `WebSocket message larger than ${this.config.CHORUS_MAX_WS_MESSAGE_BYTES} bytes (CHORUS_MAX_WS_MESSAGE_BYTES)`),
          { session: session.id },
        );
        return;
      }
      log.debug('listener socket error', { session: session.id, message: err.message });
    });
  }
}

async function runAction(gateway: Gateway, queues: QueuePlayers, sessionId: string, action: ListenerAction): Promise<unknown> {
  switch (action.action) {
    case 'queue':
      return queues.run(sessionId, action.command);
    case 'play':
      return gateway.play(sessionId, checkUrl(action.url), checkFormat(action.format));
    case 'pause':
      return gateway.pause(sessionId);
    case 'resume':
      return gateway.resume(sessionId);
    case 'stop':
      return gateway.stop(sessionId);
    case 'seek':
      return gateway.seek(sessionId, action.seconds);
  }
}
