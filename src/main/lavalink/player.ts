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
import type { Gateway } from '../gateway/gateway.js';
import { HttpError } from '../gateway/errors.js';
import type { GatewaySession } from '../gateway/session.js';
import { parseVoiceState } from '../gateway/voice-state.js';
import type { LavalinkTrack } from './load-tracks.js';

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
  /** The player's volume, 0 to 1000 (%), and the `volume` filter's factor, 0 to 5. */
  volume = 100;
  filterVolume = 1;
  voice: LavalinkVoice | undefined;
  endTime: number | undefined;
  /** Where the current play started in the track (ms), and the session's sent count then. */
  private basePosition = 0;
  private baseSent = 0;
  /** Frames sent when the position was last read, to tell a stall. */
  private stuckSince = 0;
  private stuckTold = false;
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

  get position(): number {
    if (!this.track) return 0;
    const position = this.basePosition + (this.sent - this.baseSent) * FRAME_MS;
    return Math.min(position, this.track.info.isStream ? position : this.track.info.length);
  }

  get connected(): boolean {
    return this.session?.voiceEvent?.status === 'ready';
  }

  state(): PlayerState {
    return { time: Date.now(), position: this.position, connected: this.connected, ping: this.connected ? 0 : -1 };
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
      filters: this.filterVolume === 1 ? {} : { volume: this.filterVolume },
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

  /** Plays `track` from `positionMs`, ending the current one as `replaced`. */
  async play(track: LavalinkTrack, positionMs: number, url: string): Promise<void> {
    this.attach();
    const previous = this.track;
    this.track = null;
    if (previous) this.emit({ type: 'TrackEndEvent', guildId: this.guildId, track: previous, reason: 'replaced' });
    this.stuckSince = 0;
    this.stuckTold = false;
    try {
      await this.gateway.play(this.chorusId, url, 'opus', positionMs / 1000, this.paused, this.gain);
    } catch (err) {
      // The source is the client's mistake (no such file, a refused host): Lavalink's load failure.
      if (err instanceof HttpError && err.status >= 400 && err.status < 500 && err.status !== 429) {
        this.emit({ type: 'TrackStartEvent', guildId: this.guildId, track });
        this.emit({ type: 'TrackExceptionEvent', guildId: this.guildId, track, exception: { message: err.message, severity: 'common', cause: `HttpError: ${err.message}` } });
        this.emit({ type: 'TrackEndEvent', guildId: this.guildId, track, reason: 'loadFailed' });
        return;
      }
      throw err;
    }
    this.track = track;
    this.basePosition = positionMs;
    this.baseSent = this.sent;
    this.emit({ type: 'TrackStartEvent', guildId: this.guildId, track });
  }

  /** The linear gain the engine applies: volume and the volume filter together. */
  private get gain(): number {
    return (this.volume / 100) * this.filterVolume;
  }

  /**
   * Sets volume and/or the volume filter. The engine encodes seconds ahead, so a track under way
   * is played again from the frame the voice server has reached, at the new gain: what was
   * encoded at the old level is dropped, and the change is heard within a prebuffer's time.
   */
  async setLevel(volume: number | undefined, filterVolume: number | undefined): Promise<void> {
    const before = this.gain;
    if (volume !== undefined) this.volume = volume;
    if (filterVolume !== undefined) this.filterVolume = filterVolume;
    if (this.gain !== before) await this.seek(this.position);
  }

  async seek(positionMs: number): Promise<void> {
    if (!this.track || !this.session?.active) return;
    await this.gateway.seek(this.chorusId, positionMs / 1000, this.gain);
    this.basePosition = positionMs;
    this.baseSent = this.sent;
  }

  async setPaused(paused: boolean): Promise<void> {
    if (paused === this.paused) return;
    this.paused = paused;
    if (!this.track || !this.session?.active) return;
    if (paused) await this.gateway.pause(this.chorusId);
    else await this.gateway.resume(this.chorusId);
  }

  /** Stops the track (if any) and says so with `reason`. */
  async stop(reason: TrackEndReason): Promise<void> {
    const track = this.track;
    this.track = null;
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
        this.emit({ type: 'TrackEndEvent', guildId: this.guildId, track, reason: 'finished' });
        return;
      case 'error':
        if (!track) return;
        this.track = null;
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
