/**
 * The listening side of the page: one WebSocket to the gateway for the chosen session (reconnected
 * by itself with back-off), WebCodecs AudioDecoder for the Opus frames, and Web Audio for output:
 *
 *   WebSocket ─▶ parseListenerFrame ─▶ SequenceTracker (gaps, stale) ─▶ AudioDecoder (opus, 48 kHz, 2 ch)
 *     ─▶ jitter-buffer AudioWorklet (target ~100 ms) ─▶ AnalyserNode (meters, test hook) ─▶ GainNode ─▶ speakers
 *
 * Text messages are the session's events; they are passed on to the page as they come.
 * Nothing here drives the session (play, pause, … go through the HTTP API, see api.ts); the
 * player only follows it, holding its buffer while the session is paused so that a resume
 * continues gaplessly.
 */
import { CHANNELS, FRAME_SAMPLES, SAMPLE_RATE } from '../shared/audio.js';
import { parseListenerFrame, type ListenerEvent } from '../shared/listener-protocol.js';
import type { GatewayApi } from './api.js';
import { Backoff } from './backoff.js';
import type { JitterCommand, JitterMode, JitterReport } from './jitter-worklet.js';
import { SequenceTracker } from './sequence.js';

/** Registered by jitter-worklet.ts. */
const JITTER_PROCESSOR = 'chorus-jitter';
/** Decoder backlog (frames) past which frames are dropped rather than queued (the page is starved). */
const MAX_DECODE_QUEUE = 25;
/** A connection that stayed up this long resets the back-off. */
const STABLE_CONNECTION_MS = 5000;
/** Arrival gaps longer than this (a pause, a stall) restart the jitter estimate. */
const ARRIVAL_RESET_MS = 250;

export type ConnectionState = 'closed' | 'connecting' | 'open' | 'waiting';
export type AudioState = 'off' | 'suspended' | 'running' | 'unsupported';

export interface PlayerStats {
  connection: ConnectionState;
  /** When the next reconnect attempt is due (performance.now() ms), while waiting. */
  reconnectAt?: number;
  /** Why the socket last closed. */
  closeReason?: string;
  reconnects: number;
  audio: AudioState;
  framesReceived: number;
  framesDecoded: number;
  /** Frames missing in the sequence, and the places they went missing. */
  lost: number;
  gaps: number;
  /** Duplicate or out-of-date frames refused. */
  stale: number;
  malformed: number;
  decodeErrors: number;
  /** Frames dropped because the decoder fell behind. */
  decoderDrops: number;
  buffer: JitterMode;
  bufferMs: number;
  targetMs: number;
  underruns: number;
  trimmedMs: number;
  /** Audio played out since the page began. */
  playedSeconds: number;
  /** RFC 3550 interarrival jitter of the frames, in ms. */
  jitterMs: number;
  /** Time from the newest frame's arrival to it being heard: jitter buffer + decoder + output. */
  latencyMs: number;
  outputLatencyMs: number;
  /** From the last play request to its first frame, and to its first sound. */
  firstFrameMs?: number;
  firstSoundMs?: number;
  lastSeq?: number;
}

export interface PlayerEventMap {
  stats: CustomEvent<PlayerStats>;
  event: CustomEvent<ListenerEvent>;
}

export class Player extends EventTarget {
  private sessionId: string | undefined;
  private ws: WebSocket | undefined;
  private openedAt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly backoff = new Backoff();
  private wantSocket = false;

  private ctx: AudioContext | undefined;
  private node: AudioWorkletNode | undefined;
  private gain: GainNode | undefined;
  /** The analyser right after the jitter buffer: what is being played, before the volume. */
  analyser: AnalyserNode | undefined;
  private audioStarting: Promise<void> | undefined;
  private decoder: AudioDecoder | undefined;

  private readonly seq = new SequenceTracker();
  private held = false;
  private targetMs = 100;
  private volume = 1;

  // media timestamp unwrapping and the jitter estimate
  private lastTs: number | undefined;
  private mediaSamples = 0;
  private lastArrival = 0;
  private lastTransit: number | undefined;
  private jitter = 0;

  // play → first frame / first sound
  private playRequestedAt: number | undefined;
  private waitingFirstSound = false;
  private firstSoundFrom = 0;

  readonly stats: PlayerStats = {
    connection: 'closed',
    audio: typeof AudioDecoder === 'undefined' ? 'unsupported' : 'off',
    ...freshCounters(),
    buffer: 'buffering',
    bufferMs: 0,
    targetMs: 100,
    underruns: 0,
    trimmedMs: 0,
    playedSeconds: 0,
    latencyMs: 0,
    outputLatencyMs: 0,
  };

  constructor(private readonly api: GatewayApi) {
    super();
    window.addEventListener('online', () => this.reconnectNow());
  }

  override addEventListener<K extends keyof PlayerEventMap>(
    type: K,
    listener: (ev: PlayerEventMap[K]) => void,
    options?: AddEventListenerOptions,
  ): void;
  override addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: AddEventListenerOptions): void;
  override addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: AddEventListenerOptions): void {
    super.addEventListener(type, listener, options);
  }

  get session(): string | undefined {
    return this.sessionId;
  }

  /** Is the player connected, or trying to be, to its session? */
  get listening(): boolean {
    return this.wantSocket;
  }

  /**
   * Follows another session: the old socket closes, the buffer empties, counters start over. It
   * connects only once told to listen(): a WebSocket to an id the gateway does not know creates
   * that session, so a page that only looks must not open one.
   */
  setSession(id: string): void {
    if (id === this.sessionId) return;
    this.sessionId = id;
    this.wantSocket = false;
    this.disconnect();
    this.flush();
    this.resetCounters();
  }

  /** Connects to the session (and keeps reconnecting), or closes and stays closed. */
  listen(on: boolean): void {
    if (on === this.wantSocket) return;
    this.wantSocket = on;
    if (on) this.reconnectNow();
    else this.disconnect();
  }

  /** Starts Web Audio (call it from a click: browsers start audio only after a user gesture). */
  enableAudio(): Promise<void> {
    if (this.stats.audio === 'unsupported') return Promise.resolve();
    this.audioStarting ??= this.startAudio().catch((err: unknown) => {
      this.audioStarting = undefined;
      throw err;
    });
    return this.audioStarting.then(async () => {
      if (this.ctx && this.ctx.state !== 'running') await this.ctx.resume();
      this.updateAudioState();
    });
  }

  private async startAudio(): Promise<void> {
    const ctx = new AudioContext({ sampleRate: SAMPLE_RATE, latencyHint: 'interactive' });
    ctx.onstatechange = () => this.updateAudioState();
    this.ctx = ctx;
    await ctx.audioWorklet.addModule(new URL('./jitter-worklet.js', import.meta.url));
    const node = new AudioWorkletNode(ctx, JITTER_PROCESSOR, {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [CHANNELS],
    });
    node.port.onmessage = (e: MessageEvent<JitterReport>) => this.onJitterReport(e.data);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    analyser.smoothingTimeConstant = 0;
    const gain = ctx.createGain();
    gain.gain.value = this.volume;
    node.connect(analyser).connect(gain).connect(ctx.destination);
    this.node = node;
    this.analyser = analyser;
    this.gain = gain;
    this.post({ type: 'target', ms: this.targetMs });
    this.post({ type: 'hold', on: this.held });
    this.updateAudioState();
  }

  private updateAudioState(): void {
    if (this.stats.audio === 'unsupported') return;
    this.stats.audio = !this.ctx ? 'off' : this.ctx.state === 'running' ? 'running' : 'suspended';
    this.emitStats();
  }

  setTarget(ms: number): void {
    this.targetMs = ms;
    this.stats.targetMs = ms;
    this.post({ type: 'target', ms });
  }

  setVolume(v: number): void {
    this.volume = v;
    if (this.gain && this.ctx) this.gain.gain.setTargetAtTime(v, this.ctx.currentTime, 0.02);
  }

  /** Pauses output at once, keeping the buffered audio for the resume. */
  hold(on: boolean): void {
    if (this.held === on) return;
    this.held = on;
    this.post({ type: 'hold', on });
    // The arrival pattern breaks across a pause: restart the jitter estimate.
    this.lastTransit = undefined;
  }

  /** Drops the buffered audio (stop, a new track, a seek) and starts the sequence afresh. */
  flush(): void {
    this.post({ type: 'flush' });
    this.seq.resync();
    this.lastTs = undefined;
    this.lastTransit = undefined;
    if (this.decoder && this.decoder.state === 'configured') this.decoder.reset();
    this.decoder = undefined;
  }

  /** Marks the start of a play request, to measure the time to its first frame and first sound. */
  markPlayRequested(): void {
    this.playRequestedAt = performance.now();
    this.stats.firstFrameMs = undefined;
    this.stats.firstSoundMs = undefined;
  }

  private post(cmd: JitterCommand, transfer: Transferable[] = []): void {
    this.node?.port.postMessage(cmd, transfer);
  }

  // ── the socket ───────────────────────────────────────────────────────────────────────────

  private connect(): void {
    const id = this.sessionId;
    if (id === undefined) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const ws = new WebSocket(this.api.socketUrl(id));
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.stats.connection = 'connecting';
    this.stats.reconnectAt = undefined;
    this.emitStats();
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.openedAt = performance.now();
      this.stats.connection = 'open';
      this.stats.closeReason = undefined;
      // The sequence carries on across a reconnect: frames sent while this page was away
      // show as a gap. The arrival pattern does not: restart the jitter estimate.
      this.lastTransit = undefined;
      this.emitStats();
    };
    ws.onmessage = (e: MessageEvent<ArrayBuffer | string>) => {
      if (this.ws !== ws) return;
      if (typeof e.data === 'string') this.onText(e.data);
      else this.onFrame(new Uint8Array(e.data));
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      if (this.openedAt > 0 && performance.now() - this.openedAt > STABLE_CONNECTION_MS) this.backoff.reset();
      this.openedAt = 0;
      const delay = this.backoff.next();
      this.stats.connection = 'waiting';
      this.stats.closeReason = e.reason || (e.code === 1006 ? 'connection lost' : `closed (${e.code})`);
      this.stats.reconnectAt = performance.now() + delay;
      this.stats.reconnects++;
      this.reconnectTimer = setTimeout(() => this.connect(), delay);
      this.emitStats();
    };
  }

  /** Tries again now (after a play, or when the network comes back), if the socket is down. */
  reconnectNow(): void {
    if (this.sessionId === undefined || this.ws || !this.wantSocket) return;
    this.backoff.reset();
    this.connect();
  }

  /** Closes the socket as a network failure would (tests): the player reconnects by itself. */
  dropConnection(): void {
    this.ws?.close(4000, 'dropped on purpose');
  }

  private disconnect(): void {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const ws = this.ws;
    this.ws = undefined;
    if (ws) ws.close(1000, 'session changed');
    this.stats.connection = 'closed';
    this.stats.reconnectAt = undefined;
    this.backoff.reset();
    this.emitStats();
  }

  private onText(text: string): void {
    let event: ListenerEvent;
    try {
      event = JSON.parse(text) as ListenerEvent;
    } catch {
      return;
    }
    if (typeof event !== 'object' || event === null || typeof event.type !== 'string') return;
    if (event.type === 'state') {
      if (event.state === 'paused' || event.state === 'autopaused') this.hold(true);
      else if (event.state === 'playing' || event.state === 'buffering') this.hold(false);
      else if (event.state === 'stopped' || event.state === 'starting') this.flush();
    }
    this.dispatchEvent(new CustomEvent('event', { detail: event }));
  }

  // ── frames ───────────────────────────────────────────────────────────────────────────────

  private onFrame(message: Uint8Array): void {
    const frame = parseListenerFrame(message);
    if (!frame) {
      this.stats.malformed++;
      return;
    }
    const verdict = this.seq.accept(frame.seq);
    this.stats.framesReceived++;
    this.stats.lost = this.seq.lost;
    this.stats.gaps = this.seq.gaps;
    this.stats.stale = this.seq.stale;
    if (verdict.kind === 'stale') return;
    this.stats.lastSeq = frame.seq;

    const now = performance.now();
    if (verdict.kind !== 'next' && verdict.kind !== 'gap') this.lastTs = undefined;
    this.mediaSamples = this.lastTs === undefined ? 0 : this.mediaSamples + ((frame.timestamp - this.lastTs) | 0);
    this.lastTs = frame.timestamp;
    this.measureJitter(now, verdict.kind === 'next');

    if (this.playRequestedAt !== undefined) {
      this.stats.firstFrameMs = now - this.playRequestedAt;
      this.firstSoundFrom = this.playRequestedAt;
      this.waitingFirstSound = true;
      this.playRequestedAt = undefined;
    }

    // Nobody can hear it yet (no gesture): do not decode or queue.
    if (!this.node || this.ctx?.state !== 'running') return;
    const decoder = this.ensureDecoder();
    if (!decoder) return;
    if (decoder.decodeQueueSize > MAX_DECODE_QUEUE) {
      this.stats.decoderDrops++;
      return;
    }
    try {
      decoder.decode(
        new EncodedAudioChunk({
          type: 'key',
          timestamp: Math.round((this.mediaSamples * 1_000_000) / SAMPLE_RATE),
          duration: (FRAME_SAMPLES * 1_000_000) / SAMPLE_RATE,
          data: frame.payload,
        }),
      );
    } catch {
      this.stats.decodeErrors++;
      this.decoder = undefined;
    }
  }

  /** RFC 3550 §6.4.1: J += (|D| − J) / 16, D the change in transit time between frames. */
  private measureJitter(now: number, consecutive: boolean): void {
    const transit = now - (this.mediaSamples * 1000) / SAMPLE_RATE;
    if (consecutive && this.lastTransit !== undefined && now - this.lastArrival < ARRIVAL_RESET_MS) {
      const d = Math.abs(transit - this.lastTransit);
      this.jitter += (d - this.jitter) / 16;
      this.stats.jitterMs = this.jitter;
    }
    this.lastTransit = transit;
    this.lastArrival = now;
  }

  private ensureDecoder(): AudioDecoder | undefined {
    if (this.decoder && this.decoder.state !== 'closed') return this.decoder;
    try {
      const decoder: AudioDecoder = new AudioDecoder({
        output: (data) => this.onDecoded(decoder, data),
        error: () => {
          this.stats.decodeErrors++;
          if (this.decoder === decoder) this.decoder = undefined;
        },
      });
      decoder.configure({ codec: 'opus', sampleRate: SAMPLE_RATE, numberOfChannels: CHANNELS });
      this.decoder = decoder;
      return decoder;
    } catch {
      this.stats.decodeErrors++;
      return undefined;
    }
  }

  private onDecoded(decoder: AudioDecoder, data: AudioData): void {
    try {
      if (decoder !== this.decoder) return; // output of a decoder flushed away
      const n = data.numberOfFrames;
      const channels: Float32Array[] = [];
      for (let c = 0; c < Math.min(CHANNELS, data.numberOfChannels); c++) {
        const plane = new Float32Array(n);
        data.copyTo(plane, { planeIndex: c, format: 'f32-planar' });
        channels.push(plane);
      }
      if (channels.length === 1) channels.push(channels[0]!.slice());
      this.stats.framesDecoded++;
      this.post({ type: 'frame', channels }, channels.map((p) => p.buffer as ArrayBuffer));
    } finally {
      data.close();
    }
  }

  private onJitterReport(r: JitterReport): void {
    const ms = (samples: number) => (samples * 1000) / SAMPLE_RATE;
    const s = this.stats;
    s.buffer = r.mode;
    s.bufferMs = ms(r.queuedSamples);
    s.targetMs = ms(r.targetSamples);
    s.underruns = r.underruns;
    s.trimmedMs = ms(r.trimmedSamples);
    s.playedSeconds = r.playedSamples / SAMPLE_RATE;
    const ctx = this.ctx;
    s.outputLatencyMs = ctx ? ((ctx.baseLatency || 0) + (ctx.outputLatency || 0)) * 1000 : 0;
    s.latencyMs = s.bufferMs + s.outputLatencyMs;
    if (this.waitingFirstSound && r.mode === 'playing') {
      // The buffer started playing: the first sound leaves the speakers after the output latency.
      s.firstSoundMs = performance.now() - this.firstSoundFrom + s.outputLatencyMs;
      this.waitingFirstSound = false;
    }
    this.emitStats();
  }

  private resetCounters(): void {
    const s = this.stats;
    Object.assign(s, {
      ...freshCounters(),
      firstFrameMs: undefined,
      firstSoundMs: undefined,
      lastSeq: undefined,
    });
    this.seq.lost = this.seq.gaps = this.seq.stale = this.seq.received = 0;
    this.jitter = 0;
  }

  private emitStats(): void {
    this.dispatchEvent(new CustomEvent('stats', { detail: this.stats }));
  }
}

/** The counters a new session's stats start from. */
function freshCounters() {
  return { reconnects: 0, framesReceived: 0, framesDecoded: 0, lost: 0, gaps: 0, stale: 0, malformed: 0, decodeErrors: 0, decoderDrops: 0, jitterMs: 0 };
}
