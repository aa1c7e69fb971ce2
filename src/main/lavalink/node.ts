/**
 * chorus as a Lavalink v4 node, on the gateway's HTTP server (http-api.ts hands over every path
 * `owns()` claims, and the upgrade of /v4/websocket):
 *
 *   GET    /version                          plain text
 *   GET    /v4/info  /v4/stats
 *   GET    /v4/loadtracks?identifier=        load-tracks.ts
 *   GET    /v4/decodetrack?encodedTrack=     POST /v4/decodetracks [encoded…]
 *   GET    /v4/websocket                     Authorization, User-Id, Client-Name, Session-Id?
 *   PATCH  /v4/sessions/:sid                 { resuming?, timeout? }
 *   GET    /v4/sessions/:sid/players
 *   GET|PATCH|DELETE /v4/sessions/:sid/players/:guildId[?noReplace=true]
 *
 * Authorization is Lavalink's: the header holds the password (CHORUS_TOKEN) itself; "Bearer
 * <token>" is taken too. With no token set, every request is let in, as on chorus's own routes.
 * Errors are Lavalink's body (errors.ts). Every answer carries `Lavalink-Api-Version: 4`, and the
 * WebSocket's upgrade `Session-Resumed` (clients read whether they resumed from it before `ready`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import os from 'node:os';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { Config } from '../../shared/config.js';
import { sameSecret } from '../../shared/access.js';
import { FILTER_NAMES, FilterError, parseFilters, type AudioFilters } from '../../shared/audio-filters.js';
import type { GatewayAccess } from '../gateway/auth.js';
import { gone, HttpError, sendJson } from '../http-kit.js';
import type { Gateway } from '../gateway/gateway.js';
import { ClientSession, newSessionId } from './client-session.js';
import { lavalinkErrorBody, sendLavalinkError } from './errors.js';
import { lavalinkTrack, loadTracks, SOURCE_NAMES, sourceNames, YTDLP_SOURCE_NAMES, type LavalinkTrack, type TrackLoader } from './load-tracks.js';
import type { LavalinkVoice } from './player.js';
import { decodeTrack, TrackCodecError } from './track-codec.js';

/** The Lavalink version chorus speaks; the build part says who answers. */
export const LAVALINK_VERSION = { semver: '4.0.0+chorus', major: 4, minor: 0, patch: 0, preRelease: null, build: 'chorus' };
const SESSION_ROUTE = /^\/v4\/sessions\/([^/]+)(?:\/players(?:\/([^/]+))?)?$/;
const SNOWFLAKE = /^\d{1,20}$/;
const API_VERSION_HEADER = 'Lavalink-Api-Version';

export type BodyReader = (req: IncomingMessage) => Promise<Buffer>;

export class LavalinkNode {
  private readonly sessions = new Map<string, ClientSession>();
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  private readonly started = Date.now();
  private lastCpu = { usage: process.cpuUsage(), at: performance.now() };

  constructor(
    private readonly gateway: Gateway,
    private readonly config: Config,
    private readonly access: GatewayAccess,
    private readonly readBody: BodyReader,
    private readonly loader: TrackLoader,
  ) {
    this.wss.on('headers', (headers, req) => {
      headers.push(`${API_VERSION_HEADER}: ${LAVALINK_VERSION.major}`, `Session-Resumed: ${this.resumable(req) !== undefined}`);
    });
  }

  /** The engine URL of a track chorus can play (a yt-dlp track's media URL, asked for now); 400 for another source's. */
  private async playUrl(track: LavalinkTrack, signal: AbortSignal): Promise<string> {
    const { sourceName, uri, identifier } = track.info;
    if ((YTDLP_SOURCE_NAMES as readonly string[]).includes(sourceName) && this.loader.ytDlp && uri) return this.loader.ytDlp.mediaUrl(uri, signal);
    if (!(SOURCE_NAMES as readonly string[]).includes(sourceName)) {
      throw new HttpError(400, `source "${sourceName}" is not played by this chorus node (it plays ${sourceNames(this.loader).join(', ')})`);
    }
    return sourceName === 'local' ? identifier : (uri ?? identifier);
  }

  owns(path: string): boolean {
    return path === '/version' || path.startsWith('/v4/');
  }

  async handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    res.setHeader(API_VERSION_HEADER, String(LAVALINK_VERSION.major));
    try {
      this.authorize(req);
      await this.route(req, res, url);
    } catch (err) {
      const status = err instanceof HttpError ? err.status : 500;
      if (res.headersSent) {
        res.destroy();
        return;
      }
      sendLavalinkError(res, status, err instanceof Error ? err.message : String(err), url.pathname, err instanceof HttpError ? err.headers : {});
    }
  }

  /** The upgrade of GET /v4/websocket; false for another path. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, url: URL): boolean {
    if (url.pathname !== '/v4/websocket') return false;
    let userId: string;
    try {
      this.authorize(req);
      userId = header(req, 'user-id') ?? '';
      if (!SNOWFLAKE.test(userId)) throw new HttpError(400, 'User-Id header must be the bot\'s Discord user id');
    } catch (err) {
      const status = err instanceof HttpError ? err.status : 500;
      const body = lavalinkErrorBody(status, (err as Error).message, url.pathname);
      const text = JSON.stringify(body);
      socket.end(`HTTP/1.1 ${status} ${body.error}\r\n${API_VERSION_HEADER}: ${LAVALINK_VERSION.major}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
      return true;
    }
    const clientName = header(req, 'client-name') ?? 'unknown';
    // The upgrade's headers and this callback run in one turn: both see the same resumable session.
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const resumed = this.resumable(req);
      if (resumed) {
        resumed.attach(ws, true);
        return;
      }
      const session = new ClientSession(
        newSessionId(),
        userId,
        clientName,
        this.gateway,
        this.config.CHORUS_VOICE_ALLOW,
        this.config.CHORUS_LAVALINK_UPDATE_S,
        (s) => this.stats(s),
        (s) => this.sessions.delete(s.id),
      );
      this.sessions.set(session.id, session);
      session.attach(ws, false);
    });
    return true;
  }

  /**
   * The session a WebSocket upgrade resumes: its Session-Id, kept for resuming, the same bot. It
   * may still look connected: a client's reconnect can arrive before its old socket's close.
   */
  private resumable(req: IncomingMessage): ClientSession | undefined {
    const wanted = header(req, 'session-id');
    const session = wanted !== undefined ? this.sessions.get(wanted) : undefined;
    if (!session || !session.resuming || session.userId !== header(req, 'user-id')) return undefined;
    return session;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.sessions.values()].map((s) => s.close()));
    for (const ws of this.wss.clients) ws.terminate();
  }

  private authorize(req: IncomingMessage): void {
    this.access.checkOrigin(req.headers);
    const secret = this.config.CHORUS_TOKEN;
    if (secret === undefined) return;
    const given = (req.headers.authorization ?? '').replace(/^Bearer[ \t]+/i, '').trim();
    if (given === '' || !sameSecret(given, secret)) throw new HttpError(401, 'the Authorization header must hold the password (CHORUS_TOKEN)');
  }

  private async route(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const method = req.method ?? 'GET';
    const path = url.pathname;
    if (path === '/version') {
      only(method, 'GET');
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(LAVALINK_VERSION.semver);
      return;
    }
    if (path === '/v4/info') {
      only(method, 'GET');
      return sendJson(res, 200, this.info());
    }
    if (path === '/v4/stats') {
      only(method, 'GET');
      return sendJson(res, 200, this.stats());
    }
    if (path === '/v4/loadtracks') {
      only(method, 'GET');
      const identifier = url.searchParams.get('identifier');
      if (!identifier) throw new HttpError(400, 'identifier query parameter is required');
      return sendJson(res, 200, await loadTracks(this.loader, identifier, gone(res)));
    }
    if (path === '/v4/decodetrack') {
      only(method, 'GET');
      const encoded = url.searchParams.get('encodedTrack') ?? url.searchParams.get('track');
      if (!encoded) throw new HttpError(400, 'encodedTrack query parameter is required');
      return sendJson(res, 200, decoded(encoded));
    }
    if (path === '/v4/decodetracks') {
      only(method, 'POST');
      const body = await this.json(req);
      if (!Array.isArray(body) || !body.every((t) => typeof t === 'string')) throw new HttpError(400, 'body must be an array of encoded tracks');
      return sendJson(res, 200, body.map((t: string) => decoded(t)));
    }
    const m = SESSION_ROUTE.exec(path);
    if (m) return this.sessionRoute(req, res, url, method, decodeURIComponent(m[1]!), m[2] === undefined ? undefined : decodeURIComponent(m[2]), path.includes('/players'));
    throw new HttpError(404, `no route for ${method} ${path}`);
  }

  private async sessionRoute(req: IncomingMessage, res: ServerResponse, url: URL, method: string, sessionId: string, guildId: string | undefined, players: boolean): Promise<void> {
    const session = this.sessions.get(sessionId);
    if (!session) throw new HttpError(404, 'Session not found');
    if (!players) {
      only(method, 'PATCH');
      const body = object(await this.json(req));
      if (body.resuming !== undefined) {
        if (typeof body.resuming !== 'boolean') throw new HttpError(400, 'resuming must be a boolean');
        session.resuming = body.resuming;
      }
      if (body.timeout !== undefined) {
        if (!Number.isInteger(body.timeout) || (body.timeout as number) < 0 || (body.timeout as number) > 86_400) throw new HttpError(400, 'timeout must be an integer number of seconds from 0 to 86400');
        session.timeoutS = body.timeout as number;
      }
      return sendJson(res, 200, { resuming: session.resuming, timeout: session.timeoutS });
    }
    if (guildId === undefined) {
      only(method, 'GET');
      return sendJson(res, 200, [...session.players.values()].map((p) => p.toJson()));
    }
    if (!SNOWFLAKE.test(guildId)) throw new HttpError(400, 'guildId must be a Discord id');
    if (method === 'GET') {
      const player = session.player(guildId, false);
      if (!player) throw new HttpError(404, 'Player not found');
      return sendJson(res, 200, player.toJson());
    }
    if (method === 'DELETE') {
      await this.readBody(req);
      await session.destroyPlayer(guildId);
      res.writeHead(204);
      res.end();
      return;
    }
    only(method, 'PATCH');
    const update = await this.parseUpdate(object(await this.json(req)), gone(res));
    const player = session.player(guildId, true)!;
    if (update.voice) await player.setVoice(update.voice);
    if (update.paused !== undefined && update.track === undefined) await player.setPaused(update.paused);
    else if (update.paused !== undefined) player.paused = update.paused;
    if (update.endTime !== undefined) player.endTime = update.endTime ?? undefined;
    const noReplace = url.searchParams.get('noReplace') === 'true';
    const replacing = update.track !== undefined && update.track !== null && !(noReplace && player.track);
    // A new track or a seek starts with the new sound anyway: no extra replay for it.
    if (replacing || update.position !== undefined) player.setSound(update.volume, update.filterVolume, update.filters);
    else await player.applySound(update.volume, update.filterVolume, update.filters);
    if (update.track === null) await player.stop('stopped');
    else if (replacing) {
      const track = update.track!;
      const signal = gone(res);
      await player.play(track, update.position ?? 0, () => this.playUrl(track, signal));
    }
    else if (update.position !== undefined) await player.seek(update.position);
    return sendJson(res, 200, player.toJson());
  }

  /** A PATCH body, checked field by field; `track` undefined: untouched, null: stop. */
  private async parseUpdate(body: Record<string, unknown>, signal: AbortSignal): Promise<{
    track?: LavalinkTrack | null;
    position?: number;
    endTime?: number | null;
    volume?: number;
    filterVolume?: number;
    filters?: AudioFilters;
    paused?: boolean;
    voice?: LavalinkVoice;
  }> {
    const out: Awaited<ReturnType<LavalinkNode['parseUpdate']>> = {};
    let encoded: unknown = body.encodedTrack;
    let identifier: unknown = body.identifier;
    let userData: unknown;
    if (body.track !== undefined) {
      const track = object(body.track, 'track');
      encoded = track.encoded;
      identifier = track.identifier;
      userData = track.userData;
    }
    if (encoded !== undefined && identifier !== undefined) throw new HttpError(400, 'encoded and identifier are mutually exclusive');
    if (encoded === null) out.track = null;
    else if (encoded !== undefined) {
      if (typeof encoded !== 'string') throw new HttpError(400, 'track.encoded must be a string or null');
      out.track = decoded(encoded);
    } else if (identifier !== undefined) {
      if (typeof identifier !== 'string' || identifier === '') throw new HttpError(400, 'track.identifier must be a non-empty string');
      const result = await loadTracks(this.loader, identifier, signal);
      if (result.loadType !== 'track') throw new HttpError(400, `identifier did not resolve to a single track (loadType ${result.loadType})`);
      out.track = result.data;
    }
    if (out.track && userData !== undefined) out.track = { ...out.track, userData };
    if (body.position !== undefined) {
      if (!Number.isInteger(body.position) || (body.position as number) < 0) throw new HttpError(400, 'position must be an integer ≥ 0 (ms)');
      out.position = body.position as number;
    }
    if (body.endTime !== undefined) {
      if (body.endTime !== null && (!Number.isInteger(body.endTime) || (body.endTime as number) <= 0)) throw new HttpError(400, 'endTime must be an integer > 0 (ms) or null');
      out.endTime = body.endTime as number | null;
    }
    if (body.volume !== undefined) {
      if (!Number.isInteger(body.volume) || (body.volume as number) < 0 || (body.volume as number) > 1000) throw new HttpError(400, 'volume must be an integer from 0 to 1000');
      out.volume = body.volume as number;
    }
    if (body.paused !== undefined) {
      if (typeof body.paused !== 'boolean') throw new HttpError(400, 'paused must be a boolean');
      out.paused = body.paused;
    }
    if (body.filters !== undefined) {
      const { volume = 1, ...filters } = object(body.filters, 'filters');
      const used = Object.entries(filters).find(
        ([k, v]) => !(FILTER_NAMES as readonly string[]).includes(k) && v !== null && v !== undefined && !(Array.isArray(v) && v.length === 0) && !(typeof v === 'object' && Object.keys(v).length === 0),
      );
      if (used) throw new HttpError(400, `filter "${used[0]}" is not supported by this chorus node (it has ${FILTER_NAMES.join(', ')})`);
      // The filters replace all previous ones: no volume filter is a factor of 1.
      if (volume === null) out.filterVolume = 1;
      else if (typeof volume !== 'number' || !Number.isFinite(volume) || volume < 0 || volume > 5) throw new HttpError(400, 'filters.volume must be a number from 0 to 5');
      else out.filterVolume = volume;
      const known = Object.fromEntries(Object.entries(filters).filter(([k]) => (FILTER_NAMES as readonly string[]).includes(k)));
      try {
        out.filters = parseFilters(known);
      } catch (err) {
        if (err instanceof FilterError) throw new HttpError(400, err.message);
        throw err;
      }
    }
    if (body.voice !== undefined) {
      const v = object(body.voice, 'voice');
      for (const k of ['token', 'endpoint', 'sessionId'] as const) if (typeof v[k] !== 'string') throw new HttpError(400, `voice.${k} must be a string`);
      if (v.channelId !== undefined && typeof v.channelId !== 'string') throw new HttpError(400, 'voice.channelId must be a string');
      out.voice = { token: v.token as string, endpoint: v.endpoint as string, sessionId: v.sessionId as string, ...(v.channelId !== undefined ? { channelId: v.channelId as string } : {}) };
    }
    return out;
  }

  private async json(req: IncomingMessage): Promise<unknown> {
    const body = await this.readBody(req);
    try {
      return JSON.parse(body.toString('utf8'));
    } catch {
      throw new HttpError(400, 'body is not valid JSON');
    }
  }

  private info(): Record<string, unknown> {
    return {
      version: LAVALINK_VERSION,
      buildTime: 0,
      git: { branch: 'chorus', commit: 'unknown', commitTime: 0 },
      jvm: `none (chorus on Node ${process.versions.node})`,
      lavaplayer: 'none (chorus: ffmpeg and @discordjs/opus)',
      sourceManagers: sourceNames(this.loader),
      filters: [...FILTER_NAMES],
      plugins: [],
    };
  }

  /** Lavalink's stats; with a client session, its frameStats (the WebSocket's), else none (REST's). */
  private stats(session?: ClientSession): Record<string, unknown> {
    let players = 0;
    let playing = 0;
    for (const s of this.sessions.values()) {
      for (const p of s.players.values()) {
        players++;
        if (p.playing) playing++;
      }
    }
    const now = performance.now();
    const usage = process.cpuUsage();
    const cores = os.availableParallelism();
    const cpuMs = (usage.user - this.lastCpu.usage.user + usage.system - this.lastCpu.usage.system) / 1000;
    const wallMs = now - this.lastCpu.at;
    this.lastCpu = { usage, at: now };
    const rss = process.memoryUsage.rss();
    const frameStats = session?.frameStats();
    return {
      players,
      playingPlayers: playing,
      uptime: Date.now() - this.started,
      memory: { free: os.freemem(), used: rss, allocated: rss, reservable: os.totalmem() },
      cpu: { cores, systemLoad: Math.min(1, os.loadavg()[0]! / cores), lavalinkLoad: wallMs > 0 ? Math.min(1, cpuMs / wallMs / cores) : 0 },
      ...(session ? { frameStats: frameStats ?? null } : {}),
    };
  }
}

function decoded(encoded: string): LavalinkTrack {
  try {
    const track = decodeTrack(encoded);
    return { ...lavalinkTrack(track.info, track.sourceData), encoded };
  } catch (err) {
    if (err instanceof TrackCodecError) throw new HttpError(400, `not a Lavalink track: ${err.message}`);
    throw err;
  }
}

function object(value: unknown, what = 'body'): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new HttpError(400, `${what} must be a JSON object`);
  return value as Record<string, unknown>;
}

function only(method: string, allowed: string): void {
  if (method !== allowed) throw new HttpError(405, `${method} is not allowed here; use ${allowed}`);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

