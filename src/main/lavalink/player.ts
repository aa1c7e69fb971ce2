/**
 * One Lavalink player: a guild's player of one client session, played by one chorus session
 * (its own worker, ring and credits, as every chorus session). Its id is derived from the client
 * session and the guild, so a resumed client finds its players where they were:
 *
 *   "ll-" + base64url(sha256(clientSessionId + ":" + guildId))[0..21]   → 24 printable bytes
 *
 * What the chorus session reports (its listener events, through GatewaySession.observer) becomes
 * Lavalink's events: TrackStartEvent once a play is accepted, TrackEndEvent (finished, loadFailed,
 * stopped, replaced, cleanup), TrackExceptionEvent, TrackStuckEvent, WebSocketClosedEvent.
 */
import { createHash } from 'node:crypto';
import type { ListenerEvent } from '../../shared/listener-protocol.js';
import { Control } from '../../shared/worker-messages.js';
import { FRAME_MS } from '../../shared/audio.js';
import type { AudioFilters, Sound } from '../../shared/audio-filters.js';
import type { Gateway } from '../gateway/gateway.js';
import { HttpError } from '../http-kit.js';
import type { GatewaySession } from '../gateway/session.js';
import { parseVoiceState } from '../gateway/voice-state.js';
import type { LavalinkTrack } from './load-tracks.js';
import { YtDlpError } from './yt-dlp.js';

export type TrackEndReason = 'finished' | 'loadFailed' | 'stopped' | 'replaced' | 'cleanup';

export interface LavalinkVoice {
  token: string;
  endpoint: string;
  sessionId: string;
  channelId?: string;
}

export interface PlayerState {
  time: number;
  position: number;
  connected: boolean;
  ping: number;
}

/** How a player tells its client session what happened (an `op: "event"` payload, less `op`). */
export type PlayerEventSink = (event: Record<string, unknown>) => void;

/** A track longer than this in `buffering` (the ring ran dry while playing) is stuck, as Lavalink's default. */
export const STUCK_THRESHOLD_MS = 10_000;

export function chorusSessionId(clientSessionId: string, guildId: string): string {
  return 'll-' + createHash('sha256').update(`${clientSessionId}:${guildId}`).digest('base64url').slice(0, 21);
}

export class LavalinkPlayer {
  readonly chorusId: string;
  track: LavalinkTrack | null = null;
  paused = false;
  /** The player's volume, 0 to 1000 (%), the `volume` filter's factor, 0 to 5, and the other filters. */
  volume = 100;
  filterVolume = 1;
  filters: AudioFilters = {};
  voice: LavalinkVoice | undefined;
  endTime: number | undefined;
  /** Where the current play started in the track (ms), the session's sent count then, and the track ms a frame plays (timescale). */
  /** A sound change under way (applyPendingSound), and whether a newer sound waits for it. */
  private soundApplying: Promise<void> | undefined;
  private soundPending = false;
  /** Frames sent when the position was last read, to tell a stall. */
  private stuckSince = 0;
  private stuckTold = false;
  /** Date.now() since which a track has played without a pause, stop or end (Lavalink's frameStats count only such players). */
  playingSince: number | undefined;
  /** The voice gateway's heartbeat round trip, as the worker last reported it. */
  private pingMs: number | undefined;
  private session: GatewaySession | undefined;

  constructor(
    readonly guildId: string,
    clientSessionId: string,
    private readonly userId: string,
    private readonly gateway: Gateway,
    private readonly voiceAllow: readonly string[],
    private readonly emit: PlayerEventSink,
  ) {
    this.chorusId = chorusSessionId(clientSessionId, guildId);
  }

  private attach(): GatewaySession {
    const session = this.gateway.session(this.chorusId, true);
    if (this.session !== session) {
      this.session = session;
      session.persistent = false;
      session.observer = (event) => this.onSessionEvent(event);
    }
    return session;
  }

  private get sent(): number {
    return this.session ? Atomics.load(this.session.control, Control.Sent) : 0;
  }

  /** Where the track is: the session's own position (seeks, filters' pace and splices counted there). */
  get position(): number {
    if (!this.track) return 0;
    const position = (this.session?.positionFrames ?? 0) * FRAME_MS;
    return Math.min(position, this.track.info.isStream ? position : this.track.info.length);
  }

  get connected(): boolean {
    return this.session?.voiceEvent?.status === 'ready';
  }

  state(): PlayerState {
    return { time: Date.now(), position: this.position, connected: this.connected, ping: this.connected ? (this.pingMs ?? 0) : -1 };
  }

  /** Asks the worker for the voice connection's heartbeat round trip (for the next playerUpdate). */
  async refreshPing(): Promise<void> {
    if (!this.connected) {
      this.pingMs = undefined;
      return;
    }
    const stats = await this.gateway.workerStats(this.chorusId);
    this.pingMs = stats?.voice?.pingMs;
  }

  /** The session's frames sent and ticks that found no frame (underruns), since it began. */
  frameCounts(): { sent: number; nulled: number } | undefined {
    if (!this.session) return undefined;
    return { sent: this.sent, nulled: Atomics.load(this.session.control, Control.Underruns) };
  }

  /** Whether a track is under way and not paused, for stats. */
  get playing(): boolean {
    return this.track !== null && !this.paused && this.session?.active === true;
  }

  toJson(): Record<string, unknown> {
    return {
      guildId: this.guildId,
      track: this.track ? { ...this.track, info: { ...this.track.info, position: this.position } } : null,
      volume: this.volume,
      paused: this.paused,
      state: this.state(),
      voice: this.voice ? { token: this.voice.token, endpoint: this.voice.endpoint, sessionId: this.voice.sessionId, ...(this.voice.channelId ? { channelId: this.voice.channelId } : {}) } : { token: '', endpoint: '', sessionId: '' },
      filters: this.filterVolume === 1 ? { ...this.filters } : { volume: this.filterVolume, ...this.filters },
    };
  }

  async setVoice(voice: LavalinkVoice): Promise<void> {
    if (voice.channelId === undefined) throw new HttpError(400, 'voice.channelId is required (Lavalink 4.2 and later send it; Discord needs it for DAVE)');
    const same = this.voice && this.voice.token === voice.token && this.voice.endpoint === voice.endpoint && this.voice.sessionId === voice.sessionId && this.voice.channelId === voice.channelId;
    if (same) return;
    const state = parseVoiceState(
      { guildId: this.guildId, channelId: voice.channelId, userId: this.userId, sessionId: voice.sessionId, token: voice.token, endpoint: voice.endpoint },
      this.voiceAllow,
    );
    this.attach();
    await this.gateway.setVoice(this.chorusId, state);
    this.voice = voice;
  }

  /** Plays `track` (at the URL `url()` finds) from `positionMs`, ending the current one as `replaced`. */
  async play(track: LavalinkTrack, positionMs: number, url: () => Promise<string>): Promise<void> {
    this.attach();
    const previous = this.track;
    this.track = null;
    if (previous) this.emit({ type: 'TrackEndEvent', guildId: this.guildId, track: previous, reason: 'replaced' });
    this.stuckSince = 0;
    this.stuckTold = false;
    try {
      await this.gateway.play(this.chorusId, await url(), 'opus', positionMs / 1000, this.paused, this.sound);
    } catch (err) {
      // yt-dlp found no media URL for the page (the site failed): Lavalink's load failure, a fault.
      if (err instanceof YtDlpError) return this.loadFailed(track, err, 'fault');
      // The source is the client's mistake (no such file, a refused host): Lavalink's load failure.
      if (err instanceof HttpError && err.status >= 400 && err.status < 500 && err.status !== 429) return this.loadFailed(track, err, 'common');
      throw err;
    }
    this.track = track;
    if (!this.paused) this.playingSince ??= Date.now();
    this.emit({ type: 'TrackStartEvent', guildId: this.guildId, track });
  }

  private loadFailed(track: LavalinkTrack, err: Error, severity: 'common' | 'fault'): void {
    this.emit({ type: 'TrackStartEvent', guildId: this.guildId, track });
    this.emit({ type: 'TrackExceptionEvent', guildId: this.guildId, track, exception: { message: err.message, severity, cause: `${err.name}: ${err.message}` } });
    this.emit({ type: 'TrackEndEvent', guildId: this.guildId, track, reason: 'loadFailed' });
  }

  /** What the engine applies: volume and the volume filter as one linear gain, and the other filters. */
  private get sound(): Sound {
    return { gain: (this.volume / 100) * this.filterVolume, filters: this.filters };
  }

  /** Sets volume, the volume filter and the other filters, for the next play or seek. */
  setSound(volume: number | undefined, filterVolume: number | undefined, filters: AudioFilters | undefined): boolean {
    const before = JSON.stringify(this.sound);
    if (volume !== undefined) this.volume = volume;
    if (filterVolume !== undefined) this.filterVolume = filterVolume;
    if (filters !== undefined) this.filters = filters;
    return JSON.stringify(this.sound) !== before;
  }

  /**
   * Sets volume and/or filters now. The engine encodes seconds ahead, so a track under way is
   * played again with the new sound from a frame a little ahead of the voice connection, which
   * goes on into it there with no gap (Gateway.changeSound): what was encoded with the old sound
   * past that frame is never sent.
   */
  async applySound(volume: number | undefined, filterVolume: number | undefined, filters: AudioFilters | undefined): Promise<void> {
    if (!this.setSound(volume, filterVolume, filters) || !this.track || !this.session?.active) return;
    this.soundPending = true;
    this.soundApplying ??= this.applyPendingSound().finally(() => (this.soundApplying = undefined));
    await this.soundApplying;
  }

  /**
   * Changes the engine's sound to the newest asked for, and again while newer ones came
   * meanwhile: the steps of a volume slider dragged faster than a change takes become one more
   * change, not one each (each is a new engine play, counted against CHORUS_PLAY_RATE).
   */
  private async applyPendingSound(): Promise<void> {
    while (this.soundPending && this.track && this.session?.active) {
      this.soundPending = false;
      await this.gateway.changeSound(this.chorusId, this.sound);
    }
  }

  async seek(positionMs: number): Promise<void> {
    if (!this.track || !this.session?.active) return;
    await this.gateway.seek(this.chorusId, positionMs / 1000, this.sound);
  }

  async setPaused(paused: boolean): Promise<void> {
    if (paused === this.paused) return;
    this.paused = paused;
    this.playingSince = paused || !this.track ? undefined : Date.now();
    if (!this.track || !this.session?.active) return;
    if (paused) await this.gateway.pause(this.chorusId);
    else await this.gateway.resume(this.chorusId);
  }

  /** Stops the track (if any) and says so with `reason`. */
  async stop(reason: TrackEndReason): Promise<void> {
    const track = this.track;
    this.track = null;
    this.playingSince = undefined;
    if (!track) return;
    if (this.session?.active) await this.gateway.stop(this.chorusId);
    this.emit({ type: 'TrackEndEvent', guildId: this.guildId, track, reason });
  }

  /** Ends the player: its track (cleanup) and its voice connection. */
  async destroy(): Promise<void> {
    await this.stop('cleanup');
    if (this.session) {
      this.session.observer = undefined;
      if (this.session.voice) await this.gateway.leaveVoice(this.chorusId).catch(() => false);
    }
  }

  /** Called on the client session's clock: end time and stuck tracks. */
  tick(now: number): void {
    const track = this.track;
    if (!track || !this.session) return;
    if (this.endTime !== undefined && this.position >= this.endTime) {
      this.endTime = undefined;
      void this.stop('finished').catch(() => undefined);
      return;
    }
    if (this.session.state.status === 'buffering' && !this.paused) {
      if (this.stuckSince === 0) this.stuckSince = now;
      else if (!this.stuckTold && now - this.stuckSince >= STUCK_THRESHOLD_MS) {
        this.stuckTold = true;
        this.emit({ type: 'TrackStuckEvent', guildId: this.guildId, track, thresholdMs: STUCK_THRESHOLD_MS });
      }
    } else {
      this.stuckSince = 0;
      this.stuckTold = false;
    }
  }

  private onSessionEvent(event: ListenerEvent): void {
    const track = this.track;
    switch (event.type) {
      case 'finished':
        if (!track) return;
        this.track = null;
        this.playingSince = undefined;
        this.emit({ type: 'TrackEndEvent', guildId: this.guildId, track, reason: 'finished' });
        return;
      case 'error':
        if (!track) return;
        this.track = null;
        this.playingSince = undefined;
        this.emit({ type: 'TrackExceptionEvent', guildId: this.guildId, track, exception: { message: event.message, severity: 'fault', cause: event.message } });
        this.emit({ type: 'TrackEndEvent', guildId: this.guildId, track, reason: 'loadFailed' });
        return;
      case 'voice':
        if (event.status === 'disconnected' && event.closeCode !== undefined) {
          this.emit({ type: 'WebSocketClosedEvent', guildId: this.guildId, code: event.closeCode, reason: event.reason ?? '', byRemote: true });
        }
        return;
      default:
        return;
    }
  }
}
