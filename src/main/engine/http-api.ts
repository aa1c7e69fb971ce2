/**
 * The engine's HTTP control API (seed-compatible):
 *
 *   POST /session/:id/play    {"url", "format"?: "opus"|"web"|"pcm" (opus), "start_at"?, "duration"?,
 *                             "gain"? (linear, 0 to 10: ffmpeg's volume filter on the PCM before encoding),
 *                             "filters"? (Lavalink's filters object: src/shared/audio-filters.ts)}
 *   POST /session/:id/next    the play's body, and "after"?: a play number: queued to follow the
 *                             current play (or the queued play `after`) with no gap (its frames
 *                             come right after that play's last, behind its `finished` and its own
 *                             `ready`), replacing what followed it; a play when none is live
 *   DELETE /session/:id/next  drops the queued follower (404 when there is none)
 *   POST /session/:id/stop | pause | resume
 *   GET  /session/:id/status
 *   GET  /health, GET /metrics (Prometheus text)
 *
 * Every answer is JSON (but /metrics); every error is `{"error": "..."}` with a 4xx: 400 bad id
 * or body, 403 source refused, 404 unknown id / route / file, 405 wrong method, 409 not in a
 * state for that, 413 body over 64 KiB, 429 CHORUS_MAX_SESSIONS reached, 431 headers too large.
 * With CHORUS_TOKEN set, every route but /health needs it (`Authorization: Bearer`, as the gateway
 * sends it): 401. Every route, /health included, follows the gateway's Origin/Host rule
 * (OriginPolicy): a cross-site page, or with no token a non-loopback Host, gets 403.
 */
import http from 'node:http';
import { bodyTooLarge, HttpError, parseJsonObject, readBody, sendError, sendJson } from '../http-kit.js';
import { isAudioFormat } from '../../shared/audio.js';
import { FilterError, parseFilters } from '../../shared/audio-filters.js';
import { credentialOf, OriginPolicy, sameSecret, unauthorizedReason, UNAUTHORIZED_HEADERS } from '../../shared/access.js';
import { answerClientErrorsInJson } from '../../shared/client-error.js';
import { healthHttpStatus, type EngineHealth } from '../../shared/health.js';
import { sessionIdError } from '../../shared/protocol.js';
import { LimitError, NotFoundError, StateError, type SessionManager } from './manager.js';
import { millis, type PlayRequest, type Session } from './session.js';
import type { PrometheusMetrics } from '../prometheus.js';

export const MAX_BODY_BYTES = 64 * 1024;
/** Most amplification a play may ask for (Lavalink's volume 1000 % is 10). */
export const MAX_GAIN = 10;
const SESSION_ROUTE = /^\/session\/([^/]*)\/(play|next|stop|pause|resume|status)$/;

export interface ApiParts {
  manager: SessionManager;
  health(): EngineHealth;
  metrics: PrometheusMetrics;
  /** CHORUS_TOKEN: when set, required on every route but /health. */
  token?: string;
  /** The address the API binds to (CHORUS_ENGINE_HOST), for the Origin/Host rule. */
  bindHost: string;
}

export function createHttpApi(parts: ApiParts): http.Server {
  const origins = new OriginPolicy('engine', parts.token, parts.bindHost);
  const server = http.createServer((req, res) => {
    handle(parts, origins, req, res).catch((err: unknown) => sendError(res, asHttpError(err)));
  });
  answerClientErrorsInJson(server);
  return server;
}

async function handle(parts: ApiParts, origins: OriginPolicy, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  const refusal = origins.refusal(req.headers);
  if (refusal !== undefined) throw new HttpError(403, refusal);
  let url: URL;
  try {
    url = new URL(req.url ?? '/', 'http://engine');
  } catch {
    throw new HttpError(400, 'the request target is not a valid path');
  }
  const method = req.method ?? 'GET';
  if (url.pathname === '/health') {
    requireMethod(method, 'GET');
    const health = parts.health();
    return sendJson(res, healthHttpStatus(health), health);
  }
  if (parts.token !== undefined) {
    const credential = credentialOf(req.headers, url);
    if (credential.kind !== 'token' || !sameSecret(credential.token, parts.token)) {
      throw new HttpError(401, unauthorizedReason(credential), UNAUTHORIZED_HEADERS);
    }
  }
  if (url.pathname === '/metrics') {
    requireMethod(method, 'GET');
    const text = await parts.metrics.render();
    res.writeHead(200, { 'content-type': parts.metrics.contentType });
    res.end(text);
    return;
  }
  const m = SESSION_ROUTE.exec(url.pathname);
  if (!m) throw new HttpError(404, `no route ${method} ${url.pathname}`);
  const action = m[2]!;
  const id = decodeId(m[1]!);
  const body = await readBody(req, MAX_BODY_BYTES, () => bodyTooLarge(MAX_BODY_BYTES, ' (64 KiB)'));
  const { manager } = parts;
  if (action === 'next' && method === 'DELETE') {
    if (!manager.unfollow(id)) throw new HttpError(404, `session ${JSON.stringify(id)} has no queued next play`);
    return sendJson(res, 200, statusOf(manager.get(id)));
  }
  requireMethod(method, action === 'status' ? 'GET' : 'POST');
  switch (action) {
    case 'play':
    case 'next': {
      const request = parsePlay(body);
      const { session, refused } = await (action === 'play' ? manager.play(id, request) : manager.follow(id, request, parseAfter(body)));
      if (refused) throw new HttpError(refused.status, refused.message, {}, statusOf(session));
      return sendJson(res, 200, statusOf(session));
    }
    case 'stop':
      return sendJson(res, 200, statusOf(manager.stop(id)));
    case 'pause':
      return sendJson(res, 200, statusOf(manager.pause(id)));
    case 'resume':
      return sendJson(res, 200, statusOf(manager.resume(id)));
    default:
      return sendJson(res, 200, statusOf(manager.get(id)));
  }
}

export function statusOf(s: Session): Record<string, unknown> {
  const state = s.state;
  return {
    session_id: s.id,
    play: s.play,
    state: state.status,
    ...(state.status === 'error' ? { message: state.message } : {}),
    ...(state.status === 'stopped' ? { reason: state.reason } : {}),
    url: s.request.url,
    format: s.request.format,
    start_at: s.request.startAt ?? 0,
    duration: s.duration ?? null,
    track_duration: s.trackDuration ?? null,
    position: millis((s.request.startAt ?? 0) + s.framesSent * 0.02),
    frames_made: s.framesMade,
    frames_sent: s.framesSent,
    frames_queued: s.outbox.frames,
    credit: s.credit,
    ffmpeg_pid: s.pipeline?.pid ?? null,
    passthrough: s.pipeline?.passthrough ?? false,
    ...(s.follower ? { next: { play: s.follower.play, url: s.follower.request.url, state: s.follower.state.status } } : {}),
  };
}

function requireMethod(method: string, allowed: 'GET' | 'POST'): void {
  if (method !== allowed) throw new HttpError(405, `method ${method} not allowed; use ${allowed}`);
}

function decodeId(raw: string): string {
  let id: string;
  try {
    id = decodeURIComponent(raw);
  } catch {
    throw new HttpError(400, 'session id is not valid percent-encoding');
  }
  const why = sessionIdError(id);
  if (why) throw new HttpError(400, why);
  return id;
}

function parsePlay(body: Buffer): PlayRequest {
  const v = parseJsonObject(body, 'body is not JSON; expected {"url": ..., "format": "opus"|"web"|"pcm"}');
  if (typeof v.url !== 'string' || v.url === '') throw new HttpError(400, 'body needs a "url" string');
  const format = v.format ?? 'opus';
  if (!isAudioFormat(format)) throw new HttpError(400, '"format" must be "opus", "web" or "pcm"');
  const request: PlayRequest = { url: v.url, format };
  if (v.start_at !== undefined && v.start_at !== null) {
    if (typeof v.start_at !== 'number' || !Number.isFinite(v.start_at) || v.start_at < 0) throw new HttpError(400, '"start_at" must be a number of seconds >= 0');
    request.startAt = v.start_at;
  }
  // A hint of the track's length, as natashi's Node layer sends it: 0 or absent means unknown.
  if (v.duration !== undefined && v.duration !== null) {
    if (typeof v.duration !== 'number' || !Number.isFinite(v.duration) || v.duration < 0) throw new HttpError(400, '"duration" must be a number of seconds >= 0 (0: unknown)');
    if (v.duration > 0) request.duration = v.duration;
  }
  if (v.gain !== undefined && v.gain !== null) {
    if (typeof v.gain !== 'number' || !Number.isFinite(v.gain) || v.gain < 0 || v.gain > MAX_GAIN) throw new HttpError(400, `"gain" must be a number from 0 to ${MAX_GAIN}`);
    request.gain = v.gain;
  }
  if (v.filters !== undefined && v.filters !== null) {
    try {
      request.filters = parseFilters(v.filters);
    } catch (err) {
      if (err instanceof FilterError) throw new HttpError(400, err.message);
      throw err;
    }
  }
  return request;
}

/** A /next body's "after": the play number to follow (absent: the current play). */
function parseAfter(body: Buffer): number | undefined {
  const after = parseJsonObject(body).after;
  if (after === undefined || after === null) return undefined;
  if (!Number.isSafeInteger(after) || (after as number) < 1) throw new HttpError(400, '"after" must be a play number (an integer ≥ 1)');
  return after as number;
}

function asHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof NotFoundError) return new HttpError(404, err.message);
  if (err instanceof StateError) return new HttpError(409, err.message);
  if (err instanceof LimitError) return new HttpError(429, err.message);
  return new HttpError(500, `internal error: ${err instanceof Error ? err.message : String(err)}`);
}
