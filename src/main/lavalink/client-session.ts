/**
 * A Lavalink client session: one bot's WebSocket (GET /v4/websocket) and the players it drives.
 *
 *   → ready { resumed, sessionId }            first, on every (re)connect
 *   → playerUpdate { guildId, state }         every CHORUS_LAVALINK_UPDATE_S for each player
 *   → stats { …, frameStats }                 right after ready (clients balance by it), then every 60 s
 *   → event { type: Track…Event | WebSocketClosedEvent, guildId, … }
 *
 * With `resuming` set (PATCH /v4/sessions/:id), a dropped WebSocket leaves the players playing for
 * `timeout` seconds; their events wait (at most MAX_MISSED) and are sent after the `ready` of the
 * client that comes back with `Session-Id`. Without it, or after the timeout, the players are
 * destroyed (their tracks end with `cleanup`).
 */
import { randomBytes } from 'node:crypto';
import type { WebSocket } from 'ws';
import type { Gateway } from '../gateway/gateway.js';
import { logger } from '../../shared/log.js';
import { LavalinkPlayer } from './player.js';

const log = logger('lavalink');
/** Events kept for a client that is away while resuming; older ones are dropped first. */
const MAX_MISSED = 1000;
const TICK_MS = 100;
const SESSION_ID_CHARS = 'abcdefghijklmnopqrstuvwxyz0123456789';

export function newSessionId(): string {
  return [...randomBytes(16)].map((b) => SESSION_ID_CHARS[b % SESSION_ID_CHARS.length]).join('');
}

export class ClientSession {
  readonly players = new Map<string, LavalinkPlayer>();
  resuming = false;
  timeoutS = 60;
  private ws: WebSocket | undefined;
  private readonly missed: string[] = [];
  private expiry: NodeJS.Timeout | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  /** Frames sent and nulled per player at the last stats, and when that was, for frameStats. */
  private lastCounts = new Map<string, { sent: number; nulled: number }>();
  private lastCountsAt = 0;

  constructor(
    readonly id: string,
    readonly userId: string,
    readonly clientName: string,
    private readonly gateway: Gateway,
    private readonly voiceAllow: readonly string[],
    updateEveryS: number,
    private readonly stats: (session: ClientSession) => Record<string, unknown>,
    private readonly onGone: (session: ClientSession) => void,
  ) {
    this.timers.push(setInterval(() => void this.sendPlayerUpdates(), updateEveryS * 1000));
    this.timers.push(setInterval(() => this.send({ op: 'stats', ...this.stats(this) }), 60_000));
    this.timers.push(setInterval(() => {
      const now = Date.now();
      for (const player of this.players.values()) player.tick(now);
    }, TICK_MS));
  }

  get connected(): boolean {
    return this.ws !== undefined;
  }

  /**
   * Takes a (re)connected WebSocket: ready first, then what was missed. A client that resumes
   * before its old socket's close has reached chorus takes over from that socket.
   */
  attach(ws: WebSocket, resumed: boolean): void {
    if (this.expiry) clearTimeout(this.expiry);
    this.expiry = undefined;
    const old = this.ws;
    this.ws = ws;
    old?.close(1000, 'resumed on another connection');
    ws.send(JSON.stringify({ op: 'ready', resumed, sessionId: this.id }));
    for (const text of this.missed.splice(0)) ws.send(text);
    ws.send(JSON.stringify({ op: 'stats', ...this.stats(this) }));
    ws.on('close', () => this.detach(ws));
    ws.on('error', (err) => log.debug('client socket error', { session: this.id, message: err.message }));
    // Lavalink clients send nothing over the socket; a message is not an error, just unused.
  }

  private detach(ws: WebSocket): void {
    if (this.ws !== ws) return;
    this.ws = undefined;
    if (this.resuming) {
      log.info('client gone; players kept for resuming', { session: this.id, timeoutS: this.timeoutS, players: this.players.size });
      this.expiry = setTimeout(() => void this.close(), this.timeoutS * 1000);
      return;
    }
    void this.close();
  }

  send(payload: Record<string, unknown>): void {
    const text = JSON.stringify(payload);
    if (this.ws) {
      this.ws.send(text);
      return;
    }
    if (!this.resuming) return;
    if (this.missed.length >= MAX_MISSED) this.missed.shift();
    this.missed.push(text);
  }

  player(guildId: string, create: boolean): LavalinkPlayer | undefined {
    let player = this.players.get(guildId);
    if (player || !create) return player;
    player = new LavalinkPlayer(guildId, this.id, this.userId, this.gateway, this.voiceAllow, (event) => this.send({ op: 'event', ...event }));
    this.players.set(guildId, player);
    return player;
  }

  async destroyPlayer(guildId: string): Promise<void> {
    const player = this.players.get(guildId);
    if (!player) return;
    this.players.delete(guildId);
    this.lastCounts.delete(player.chorusId);
    await player.destroy();
  }

  private async sendPlayerUpdates(): Promise<void> {
    const players = [...this.players.values()];
    await Promise.all(players.map((p) => p.refreshPing().catch(() => undefined)));
    for (const player of players) {
      if (this.players.get(player.guildId) !== player) continue;
      this.send({ op: 'playerUpdate', guildId: player.guildId, state: player.state() });
    }
  }

  /**
   * Lavalink's frameStats: per player over the last minute, frames sent, frames nulled (the
   * player had none when one was due: chorus's underruns) and the deficit from the 3000 a minute
   * holds, averaged over the players that played through it without a pause, stop or end
   * (Lavalink's AudioLossCounter.isDataUsable). Undefined when none did.
   */
  frameStats(now = Date.now()): { sent: number; nulled: number; deficit: number } | undefined {
    const since = this.lastCountsAt;
    this.lastCountsAt = now;
    const counts = new Map<string, { sent: number; nulled: number }>();
    let players = 0;
    let sent = 0;
    let nulled = 0;
    for (const player of this.players.values()) {
      const c = player.frameCounts();
      if (!c) continue;
      counts.set(player.chorusId, c);
      const last = this.lastCounts.get(player.chorusId);
      if (!last || player.playingSince === undefined || player.playingSince > since) continue;
      players++;
      sent += c.sent - last.sent;
      nulled += c.nulled - last.nulled;
    }
    this.lastCounts = counts;
    if (players === 0) return undefined;
    const expected = players * 3000;
    return { sent: Math.round(sent / players), nulled: Math.round(nulled / players), deficit: Math.round((expected - sent - nulled) / players) };
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    if (this.expiry) clearTimeout(this.expiry);
    const ws = this.ws;
    this.ws = undefined;
    this.onGone(this);
    await Promise.allSettled([...this.players.keys()].map((g) => this.destroyPlayer(g)));
    ws?.close(1000, 'session closed');
  }
}
