/**
 * The jitter buffer, as an AudioWorklet processor: it runs on the audio rendering thread, so its
 * output cadence is the sound card's, whatever the main thread is doing.
 *
 * The main thread posts decoded 20 ms frames (planar Float32, 48 kHz stereo). The processor
 * queues them and:
 *   - buffering: outputs silence until `target` ms are queued, then plays (with a short fade-in);
 *   - playing:   copies 128 samples per render quantum from the queue; if the queue runs dry it
 *                counts an underrun and goes back to buffering (the tail is faded out);
 *   - holding:   (the session is paused) fades out and keeps the queue untouched, so a resume
 *                plays on from exactly where it stopped, with nothing lost and nothing re-asked;
 *   - trimming:  when more than target + slack is queued (a burst after a network stall), it
 *                drops the oldest audio back to the target so latency does not creep up.
 * Every ~40 ms it posts its numbers back (queued samples, underruns, trimmed, played).
 *
 * Loaded with audioWorklet.addModule(): a worklet scope has no DOM, so the few globals it has
 * are declared here.
 */

declare const sampleRate: number;
declare class AudioWorkletProcessor {
  readonly port: MessagePort;
}
declare function registerProcessor(name: string, ctor: new () => AudioWorkletProcessor): void;

/** Messages the main thread sends to the processor. */
export type JitterCommand =
  | { type: 'frame'; channels: Float32Array[] }
  | { type: 'target'; ms: number }
  | { type: 'hold'; on: boolean }
  | { type: 'flush' };

export type JitterMode = 'buffering' | 'playing' | 'holding';

/** What the processor reports. */
export interface JitterReport {
  type: 'stats';
  mode: JitterMode;
  queuedSamples: number;
  targetSamples: number;
  underruns: number;
  trimmedSamples: number;
  playedSamples: number;
  /** Frames posted since the start. */
  frames: number;
}

/** The name player.ts creates its AudioWorkletNode with (it may import only types from here). */
const JITTER_PROCESSOR = 'chorus-jitter';

const QUANTUM = 128;
const REPORT_EVERY = 15; // render quanta: 15 × 128 / 48 kHz = 40 ms

class JitterProcessor extends AudioWorkletProcessor {
  private readonly queue: Float32Array[][] = [];
  /** Read position inside queue[0]. */
  private offset = 0;
  private queued = 0;
  private target = Math.round(0.1 * sampleRate);
  private mode: JitterMode = 'buffering';
  private held = false;
  /** Fade the next quantum in (after silence, a trim or a hold). */
  private fadeIn = true;
  private underruns = 0;
  private trimmed = 0;
  private played = 0;
  private frames = 0;
  private ticks = 0;

  constructor() {
    super();
    this.port.onmessage = (e: MessageEvent<JitterCommand>) => this.command(e.data);
  }

  private command(cmd: JitterCommand): void {
    switch (cmd.type) {
      case 'frame':
        if (cmd.channels.length === 0 || cmd.channels[0]!.length === 0) return;
        this.queue.push(cmd.channels);
        this.queued += cmd.channels[0]!.length;
        this.frames++;
        return;
      case 'target':
        this.target = Math.max(QUANTUM, Math.round((cmd.ms / 1000) * sampleRate));
        return;
      case 'hold':
        this.held = cmd.on;
        return;
      case 'flush':
        this.queue.length = 0;
        this.offset = 0;
        this.queued = 0;
        this.mode = this.held ? 'holding' : 'buffering';
        this.fadeIn = true;
        return;
    }
  }

  /** Drops `n` samples from the head of the queue. */
  private skip(n: number): void {
    while (n > 0 && this.queue.length > 0) {
      const head = this.queue[0]!;
      const left = head[0]!.length - this.offset;
      const take = Math.min(left, n);
      this.offset += take;
      this.queued -= take;
      n -= take;
      if (this.offset >= head[0]!.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
  }

  process(_inputs: Float32Array[][], outputs: Float32Array[][]): boolean {
    const out = outputs[0]!;
    const frames = out[0]?.length ?? QUANTUM;
    for (const ch of out) ch.fill(0);

    if (this.held) {
      // Fade out the quantum we were about to play, without consuming it; then stay silent.
      if (this.mode === 'playing') this.render(out, frames, 'out', false);
      this.mode = 'holding';
    } else {
      if (this.mode === 'holding') {
        this.mode = this.queued > 0 ? 'playing' : 'buffering';
        this.fadeIn = true;
      }
      if (this.mode === 'buffering' && this.queued >= this.target) {
        this.mode = 'playing';
        this.fadeIn = true;
      }
      if (this.mode === 'playing') {
        const slack = Math.max(Math.round(0.04 * sampleRate), this.target >> 1);
        if (this.queued > this.target + slack) {
          // Too much latency: fade this quantum out, drop back to the target, fade the next in.
          this.render(out, frames, 'out', true);
          const excess = this.queued - this.target;
          this.skip(excess);
          this.trimmed += excess;
          this.fadeIn = true;
        } else if (this.queued >= frames) {
          this.render(out, frames, this.fadeIn ? 'in' : 'none', true);
          this.fadeIn = false;
        } else {
          // Underrun: play what is left, fading it out, then rebuffer.
          const n = this.queued;
          if (n > 0) this.render(out, n, 'out', true);
          this.underruns++;
          this.mode = 'buffering';
          this.fadeIn = true;
        }
      }
    }

    if (++this.ticks >= REPORT_EVERY) {
      this.ticks = 0;
      const report: JitterReport = {
        type: 'stats',
        mode: this.mode,
        queuedSamples: this.queued,
        targetSamples: this.target,
        underruns: this.underruns,
        trimmedSamples: this.trimmed,
        playedSamples: this.played,
        frames: this.frames,
      };
      this.port.postMessage(report);
    }
    return true;
  }

  /** Copies `n` queued samples to the output (consuming them or not), with an optional linear fade. */
  private render(out: Float32Array[], n: number, fade: 'in' | 'out' | 'none', consume: boolean): void {
    let qi = 0;
    let off = this.offset;
    for (let i = 0; i < n; ) {
      const chunk = this.queue[qi];
      if (!chunk) break;
      const len = Math.min(chunk[0]!.length - off, n - i);
      for (let c = 0; c < out.length; c++) {
        const src = chunk[Math.min(c, chunk.length - 1)]!;
        const dst = out[c]!;
        for (let k = 0; k < len; k++) {
          const g = fade === 'none' ? 1 : fade === 'in' ? (i + k) / n : 1 - (i + k) / n;
          dst[i + k] = src[off + k]! * g;
        }
      }
      i += len;
      off += len;
      if (off >= chunk[0]!.length) {
        qi++;
        off = 0;
      }
    }
    if (consume) {
      this.skip(n);
      this.played += n;
    }
  }
}

registerProcessor(JITTER_PROCESSOR, JitterProcessor);
