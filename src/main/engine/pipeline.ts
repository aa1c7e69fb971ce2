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
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { FRAMES_PER_SECOND, PCM_FRAME_BYTES, type AudioFormat } from '../../shared/audio.js';
import { filterChain, playbackRate, type AudioFilters } from '../../shared/audio-filters.js';
import { ffmpegEnv, reportedDuration } from '../../shared/ffmpeg.js';
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
}


export interface PipelineEvents {
  /** `count` wire frames back to back in `frames`. */
  frames(frames: Buffer, count: number): void;
  /** Once, after the last frame: `error` is undefined when ffmpeg ended well. */
  end(error: string | undefined): void;
  /** Checked after each read: false holds ffmpeg until release(). */
  canRead(): boolean;
}

const STDERR_TAIL_BYTES = 2048;

export class Pipeline implements FrameSource {
  private readonly child: ChildProcessByStdio<null, Readable, Readable>;
  private readonly handle: number | undefined;
  /** Bytes of a frame not yet complete, carried to the next read. */
  private readonly partial = Buffer.alloc(PCM_FRAME_BYTES);
  private partialBytes = 0;
  private stderrTail = '';
  private exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private ended = false;
  /** Frames handed to the encoder thread and not yet back. */
  inFlight = 0;
  /** Seconds of the source as ffmpeg reports it (`Duration:`), once known. */
  sourceDuration: number | undefined;
  /** Whole frames read from ffmpeg so far. */
  private framesRead = 0;

  constructor(
    private readonly opts: PipelineOptions,
    private readonly events: PipelineEvents,
  ) {
    const args = ['-hide_banner', '-nostdin', '-nostats', '-loglevel', 'info'];
    if (opts.startAt) args.push('-ss', String(opts.startAt));
    args.push(...opts.input.args);
    const chain = filterChain({ gain: opts.gain, filters: opts.filters });
    if (chain !== undefined) args.push('-af', chain);
    args.push('-vn', '-sn', '-dn', '-ac', '2', '-ar', '48000');
    // A tone or a file decodes faster than real time: ffmpeg may write its 32 KiB output buffer
    // whole rather than each decoded packet (4 KiB), a few write calls instead of many. Not a
    // remote source: a live one comes at real time, and 170 ms bursts would outlast the
    // gateway's prebuffer.
    if (opts.input.kind !== 'remote') args.push('-flush_packets', '0');
    args.push('-f', 's16le', 'pipe:1');

    if (opts.format !== 'pcm') {
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
    this.child.stdout.on('data', (chunk: Buffer) => this.onPcm(chunk));

    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (text: string) => this.onStderr(text));
    this.child.on('error', (err) => this.finish(`cannot run ffmpeg: ${err.message}`));
    this.child.on('close', (code, signal) => {
      this.exit = { code, signal };
      this.maybeEnd();
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Stop reading ffmpeg's output; ffmpeg blocks when its pipe is full. */
  hold(): void {
    this.child.stdout.pause();
  }

  release(): void {
    if (!this.ended) this.child.stdout.resume();
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
  }

  private maybeEnd(): void {
    if (this.ended || !this.exit || this.inFlight > 0) return;
    const { code, signal } = this.exit;
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
    // ffmpeg's cause is usually a line or two above its final complaint: give the last three.
    const last = this.stderrTail
      .split('\n')
      .map((line) => line.replace(/^\[[^\]]* @ 0x[0-9a-f]+\] /, '').trim())
      .filter((line) => line !== '')
      .slice(-3)
      .join(' | ');
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    this.finish(`ffmpeg ${how}${last ? `: ${last}` : ''}`);
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
    if (this.handle !== undefined) this.opts.pool.close(this.handle);
    if (this.exit === undefined) this.child.kill('SIGKILL');
    this.child.stdout.destroy();
    this.child.stderr.destroy();
  }
}

/** What the session manager calls to start a play's frames: the caller attaches the result. */
export type StartSource = (request: PlayRequest, input: FfmpegInput, paddedId: string, events: PipelineEvents) => FrameSource;

/** The engine's sources: one ffmpeg → Opus pipeline per play. */
export function pipelineSource(config: Config, ffmpegPath: string, pool: EncoderPool, proxyUrl: string): StartSource {
  return (request, input, paddedId, events) =>
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
      },
      events,
    );
}
