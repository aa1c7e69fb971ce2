/**
 * One play's pipeline: ffmpeg decodes the source to s16le 48 kHz stereo on its stdout, which is
 * cut into 20 ms frames (the last partial frame padded with silence) and either Opus-encoded on
 * the session's encoder thread (`opus`, `web`) or framed as raw PCM (`pcm`). Out come finished
 * wire frames, in order.
 *
 * Flow control is the caller's: hold() stops reading ffmpeg's stdout, so ffmpeg blocks on its
 * pipe once the pipe is full, and release() reads on. Nothing is dropped.
 *
 * A remote source that ends early is an error, never a short track: ffmpeg exits 0 on a body
 * cut off before its length (it takes the cut for the end), so a remote pipeline that made
 * frames and stopped more than a frame short of the length ffmpeg reported ends with
 * `ended early`, and its last partial frame is dropped rather than padded: the caller can open
 * the source again at exactly the frame reached (manager.ts).
 *
 * Opus passthrough: a play of format `opus` with nothing to change in its sound (no gain, no
 * filters) whose source looks like Opus (source.ts's hint) runs ffmpeg with `-c:a copy` into
 * Ogg instead, and its Opus packets, cut out by the shared OggPacketReader, are the wire frames:
 * no decoding, no encoder thread. What ffmpeg gives is checked as it comes: an OpusHead of one
 * or two channels (mapping family 0) first, then packets of exactly 20 ms each (the TOC byte:
 * opus-packet.ts) no larger than an Opus packet may be. Anything else — not Opus at all, 60 ms
 * or 40 ms packets, multichannel — ends the run with `reencode`, after the frames that passed,
 * and the manager opens the source again at the frame reached, decoded and encoded.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { FRAME_SAMPLES, FRAMES_PER_SECOND, MAX_OPUS_PACKET_BYTES, PCM_FRAME_BYTES, type AudioFormat } from '../../shared/audio.js';
import { filterChain, playbackRate, type AudioFilters } from '../../shared/audio-filters.js';
import { describesInput, ffmpegEnv, reportedDuration } from '../../shared/ffmpeg.js';
import { OggPacketReader, parseOpusHead } from '../../shared/ogg.js';
import { opusPacketSamples } from '../../shared/opus-packet.js';
import { FRAME_HEADER_BYTES, writeFrameHeader } from '../../shared/protocol.js';
import type { Config } from '../../shared/config.js';
import type { EncoderPool } from './encoder-pool.js';
import type { FrameSource, PlayRequest } from './session.js';
import type { FfmpegInput } from './source.js';

export interface PipelineOptions {
  ffmpegPath: string;
  input: FfmpegInput;
  /** Seconds to skip at the start (`-ss` before the input). */
  startAt?: number;
  /** Linear gain on the decoded PCM (ffmpeg's volume filter); 1 or absent: none. */
  gain?: number;
  /** Effects on the decoded PCM, before the gain (audio-filters.ts). */
  filters?: AudioFilters;
  format: AudioFormat;
  paddedId: string;
  bitrate: number;
  complexity: number;
  pool: EncoderPool;
  /** The egress proxy (egress-proxy.ts): ffmpeg's `http_proxy`, its only way out. */
  proxyUrl: string;
  /** Send the source's own Opus packets (`-c:a copy`) rather than decode and encode. */
  passthrough: boolean;
  counters: PassthroughCounters;
}

/** The engine's passthrough figures, for /metrics. */
export class PassthroughCounters {
  /** ffmpeg runs started to pass a source's Opus through. */
  runs = 0;
  /** Of those, runs that found the source could not pass through and handed it to encoding. */
  fallbacks = 0;
  /** Frames that were the source's own Opus packets. */
  frames = 0;
}


export interface PipelineEvents {
  /** `count` wire frames back to back in `frames`. */
  frames(frames: Buffer, count: number): void;
  /** Once, after the last frame: `error` is undefined when ffmpeg ended well. */
  end(error: string | undefined): void;
  /**
   * Instead of `end`, once: a passthrough run found the source cannot pass through (`reason`)
   * after the frames it gave; the source must be opened again at the frame reached, encoded.
   */
  reencode(reason: string): void;
  /** Checked after each read: false holds ffmpeg until release(). */
  canRead(): boolean;
}

const STDERR_TAIL_BYTES = 2048;
/**
 * Ogg page length asked of ffmpeg in passthrough, in µs. A remote source may be live: a page per
 * 20 ms packet, as it comes. A file is read faster than real time: 200 ms pages, ten packets per
 * read rather than one (ffmpeg flushes its output per page).
 */
const REMOTE_PAGE_US = 20_000;
const FILE_PAGE_US = 200_000;
/**
 * A passthrough seek asks ffmpeg for half a packet before the position: the packet that starts
 * nearest the position comes first. Opus packets start a little before their 20 ms slot (the
 * encoder's pre-skip, 6.5 ms from libopus), so a seek to the exact position would drop the very
 * packet a source reopened at the frame reached must go on with.
 */
const PACKET_SEEK_LEAD_S = 0.01;

/**
 * Longest the output waits for ffmpeg to describe its input, which it does before any output:
 * past this it goes on without (a log that never says must not hold a play up).
 */
const BEFORE_INPUT_MAX_MS = 1000;

export class Pipeline implements FrameSource {
  private readonly child: ChildProcessByStdio<null, Readable, Readable>;
  private readonly handle: number | undefined;
  /** Bytes of a frame not yet complete, carried to the next read. */
  private readonly partial = Buffer.alloc(PCM_FRAME_BYTES);
  private partialBytes = 0;
  private stderrTail = '';
  /**
   * Output read before ffmpeg's log has described the input (its `Duration:` line): kept, with
   * stdout paused, until it has, stderr ends, or BEFORE_INPUT_MAX_MS pass. The two pipes are read
   * in no set order, and passthrough frames leave with the read: a play's first frames (and its
   * `ready`) must know the source's length. Undefined once described.
   */
  private beforeInput: Buffer[] | undefined = [];
  private beforeInputTimer: NodeJS.Timeout | undefined;
  /** The caller has stopped the reading (hold()): describing the input does not resume it. */
  private held = false;
  private exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private ended = false;
  /** Frames handed to the encoder thread and not yet back. */
  inFlight = 0;
  /** Seconds of the source as ffmpeg reports it (`Duration:`), once known. */
  sourceDuration: number | undefined;
  /** Whole frames read from ffmpeg so far. */
  private framesRead = 0;
  /** Passthrough: the Ogg reader, the stream's OpusHead once read, and the frames of one read. */
  private readonly ogg: OggPacketReader | undefined;
  private headRead = false;
  private refusal: string | undefined;
  private batch = Buffer.allocUnsafe(0);
  private batchBytes = 0;
  private batchCount = 0;

  constructor(
    private readonly opts: PipelineOptions,
    private readonly events: PipelineEvents,
  ) {
    const args = ['-hide_banner', '-nostdin', '-nostats', '-loglevel', 'info'];
    const seekTo = opts.passthrough ? (opts.startAt ?? 0) - PACKET_SEEK_LEAD_S : opts.startAt ?? 0;
    if (seekTo > 0) args.push('-ss', String(seekTo));
    args.push(...opts.input.args);
    if (opts.passthrough) {
      // A seek lands on a container page (an Ogg page is up to a second) and a stream copy keeps
      // the packets before the position, timed below 0: an output start of 0 drops them.
      if (seekTo > 0) args.push('-ss', '0');
      args.push('-vn', '-sn', '-dn', '-c:a', 'copy', '-f', 'ogg', '-page_duration', String(opts.input.kind === 'remote' ? REMOTE_PAGE_US : FILE_PAGE_US), 'pipe:1');
      this.ogg = new OggPacketReader(
        (bytes, start, end) => this.onPacket(bytes, start, end),
        undefined,
        (bytes, start, end) => this.onOpusHeader(bytes, start, end),
      );
      opts.counters.runs++;
    } else {
      const chain = filterChain({ gain: opts.gain, filters: opts.filters });
      if (chain !== undefined) args.push('-af', chain);
      args.push('-vn', '-sn', '-dn', '-ac', '2', '-ar', '48000');
      // A tone or a file decodes faster than real time: ffmpeg may write its 32 KiB output buffer
      // whole rather than each decoded packet (4 KiB), a few write calls instead of many. Not a
      // remote source: a live one comes at real time, and 170 ms bursts would outlast the
      // gateway's prebuffer.
      if (opts.input.kind !== 'remote') args.push('-flush_packets', '0');
      args.push('-f', 's16le', 'pipe:1');
    }

    if (opts.format !== 'pcm' && !opts.passthrough) {
      this.handle = opts.pool.open(opts.paddedId, opts.bitrate, opts.complexity, {
        encoded: (frames, count) => {
          this.inFlight -= count;
          if (!this.ended) this.events.frames(frames, count);
          this.maybeEnd();
        },
        failed: (message) => this.finish(message),
      });
    }

    this.child = spawn(opts.ffmpegPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: ffmpegEnv(opts.proxyUrl) });
    this.child.stdout.on('data', (chunk: Buffer) => {
      if (!this.beforeInput) return this.onOutput(chunk);
      this.beforeInput.push(chunk);
      this.child.stdout.pause();
      this.beforeInputTimer ??= setTimeout(() => this.inputDescribed(), BEFORE_INPUT_MAX_MS);
    });

    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (text: string) => this.onStderr(text));
    this.child.stderr.on('end', () => this.inputDescribed());
    this.child.on('error', (err) => this.finish(`cannot run ffmpeg: ${err.message}`));
    this.child.on('close', (code, signal) => {
      this.exit = { code, signal };
      this.maybeEnd();
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** The frames are the source's own Opus packets. */
  get passthrough(): boolean {
    return this.opts.passthrough;
  }

  /** Stop reading ffmpeg's output; ffmpeg blocks when its pipe is full. */
  hold(): void {
    this.held = true;
    this.child.stdout.pause();
  }

  release(): void {
    this.held = false;
    if (!this.ended && !this.beforeInput) this.child.stdout.resume();
  }

  /** Whole frames ffmpeg has given so far. */
  get framesOut(): number {
    return this.framesRead;
  }

  /** Ends the play now: kills ffmpeg, frees the encoder, reports nothing more. */
  kill(): void {
    if (this.ended) return;
    this.ended = true;
    this.dispose();
  }

  private onPcm(chunk: Buffer): void {
    const total = this.partialBytes + chunk.length;
    const count = Math.floor(total / PCM_FRAME_BYTES);
    if (count === 0) {
      chunk.copy(this.partial, this.partialBytes);
      this.partialBytes = total;
      return;
    }
    const whole = new Uint8Array(count * PCM_FRAME_BYTES);
    whole.set(this.partial.subarray(0, this.partialBytes), 0);
    const used = whole.length - this.partialBytes;
    whole.set(chunk.subarray(0, used), this.partialBytes);
    this.partialBytes = chunk.copy(this.partial, 0, used);
    this.framesRead += count;
    this.emitPcm(whole, count);
    if (!this.events.canRead()) this.hold();
  }

  private onOgg(chunk: Buffer): void {
    this.ogg!.push(chunk);
    if (this.batchCount > 0 && !this.ended) {
      const frames = Buffer.from(this.batch.subarray(0, this.batchBytes));
      const count = this.batchCount;
      this.batchBytes = 0;
      this.batchCount = 0;
      this.framesRead += count;
      this.opts.counters.frames += count;
      this.events.frames(frames, count);
    }
    if (this.refusal !== undefined) return this.handOver(this.refusal);
    if (!this.ended && !this.events.canRead()) this.hold();
  }

  /** The first header must be an OpusHead that a plain Opus decoder takes: one or two channels. */
  private onOpusHeader(bytes: Uint8Array, start: number, end: number): void {
    if (this.headRead || this.refusal !== undefined) return;
    const head = parseOpusHead(bytes, start, end);
    if (!head) this.refusal = 'the stream does not start with an OpusHead';
    else if (head.channels > 2 || head.mappingFamily !== 0) this.refusal = `a ${head.channels}-channel Opus stream (mapping family ${head.mappingFamily})`;
    else this.headRead = true;
  }

  /** One packet of the source: a wire frame, or the end of passthrough if it is not one 20 ms packet. */
  private onPacket(bytes: Uint8Array, start: number, end: number): void {
    if (this.refusal !== undefined) return;
    if (!this.headRead) {
      this.refusal = 'the source is not Opus';
      return;
    }
    const samples = opusPacketSamples(bytes, start, end);
    if (samples !== FRAME_SAMPLES) {
      this.refusal = `a packet of ${samples === undefined ? 'unknown length' : `${samples / 48} ms`}, not 20 ms`;
      return;
    }
    const length = end - start;
    if (length > MAX_OPUS_PACKET_BYTES) {
      this.refusal = `a packet of ${length} bytes, more than an Opus packet of 20 ms may be`;
      return;
    }
    const need = this.batchBytes + FRAME_HEADER_BYTES + length;
    if (need > this.batch.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, 2 * this.batch.length, 4096));
      this.batch.copy(grown, 0, 0, this.batchBytes);
      this.batch = grown;
    }
    writeFrameHeader(this.batch, this.batchBytes, this.opts.paddedId, length);
    this.batch.set(bytes.subarray(start, end), this.batchBytes + FRAME_HEADER_BYTES);
    this.batchBytes = need;
    this.batchCount++;
  }

  /** Passthrough cannot go on: the caller opens the source again, encoded, at the frame reached. */
  private handOver(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.dispose();
    this.opts.counters.fallbacks++;
    this.events.reencode(reason);
  }

  /** The last partial frame, padded with silence. */
  private flushPartial(): void {
    if (this.partialBytes === 0 || this.ended) return;
    this.framesRead++;
    const last = new Uint8Array(PCM_FRAME_BYTES);
    last.set(this.partial.subarray(0, this.partialBytes));
    this.partialBytes = 0;
    this.emitPcm(last, 1);
  }

  private emitPcm(pcm: Uint8Array, count: number): void {
    if (this.handle !== undefined) {
      this.inFlight += count;
      this.opts.pool.encode(this.handle, pcm.buffer as ArrayBuffer);
      return;
    }
    const frameBytes = FRAME_HEADER_BYTES + PCM_FRAME_BYTES;
    const out = Buffer.allocUnsafe(count * frameBytes);
    for (let i = 0; i < count; i++) {
      writeFrameHeader(out, i * frameBytes, this.opts.paddedId, PCM_FRAME_BYTES);
      out.set(pcm.subarray(i * PCM_FRAME_BYTES, (i + 1) * PCM_FRAME_BYTES), i * frameBytes + FRAME_HEADER_BYTES);
    }
    this.events.frames(out, count);
  }

  private onStderr(text: string): void {
    this.stderrTail = (this.stderrTail + text).slice(-STDERR_TAIL_BYTES);
    this.sourceDuration ??= reportedDuration(this.stderrTail);
    if (this.beforeInput && describesInput(this.stderrTail)) this.inputDescribed();
  }

  /** The output kept until now goes on, in order, and stdout is read again unless held. */
  private inputDescribed(): void {
    const early = this.beforeInput;
    if (!early) return;
    this.beforeInput = undefined;
    clearTimeout(this.beforeInputTimer);
    for (const chunk of early) if (!this.ended) this.onOutput(chunk);
    if (!this.held && !this.ended) this.child.stdout.resume();
  }

  private onOutput(chunk: Buffer): void {
    if (this.ogg) this.onOgg(chunk);
    else this.onPcm(chunk);
  }

  private maybeEnd(): void {
    if (this.ended || !this.exit || this.inFlight > 0) return;
    const { code, signal } = this.exit;
    // A passthrough run that gave no Opus stream at all (ffmpeg's Ogg muxer refuses an mp3, a
    // source with no OpusHead): the source is opened again, decoded, which reports any real fault.
    if (this.ogg && !this.headRead) return this.handOver(code === 0 ? 'ffmpeg gave no Opus stream' : `ffmpeg could not copy the source to Ogg: ${this.lastWords()}`);
    if (code === 0) {
      const early = this.endedEarly();
      if (early !== undefined) return this.finish(early);
      if (this.partialBytes > 0) {
        // Once encoded, the padded last frame brings this method back with inFlight at 0.
        this.flushPartial();
        if (this.inFlight > 0) return;
      }
      return this.finish(undefined);
    }
    const last = this.lastWords();
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    this.finish(`ffmpeg ${how}${last ? `: ${last}` : ''}`);
  }

  /** ffmpeg's cause is usually a line or two above its final complaint: the last three lines. */
  private lastWords(): string {
    return this.stderrTail
      .split('\n')
      .map((line) => line.replace(/^\[[^\]]* @ 0x[0-9a-f]+\] /, '').trim())
      .filter((line) => line !== '')
      .slice(-3)
      .join(' | ');
  }

  /** For a remote source that made frames and stopped short of its reported length: why. */
  private endedEarly(): string | undefined {
    const duration = this.sourceDuration;
    if (this.opts.input.kind !== 'remote' || duration === undefined || this.framesRead === 0) return undefined;
    const from = this.opts.startAt ?? 0;
    const reached = from + (this.framesRead / FRAMES_PER_SECOND) * playbackRate(this.opts.filters);
    // Lengths from headers are rounded: a frame's worth short is still the end.
    if (reached + 2 / FRAMES_PER_SECOND >= duration) return undefined;
    return `the source ended early, at ${reached.toFixed(2)} s of ${duration.toFixed(2)} s`;
  }

  private finish(error: string | undefined): void {
    if (this.ended) return;
    this.ended = true;
    this.dispose();
    this.events.end(error);
  }

  private dispose(): void {
    clearTimeout(this.beforeInputTimer);
    if (this.handle !== undefined) this.opts.pool.close(this.handle);
    if (this.exit === undefined) this.child.kill('SIGKILL');
    this.child.stdout.destroy();
    this.child.stderr.destroy();
  }
}

/**
 * What the session manager calls to start a play's frames: the caller attaches the result.
 * `mayPassThrough` is false once a run of this play found its source cannot pass through.
 */
export type StartSource = (request: PlayRequest, input: FfmpegInput, paddedId: string, events: PipelineEvents, mayPassThrough: boolean) => FrameSource;

/**
 * Passthrough applies to a play of format `opus` (not `web`: the browser's player is given
 * 256 kb/s stereo, and not `pcm`) whose sound is not changed (no gain, no filter), whose source
 * looks like Opus, when CHORUS_OPUS_PASSTHROUGH is on.
 */
export function passesThrough(config: Config, request: PlayRequest, input: FfmpegInput): boolean {
  return config.CHORUS_OPUS_PASSTHROUGH && request.format === 'opus' && input.opus === true && filterChain({ gain: request.gain, filters: request.filters }) === undefined;
}

/** The engine's sources: one ffmpeg → Opus pipeline per play. */
export function pipelineSource(config: Config, ffmpegPath: string, pool: EncoderPool, proxyUrl: string, counters: PassthroughCounters): StartSource {
  return (request, input, paddedId, events, mayPassThrough) =>
    new Pipeline(
      {
        ffmpegPath,
        input,
        startAt: request.startAt,
        gain: request.gain,
        filters: request.filters,
        format: request.format,
        paddedId,
        bitrate: config.CHORUS_OPUS_BITRATE ?? (request.format === 'web' ? 256_000 : 128_000),
        complexity: config.CHORUS_OPUS_COMPLEXITY,
        pool,
        proxyUrl,
        passthrough: mayPassThrough && passesThrough(config, request, input),
        counters,
      },
      events,
    );
}
