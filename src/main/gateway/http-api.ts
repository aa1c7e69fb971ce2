/**
 * The gateway's HTTP API: the server, its routes and their answers. WebSocket listeners are
 * listener-sockets.ts; what a request is checked for, request-checks.ts.
 *
 *   POST   /sessions/:id/play     {"url","format"?:"opus"|"web"}
 *   POST   /sessions/:id/pause | resume | stop
 *   POST   /sessions/:id/seek     {"seconds"}
 *   POST   /sessions/:id/rtp      {"host","port"}    DELETE the same to remove
 *   PUT    /sessions/:id/voice    the bot's voice state (voice-state.ts); DELETE leaves
 *   GET    /sessions/:id/sdp[?port=n]
 *   GET    /sessions  /sessions/:id  /health  /metrics  and the web player (static.ts)
 *   GET    /ws?session=id         WebSocket listener (src/shared/listener-protocol.ts)
 *   POST   /debug/block?ms=n  /debug/crash?session=id&kind=session|thread   (CHORUS_DEBUG_ENDPOINTS=1)
 *
 * Every error is a 4xx/5xx with a JSON body {"error": reason}. Access (CHORUS_TOKEN) is auth.ts;
 * the limits (bodies, WebSocket messages, listeners, RTP sinks, plays per second) are limits.ts.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { answerClientErrorsInJson } from '../../shared/client-error.js';
import type { Config } from '../../shared/config.js';
import { healthHttpStatus } from '../../shared/health.js';
import type { ErrorResponse, PlayResponse } from '../../shared/gateway-api.js';
import { opusSdp } from '../../shared/rtp.js';
import { logger } from '../../shared/log.js';
import { GatewayAccess, listenOnly, type Grant } from './auth.js';
import { HttpError } from './errors.js';
import type { Gateway } from './gateway.js';
import { RefusedError } from './limits.js';
import { ListenerSockets, type ListenerRequest } from './listener-sockets.js';
import { renderMetrics } from './metrics.js';
import {
  addressSet,
  checkFormat,
  checkRtpTarget,
  checkUrl,
  errorMessage,
  methodNotAllowed,
  pathOf,
  readBody,
  readJson,
  requestUrl,
  requireHost,
} from './request-checks.js';
import { serveStatic } from './static.js';
import { parseVoiceState } from './voice-state.js';
import { LavalinkNode } from '../lavalink/node.js';
import { sendJson } from '../send-json.js';

const log = logger('gateway');
/** Longest a request may take to arrive (body included); Node's default. */
const REQUEST_TIMEOUT_MS = 300_000;
/** An idle keep-alive connection is closed after this long (Node's default). */
const KEEP_ALIVE_MS = 5000;

const SESSION_ROUTE = /^\/sessions\/([^/]+)(?:\/(play|pause|resume|stop|seek|rtp|sdp|voice))?$/;

/** What every request handler needs: the gateway, its config and its access policy. */
interface Ctx {
  gateway: Gateway;
  config: Config;
  access: GatewayAccess;
  rtpAllow: net.BlockList;
  lavalink: LavalinkNode;
}

export interface GatewayServer {
  server: http.Server;
  /** Tells every WebSocket listener the gateway is going away; resolves once all are gone. */
  closeListeners(): Promise<void>;
}

export function createGatewayServer(gateway: Gateway, config: Config): GatewayServer {
  const access = new GatewayAccess(config.CHORUS_TOKEN, config.CHORUS_HOST);
  const ctx: Ctx = { gateway, config, access,
    rtpAllow: addressSet(config.CHORUS_RTP_ALLOW),
    lavalink: new LavalinkNode(gateway, config, access, (req) => readBody(req, config.CHORUS_MAX_BODY_BYTES)),
  };
  const listeners = new ListenerSockets(gateway, config, access);

  const headersTimeout = config.CHORUS_HEADERS_TIMEOUT_MS;
  const server = http.createServer(
    {
      // Answered below with a JSON reason, not by Node's parser with an empty 400.
      requireHostHeader: false,
      // A connection that sends no complete request in time is closed, so idle ones cannot hoard the cap.
      headersTimeout,
      requestTimeout: Math.max(REQUEST_TIMEOUT_MS, headersTimeout),
      keepAliveTimeout: Math.min(KEEP_ALIVE_MS, headersTimeout),
      connectionsCheckingInterval: Math.min(1000, headersTimeout / 2),
    },
    (req, res) => {
      handle(ctx, req, res).catch((err: unknown) => sendError(ctx, req, res, err));
    },
  );
  // Node's headersTimeout counts from a request's first byte: a connection that never sends one
  // would be kept for ever. It gets the same time to have its first request's headers in.
  const started = new WeakSet<Duplex>();
  server.on('request', (req: IncomingMessage) => started.add(req.socket));
  server.on('connection', (socket: net.Socket) => {
    const timer = setTimeout(() => {
      if (!started.has(socket)) socket.destroy();
    }, headersTimeout);
    socket.once('close', () => clearTimeout(timer));
  });
  // One total for HTTP and WebSocket: past it a new connection is closed at once, unanswered,
  // which costs a descriptor for an instant instead of one for as long as the client likes.
  server.maxConnections = config.CHORUS_MAX_CONNECTIONS;
  // One error for every drop: a connection flood is thousands a second, each only counted.
  const dropped = new RefusedError('connections', 503, `connection limit reached (CHORUS_MAX_CONNECTIONS=${config.CHORUS_MAX_CONNECTIONS}); a new connection was closed`);
  server.on('drop', () => gateway.refusals.note(dropped));
  answerClientErrorsInJson(server);
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    started.add(socket);
    let request: ListenerRequest;
    try {
      requireHost(req);
      const url = requestUrl(req);
      if (ctx.lavalink.upgrade(req, socket, head, url)) return;
      request = listeners.check(req, url);
    } catch (err) {
      listeners.refuse(req, socket, err);
      return;
    }
    listeners.open(req, socket, head, request);
  });
  // Upgraded sockets are no longer the HTTP server's: server.close() would wait on them for ever.
  const closeListeners = async () => {
    await ctx.lavalink.close();
    await listeners.closeAll();
  };
  return { server, closeListeners };
}

async function handle(ctx: Ctx, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { gateway, config } = ctx;
  requireHost(req);
  const url = requestUrl(req);
  const path = url.pathname;
  const method = req.method ?? 'GET';

  // Open to all: the health check and the web player's files (see auth.ts).
  if (path === '/health' && method === 'GET') {
    const health = gateway.health();
    return sendJson(res, healthHttpStatus(health), health);
  }
  if ((method === 'GET' || method === 'HEAD') && serveStatic(req, res)) return;
  // Lavalink v4 (/version, /v4/*): its own authorization and error body (src/main/lavalink).
  if (ctx.lavalink.owns(path)) return ctx.lavalink.handle(req, res, url);

  // Everything else needs the token. A session's listen token is known on its own routes, where
  // it reads GET /sessions/:id and is refused (403, not 401) for control.
  const match = SESSION_ROUTE.exec(path);
  let id: string | undefined;
  if (match) {
    try {
      id = decodeURIComponent(match[1]!);
    } catch {
      id = undefined;
    }
  }
  ctx.access.checkOrigin(req.headers);
  const grant = ctx.access.authorize(req.headers, url, id);
  if (grant.kind === 'listen' && !(match?.[2] === undefined && method === 'GET')) throw listenOnly();

  if (path === '/metrics' && method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
    res.end(renderMetrics(gateway));
    return;
  }
  if (path === '/sessions' && method === 'GET') return sendJson(res, 200, gateway.summary());
  if (path.startsWith('/debug/')) {
    if (!config.CHORUS_DEBUG_ENDPOINTS) throw new HttpError(404, 'debug endpoints are off (CHORUS_DEBUG_ENDPOINTS=1 turns them on)');
    return debug(gateway, url, method, res);
  }

  if (match) {
    if (id === undefined) throw new HttpError(400, 'session id is not valid percent-encoding');
    return sessionRoute(ctx, grant, id, match[2], method, url, req, res);
  }
  throw new HttpError(404, `no route for ${method} ${path}`);
}

async function sessionRoute(
  ctx: Ctx,
  grant: Grant,
  id: string,
  action: string | undefined,
  method: string,
  url: URL,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const { gateway, config } = ctx;
  const maxBody = config.CHORUS_MAX_BODY_BYTES;
  if (action === undefined) {
    if (method !== 'GET') throw methodNotAllowed(method, 'GET');
    const summary = gateway.session(id, false).summary();
    // A listener learns how its session plays, not its source (a URL may carry credentials).
    if (grant.kind === 'listen') delete summary.url;
    const worker = await gateway.workerStats(id);
    // The voice connection's live figures come from the worker; without one, what main knows.
    const voice = worker?.voice ?? summary.voice;
    return sendJson(res, 200, { session: summary, ...(worker ? { worker } : {}), ...(voice ? { voice } : {}) });
  }
  if (action === 'voice') {
    if (method === 'PUT') {
      const state = parseVoiceState(await readJson(req, maxBody), config.CHORUS_VOICE_ALLOW);
      return sendJson(res, 200, { voice: await gateway.setVoice(id, state) });
    }
    if (method === 'DELETE') {
      await readBody(req, maxBody);
      if (!(await gateway.leaveVoice(id))) throw new HttpError(404, 'session has no voice connection');
      return sendJson(res, 200, { left: true });
    }
    throw methodNotAllowed(method, 'PUT, DELETE');
  }
  if (action === 'sdp') {
    if (method !== 'GET') throw methodNotAllowed(method, 'GET');
    const session = gateway.session(id, false);
    const port = url.searchParams.get('port');
    const target = port !== null ? session.rtpSinks.find((t) => String(t.port) === port) : session.rtpSinks[0];
    if (!target) throw new HttpError(409, 'session has no such RTP sink: POST /sessions/:id/rtp first');
    res.writeHead(200, { 'content-type': 'application/sdp' });
    res.end(opusSdp(id, target.host, target.port));
    return;
  }
  if (action === 'rtp') {
    if (method !== 'POST' && method !== 'DELETE') throw methodNotAllowed(method, 'POST, DELETE');
    const target = checkRtpTarget(await readJson(req, maxBody), ctx.rtpAllow);
    if (method === 'DELETE') {
      const removed = await gateway.removeRtpSink(id, target);
      if (!removed) throw new HttpError(404, 'no such RTP sink');
      return sendJson(res, 200, { removed: target });
    }
    return sendJson(res, 200, { rtp: await gateway.addRtpSink(id, target, config.CHORUS_MAX_RTP_SINKS) });
  }
  if (method !== 'POST') throw methodNotAllowed(method, 'POST');
  const body = action === 'play' || action === 'seek' ? await readJson(req, maxBody) : (await readBody(req, maxBody), {});
  let session;
  switch (action) {
    case 'play':
      session = await gateway.play(id, checkUrl(body.url), checkFormat(body.format));
      break;
    case 'pause':
      session = await gateway.pause(id);
      break;
    case 'resume':
      session = await gateway.resume(id);
      break;
    case 'stop':
      session = await gateway.stop(id);
      break;
    case 'seek': {
      const seconds = body.seconds;
      if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) {
        throw new HttpError(400, '"seconds" must be a number ≥ 0');
      }
      session = await gateway.seek(id, seconds);
      break;
    }
    default:
      throw new HttpError(404, `no route for ${method} ${url.pathname}`);
  }
  // With a token set, a play hands out the token that lets a listener in on this session only.
  const token = action === 'play' ? ctx.access.listenTokenFor(id) : undefined;
  return sendJson(res, 200, token === undefined ? { session } : ({ session, listenToken: token } satisfies PlayResponse));
}

async function debug(gateway: Gateway, url: URL, method: string, res: ServerResponse): Promise<void> {
  if (method !== 'POST') throw methodNotAllowed(method, 'POST');
  if (url.pathname === '/debug/block') {
    const ms = Number(url.searchParams.get('ms'));
    if (!Number.isInteger(ms) || ms < 0 || ms > 10_000) throw new HttpError(400, '?ms must be an integer from 0 to 10000');
    log.warn('debug: blocking the main thread', { ms });
    const until = performance.now() + ms;
    while (performance.now() < until) {
      // Busy on purpose: this endpoint exists to show what a stalled main thread does (nothing to RTP).
    }
    return sendJson(res, 200, { blockedMs: ms });
  }
  if (url.pathname === '/debug/crash') {
    const kind = url.searchParams.get('kind') ?? 'session';
    if (kind !== 'session' && kind !== 'thread') throw new HttpError(400, '?kind must be session or thread');
    await gateway.crash(url.searchParams.get('session') ?? '', kind);
    return sendJson(res, 200, { crashed: kind });
  }
  throw new HttpError(404, `no debug route ${url.pathname}`);
}

function sendError(ctx: Ctx, req: IncomingMessage, res: ServerResponse, err: unknown): void {
  const status = err instanceof HttpError ? err.status : 500;
  if (status >= 500) log.error('request failed', { status, message: errorMessage(err) });
  if (err instanceof RefusedError) ctx.gateway.refusals.note(err, { method: req.method, path: pathOf(req) });
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body: ErrorResponse = { error: errorMessage(err) };
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...(err instanceof HttpError ? err.headers : {}),
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

