/**
 * A session's Discord voice connection, owned by its worker thread: @discordjs/voice's
 * VoiceConnection (voice gateway v8, transport encryption, DAVE through @snazzah/davey) without
 * its AudioPlayer. The session's player sends each packet from its own pacing clock (send());
 * there is no second timer and no hop through the main thread.
 *
 * chorus does not own the bot's Discord gateway connection. Like Lavalink, it takes the voice
 * state the bot forwards and feeds it to the connection through the adapter. When the library
 * wants the adapter to send a payload to Discord (to rejoin after a non-resumable close), chorus
 * cannot: it reports `disconnected` with `rejoin: true`, and the bot's next PUT carries on.
 */
import { performance } from 'node:perf_hooks';
import {
  VoiceConnection,
  VoiceConnectionDisconnectReason,
  VoiceConnectionStatus,
  type DiscordGatewayAdapterLibraryMethods,
  type Networking,
  type NetworkingState,
  type VoiceConnectionState,
} from '@discordjs/voice';
import type { VoiceEvent, VoiceServerState, VoiceStats } from '../shared/worker-messages.js';

/** An Opus frame of silence: five of them before speaking stops (Discord's voice docs). */
const SILENCE_FRAME = Buffer.from([0xf8, 0xff, 0xfe]);
export const SILENCE_FRAMES = 5;
/**
 * How often the UDP silence is checked. A server that echoed the library's UDP keep-alives (one
 * every 5 s; the library itself no longer tracks the answers) and then stays silent for
 * CHORUS_VOICE_UDP_SILENCE_MS is taken as gone: connect afresh. Discord's servers do not always
 * echo them (discord.js #9185, #9202), so a server that never echoed one is never judged by this.
 */
const UDP_CHECK_MS = 1_000;

/**
 * The links of this thread, checked by one timer: a thread of shared sessions holds hundreds of
 * links, and a timer each would wake it hundreds of times a second for nothing.
 */
const watched = new Set<VoiceLink>();
let watchdog: NodeJS.Timeout | undefined;

function watchUdp(link: VoiceLink): void {
  watched.add(link);
  if (watchdog) return;
  watchdog = setInterval(() => {
    for (const l of watched) l.checkUdp();
  }, UDP_CHECK_MS);
  watchdog.unref();
}

function unwatchUdp(link: VoiceLink): void {
  watched.delete(link);
  if (watched.size === 0 && watchdog) {
    clearInterval(watchdog);
    watchdog = undefined;
  }
}
/** The library's UDP keep-alive (a u32 counter in 8 bytes), which a server may echo. */
const KEEP_ALIVE_BYTES = 8;

/** Meanings of the voice gateway's close codes, for the reason a session shows. */
const CLOSE_CODES: Record<number, string> = {
  4006: 'session no longer valid',
  4009: 'session timeout',
  4011: 'server not found',
  4012: 'unknown protocol',
  4014: 'disconnected (kicked, moved or channel deleted)',
  4015: 'voice server crashed',
  4016: 'unknown encryption mode',
  4017: 'E2EE/DAVE protocol required',
  4020: 'bad request',
  4021: 'rate limited',
  4022: 'call terminated',
};

export function sameVoiceState(a: VoiceServerState, b: VoiceServerState): boolean {
  return (
    a.guildId === b.guildId &&
    a.channelId === b.channelId &&
    a.userId === b.userId &&
    a.sessionId === b.sessionId &&
    a.token === b.token &&
    a.endpoint === b.endpoint
  );
}

export class VoiceLink {
  private readonly connection: VoiceConnection;
  private adapter!: DiscordGatewayAdapterLibraryMethods;
  private voice: VoiceServerState;
  private event: VoiceEvent = { status: 'connecting' };
  private lastClose: number | undefined;
  private packets = 0;
  private resumes = 0;
  private connects = 0;
  private lastUdpAt = 0;
  private udpAnswered = false;
  private destroyed = false;
  /**
   * Steps of the trailing silence still to go: a silence frame each, and a last one, a frame
   * later, that turns speaking off (so it cannot overtake the last frame on the way).
   */
  silenceLeft = 0;

  constructor(
    voice: VoiceServerState,
    /** UDP silence after answered keep-alives that means the server is gone (CHORUS_VOICE_UDP_SILENCE_MS). */
    private readonly udpSilenceMs: number,
    /** Told of every change of status (connecting, ready, disconnected). */
    private readonly onChange: (event: VoiceEvent) => void,
  ) {
    this.voice = { ...voice };
    // Not joinVoiceChannel: that registers the connection per guild in a process-wide map and
    // asks the adapter to send a join, which the bot has done already.
    this.connection = new VoiceConnection(
      { guildId: voice.guildId, channelId: voice.channelId, group: 'chorus', selfDeaf: true, selfMute: false },
      {
        adapterCreator: (methods) => {
          this.adapter = methods;
          return { sendPayload: (payload) => this.onPayload(payload), destroy: () => undefined };
        },
      },
    );
    // A failed socket is reported here and then closes, which the state machine handles.
    this.connection.on('error', () => undefined);
    this.connection.on('stateChange', (from, to) => this.onConnectionState(from, to));
    watchUdp(this);
    this.connect();
  }

  get status(): VoiceEvent['status'] {
    return this.event.status;
  }

  get ready(): boolean {
    return this.connection.state.status === VoiceConnectionStatus.Ready;
  }

  /** A new voice state from the bot: connect again if anything changed or the link is down. */
  update(voice: VoiceServerState): VoiceEvent {
    if (sameVoiceState(voice, this.voice) && this.event.status !== 'disconnected') return this.event;
    this.voice = { ...voice };
    this.connect();
    return this.event;
  }

  /** Sends one Opus packet now; false if the connection is not ready for it. */
  send(opus: Uint8Array): boolean {
    // The library encrypts it at once, so a view of the player's buffer is enough.
    const sent = this.connection.playOpusPacket(Buffer.from(opus.buffer, opus.byteOffset, opus.byteLength)) === true;
    if (sent) this.packets++;
    return sent;
  }

  speaking(on: boolean): void {
    if (on) this.silenceLeft = 0;
    this.connection.setSpeaking(on);
  }

  /** Starts the trailing silence if audio went out since the last one; false if there is none to send. */
  beginSilence(): boolean {
    this.silenceLeft = this.ready && this.isSpeaking ? SILENCE_FRAMES + 1 : 0;
    return this.silenceLeft > 0;
  }

  /** One step of the trailing silence: a silence frame, or after the last of them, speaking off. */
  silenceStep(): void {
    if (this.silenceLeft <= 0) return;
    this.silenceLeft--;
    if (this.silenceLeft > 0) this.send(SILENCE_FRAME);
    else this.connection.setSpeaking(false);
  }

  stats(): VoiceStats {
    const out: VoiceStats = {
      ...this.event,
      endpoint: this.voice.endpoint,
      channelId: this.voice.channelId,
      dave: false,
      daveProtocolVersion: 0,
      packets: this.packets,
      resumes: this.resumes,
      connects: this.connects,
    };
    const n = this.networking()?.state;
    if (n && 'connectionData' in n) {
      out.ssrc = n.connectionData.ssrc;
      if ('encryptionMode' in n.connectionData) out.encryption = n.connectionData.encryptionMode;
    }
    if (n && 'ws' in n && n.ws.ping !== undefined) out.pingMs = n.ws.ping;
    if (n && 'dave' in n && n.dave) {
      out.daveProtocolVersion = n.dave.protocolVersion;
      out.dave = n.dave.protocolVersion > 0;
    }
    return out;
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    unwatchUdp(this);
    if (this.connection.state.status !== VoiceConnectionStatus.Destroyed) this.connection.destroy(false);
  }

  private connect(): void {
    this.connects++;
    this.lastClose = undefined;
    this.udpAnswered = false;
    const v = this.voice;
    this.adapter.onVoiceStateUpdate({
      guild_id: v.guildId,
      channel_id: v.channelId,
      user_id: v.userId,
      session_id: v.sessionId,
      deaf: false,
      mute: false,
      self_deaf: true,
      self_mute: false,
      self_video: false,
      suppress: false,
      request_to_speak_timestamp: null,
    } as Parameters<DiscordGatewayAdapterLibraryMethods['onVoiceStateUpdate']>[0]);
    // A server update with an endpoint makes the library open a fresh Networking there.
    this.adapter.onVoiceServerUpdate({ guild_id: v.guildId, token: v.token, endpoint: v.endpoint });
  }

  /** Speaking is on (set by us, or by the library as it sent a packet). */
  get isSpeaking(): boolean {
    const n = this.networking()?.state;
    return n !== undefined && 'connectionData' in n && 'speaking' in n.connectionData && n.connectionData.speaking;
  }

  private networking(): Networking | undefined {
    const s = this.connection.state;
    return 'networking' in s ? s.networking : undefined;
  }

  /** The library asks us to send a gateway payload: a leave (ignored) or a rejoin we cannot make. */
  private onPayload(payload: { d?: { channel_id?: string | null } }): boolean {
    if (payload.d?.channel_id == null || this.destroyed) return true;
    // The close that caused it is told to our listener right after this call: report then.
    queueMicrotask(() => {
      const code = this.lastClose;
      this.report({
        status: 'disconnected',
        reason: `voice disconnected: ${describeClose(code)}; the bot must rejoin and send its voice state again`,
        ...(code !== undefined ? { closeCode: code } : {}),
        rejoin: true,
      });
    });
    return true;
  }

  private onConnectionState(from: VoiceConnectionState, to: VoiceConnectionState): void {
    const before = 'networking' in from ? from.networking : undefined;
    const after = 'networking' in to ? to.networking : undefined;
    if (after && after !== before) this.watch(after);
    switch (to.status) {
      case VoiceConnectionStatus.Ready:
        this.report({ status: 'ready' });
        return;
      case VoiceConnectionStatus.Connecting: {
        const resuming = after?.state.code === 5;
        this.report({ status: 'connecting', ...(resuming ? { reason: 'resuming' } : {}) });
        return;
      }
      case VoiceConnectionStatus.Disconnected: {
        const code = to.reason === VoiceConnectionDisconnectReason.WebSocketClose ? to.closeCode : undefined;
        this.report({
          status: 'disconnected',
          reason: `voice disconnected: ${to.reason === VoiceConnectionDisconnectReason.EndpointRemoved ? 'endpoint removed' : describeClose(code)}`,
          ...(code !== undefined ? { closeCode: code } : {}),
        });
        return;
      }
      default:
        return;
    }
  }

  /** Follows a Networking: its close code, its resumes, and what comes in on its UDP socket. */
  private watch(networking: Networking): void {
    networking.on('close', (code: number) => {
      this.lastClose = code;
    });
    let udp: unknown;
    networking.on('stateChange', (from: NetworkingState, to: NetworkingState) => {
      if (to.code === 5 && from.code !== 5) {
        this.resumes++;
        this.report({ status: 'connecting', reason: 'resuming' });
      }
      if ('udp' in to && to.udp !== udp) {
        udp = to.udp;
        this.lastUdpAt = performance.now();
        to.udp.on('message', (message: Buffer) => {
          if (message.length !== KEEP_ALIVE_BYTES) return;
          this.lastUdpAt = performance.now();
          this.udpAnswered = true;
        });
      }
    });
  }

  /** Connects afresh if the server answered keep-alives once and has been silent on UDP too long since. */
  checkUdp(): void {
    if (!this.silent()) return;
    // After a stall of this thread the timer runs before the datagrams that came meanwhile are
    // read (timers come first in the event loop): judge again once they have been.
    setImmediate(() => {
      if (!this.silent() || this.destroyed) return;
      this.report({ status: 'connecting', reason: `no UDP from the voice server for ${this.udpSilenceMs / 1000} s: reconnecting` });
      this.connect();
    });
  }

  private silent(): boolean {
    return this.ready && this.udpAnswered && performance.now() - this.lastUdpAt > this.udpSilenceMs;
  }

  private report(event: VoiceEvent): void {
    if (this.destroyed) return;
    const e = this.event;
    if (e.status === event.status && e.reason === event.reason && e.closeCode === event.closeCode) return;
    this.event = event;
    this.onChange(event);
  }
}

function describeClose(code: number | undefined): string {
  if (code === undefined) return 'voice gateway closed';
  const meaning = CLOSE_CODES[code];
  return meaning ? `${code} (${meaning})` : `voice gateway closed with ${code}`;
}
