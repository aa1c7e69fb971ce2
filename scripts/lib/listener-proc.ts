/**
 * A load-generator child process: the listeners of a share of the sessions, and the plays,
 * pauses and stalls of those sessions. It runs outside the gateway's process (so the gateway's
 * RSS and CPU, read from /proc, are its own), and a load test may run several of them.
 *
 * Per frame it does only what must happen then: timestamp (CLOCK_MONOTONIC, shared by every
 * process of the test), sequence check, byte-for-byte comparison with the session's own loop
 * (synthetic engine), and append the time to the session's current segment. Percentiles are
 * computed at the end (`report`). Decoding runs on a thread of its own, on a sample.
 *
 * Lateness (what `report` computes, per session and segment):
 *   A segment is a stretch of continuous play: it starts at a session's first frame after a
 *   play, a `ready`, a resume (WS: the `state` event paused/autopaused → next frame; RTP: the
 *   pause command), or an `error`. Within it frame k (0, 1, …) ideally arrives at
 *   a + 20 ms · k. Lateness of frame k = t_k − 20 ms · k − a, with the anchor a = min over the
 *   segment's measured frames of (t_j − 20 ms · j): the schedule of the most punctual frame, so
 *   lateness ≥ 0 and every delay (the worker's timer, the main thread, the socket, this
 *   process) counts. An underrun or a gap does not restart the schedule: every frame after it is
 *   late by the gap. Only frames that arrive inside the report's window (and outside its
 *   excluded ranges) are measured; k still counts every frame of the segment.
 *
 * IPC: ToListener in, FromListener out (types below).
 */
import dgram from 'node:dgram';
import { Worker } from 'node:worker_threads';
import { FRAME_MS } from '../../src/shared/audio.js';
import { parseRtpPacket } from '../../src/shared/rtp.js';
import { DECODE_PASS_RATIO, DECODE_WARMUP_FRAMES, DECODE_WINDOW_FRAMES, type DecodeAnswer, type DecodeRequest } from './decode-worker.js';
import { anchorOffsets, DoubleList, LatencyCounts, LatencyHistogram, percentilesOf, type LatencyCountsJson, type Percentiles } from './stats.js';
import { deserializeLoop, LOOP_FRAMES } from './tones.js';
import { WsClient } from './ws-client.js';

export interface ListenerSessionSpec {
  id: string;
  hz: number;
  url: string;
}

export interface WindowSpec {
  name: string;
  from: number;
  to: number;
  exclude?: [number, number][];
  /** Sessions measured in this window (default: all of this process's). */
  ids?: string[];
}

export type ToListener =
  | {
      cmd: 'init';
      base: string;
      gatewayUrl: string;
      /** Synthetic engine: where the tone loops come from (byte-for-byte checks). */
      engineUrl?: string;
      kind: 'ws' | 'rtp';
      sessions: ListenerSessionSpec[];
      decodeChecksPerSec: number;
    }
  | { cmd: 'play'; ratePerSec: number; ids?: string[] }
  | { cmd: 'pause' | 'resume'; ids: string[] }
  | { cmd: 'stall'; ids: string[]; ms: number }
  | { cmd: 'report'; windows: WindowSpec[] }
  | { cmd: 'close' };

export interface SessionReport {
  id: string;
  frames: number;
  seqGaps: number;
  /** Seq jumps between one play and the next (frames of an ended track numbered, then not sent). */
  boundaryJumps: number;
  seqDupes: number;
  contentGaps: number;
  contentMissing: number;
  misrouted: number;
  decodedChecks: number;
  decodedFailures: number;
  playToFirstMs: number[];
  resumeGapsMs: number[];
  underrunEvents: number;
  states: string[];
  errors: string[];
  /** Why the gateway paused the track, when it said (an engine restart: the track waits at its frame). */
  pauseReasons: string[];
  playErrors: string[];
  lastState: string;
  /** Per window name: this session's lateness percentiles. */
  lateness: Record<string, Percentiles>;
}

export interface ProgressReport {
  frames: number;
  seqGaps: number;
  contentMissing: number;
  misrouted: number;
  decodedFailures: number;
  decodedChecks: number;
  withFrames: number;
  sessions: number;
  /** Provisional lateness of the frames since the last progress message. */
  recent: Percentiles;
}

export type FromListener =
  | { ev: 'ready'; tonesFetched: number }
  | { ev: 'played'; ok: number; failed: number; firstError?: string }
  | { ev: 'done'; cmd: string; ok: number; failed: number; firstError?: string }
  | { ev: 'progress'; progress: ProgressReport }
  | { ev: 'report'; windows: Record<string, LatencyCountsJson>; timeline?: (LatencyCountsJson | null)[]; sessions: SessionReport[] }
  | { ev: 'fatal'; message: string };

let base = 0n;
/** performance.now() and hrtime share CLOCK_MONOTONIC; this puts the first on the test's clock. */
let clockOffset = 0;
/** ms on the test's clock (shared by every process of the run), without a BigInt per call. */
const now = (): number => performance.now() + clockOffset;

class Track {
  lastSeq = -1;
  seqGaps = 0;
  /** The next frame starts a new play (after `ready` or `error`): a seq jump there is not a loss within a play. */
  atBoundary = false;
  boundaryJumps = 0;
  seqDupes = 0;
  loop: Buffer[] | undefined;
  loopPos = -1;
  contentGaps = 0;
  contentMissing = 0;
  misrouted = 0;
  frames = 0;
  readonly segments: DoubleList[] = [];
  private seg: DoubleList | undefined;
  /** Provisional anchor of the current segment (progress only). */
  private segMin = Infinity;
  newSegment = true;
  playSentAt = Number.NaN;
  readonly playToFirst: number[] = [];
  resumeSentAt = Number.NaN;
  readonly resumeGaps: number[] = [];
  lastState = 'none';
  readonly states: string[] = [];
  underrunEvents = 0;
  readonly errors: string[] = [];
  readonly pauseReasons: string[] = [];
  readonly playErrors: string[] = [];
  decodedChecks = 0;
  decodedFailures = 0;
  capture: ArrayBuffer[] | undefined;
  ws: WsClient | undefined;
  udp: dgram.Socket | undefined;
  udpPort = 0;

  constructor(readonly spec: ListenerSessionSpec) {}

  frame(t: number, seq: number, seqMod: number, buf: Buffer, start: number, end: number): void {
    this.frames++;
    if (this.lastSeq >= 0) {
      const d = (seq - this.lastSeq + seqMod) % seqMod;
      if (d === 0 || d > seqMod / 2) this.seqDupes++;
      else if (d > 1 && this.atBoundary) this.boundaryJumps += d - 1;
      else if (d > 1) this.seqGaps += d - 1;
    }
    this.atBoundary = false;
    this.lastSeq = seq;
    const loop = this.loop;
    if (loop) this.checkContent(loop, buf, start, end);
    if (this.newSegment) {
      this.newSegment = false;
      this.seg = new DoubleList();
      this.segments.push(this.seg);
      this.segMin = Infinity;
    }
    const seg = this.seg!;
    const r = t - FRAME_MS * seg.length;
    if (r < this.segMin) this.segMin = r;
    recent.record(r - this.segMin);
    seg.push(t);
    if (Number.isNaN(this.playSentAt) === false) {
      this.playToFirst.push(t - this.playSentAt);
      this.playSentAt = Number.NaN;
    }
    if (!Number.isNaN(this.resumeSentAt)) {
      this.resumeGaps.push(t - this.resumeSentAt);
      this.resumeSentAt = Number.NaN;
    }
    if (this.capture) {
      this.capture.push(copyOut(buf, start, end));
      if (this.capture.length === DECODE_WARMUP_FRAMES + DECODE_WINDOW_FRAMES) {
        const packets = this.capture;
        this.capture = undefined;
        decodeInFlight++;
        const req: DecodeRequest = { id: this.spec.id, hz: this.spec.hz, packets };
        decoder().postMessage(req, packets);
      }
    }
  }

  private checkContent(loop: Buffer[], buf: Buffer, start: number, end: number): void {
    const len = end - start;
    if (this.loopPos >= 0) {
      const expected = loop[(this.loopPos + 1) % LOOP_FRAMES]!;
      if (expected.length === len && expected.compare(buf, start, end) === 0) {
        this.loopPos = (this.loopPos + 1) % LOOP_FRAMES;
        return;
      }
    }
    for (let j = 0; j < LOOP_FRAMES; j++) {
      const p = loop[j]!;
      if (p.length === len && p.compare(buf, start, end) === 0) {
        // Its own audio, but not the frame that should come next: frames went missing.
        const expectedPos = (this.loopPos + 1) % LOOP_FRAMES;
        if (j !== expectedPos) {
          this.contentGaps++;
          this.contentMissing += (j - expectedPos + LOOP_FRAMES) % LOOP_FRAMES;
        }
        this.loopPos = j;
        return;
      }
    }
    this.misrouted++;
  }

  /** A `state`/`ready`/`error` text event from the gateway. */
  event(text: string): void {
    let e: { type?: string; state?: string; message?: string; reason?: string };
    try {
      e = JSON.parse(text) as typeof e;
    } catch {
      return;
    }
    if (e.type === 'state' && typeof e.state === 'string') {
      if (e.state === 'buffering' && this.lastState === 'playing') this.underrunEvents++;
      if (e.state === 'paused' || e.state === 'autopaused') this.newSegment = true;
      if (e.state === 'paused' && e.reason !== undefined && this.pauseReasons.length < 8) this.pauseReasons.push(e.reason);
      this.lastState = e.state;
      if (this.states.length < 64) this.states.push(e.state);
    } else if (e.type === 'ready') {
      this.newSegment = true;
      this.loopPos = -1;
      this.atBoundary = true;
      // A decoded sample must not straddle two plays (the tone restarts at phase 0).
      this.capture = undefined;
    } else if (e.type === 'error') {
      this.newSegment = true;
      this.atBoundary = true;
      this.capture = undefined;
      if (this.errors.length < 8) this.errors.push(String(e.message));
    }
  }

  /** Lateness of this session's frames in a window, into `into`; returns its percentiles. */
  lateness(w: WindowSpec, into: LatencyCounts, timeline?: LatencyCounts[]): Percentiles {
    const values: number[] = [];
    const times: number[] = [];
    for (const seg of this.segments) {
      const first = values.length;
      for (let k = 0; k < seg.length; k++) {
        const t = seg.data[k]!;
        if (!inWindow(t, w)) continue;
        values.push(t - FRAME_MS * k);
        times.push(t);
      }
      anchorOffsets(values, first);
    }
    for (let i = 0; i < values.length; i++) {
      into.record(values[i]!);
      if (timeline) {
        const second = Math.floor((times[i]! - w.from) / 1000);
        (timeline[second] ??= new LatencyCounts(TIMELINE_FIGURES)).record(values[i]!);
      }
    }
    return percentilesOf(values);
  }
}

/** Significant figures of the per-second lateness of the 'main' window (where in the run the late frames were). */
const TIMELINE_FIGURES = 2;

function inWindow(t: number, w: WindowSpec): boolean {
  if (t < w.from || t > w.to) return false;
  if (w.exclude) for (const [a, b] of w.exclude) if (t >= a && t <= b) return false;
  return true;
}

function copyOut(buf: Buffer, start: number, end: number): ArrayBuffer {
  const ab = new ArrayBuffer(end - start);
  new Uint8Array(ab).set(buf.subarray(start, end));
  return ab;
}

// ---- process state ----

const tracks = new Map<string, Track>();
const recent = new LatencyHistogram();
let gatewayUrl = '';
let kind: 'ws' | 'rtp' = 'ws';
let decodeWorker: Worker | undefined;
let decodeInFlight = 0;
let decodeTimer: NodeJS.Timeout | undefined;
let progressTimer: NodeJS.Timeout | undefined;
let checkCursor = 0;

function send(msg: FromListener): void {
  process.send?.(msg);
}

function decoder(): Worker {
  if (!decodeWorker) {
    decodeWorker = new Worker(new URL('./decode-worker.js', import.meta.url));
    decodeWorker.on('message', (a: DecodeAnswer) => {
      decodeInFlight--;
      const t = tracks.get(a.id);
      if (!t) return;
      t.decodedChecks++;
      if (a.error !== undefined || a.ratio < DECODE_PASS_RATIO) t.decodedFailures++;
    });
    decodeWorker.unref();
  }
  return decodeWorker;
}

async function post(path: string, body?: unknown): Promise<{ status: number; text: string }> {
  const res = await fetch(gatewayUrl + path, {
    method: 'POST',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  return { status: res.status, text: await res.text() };
}

async function init(msg: Extract<ToListener, { cmd: 'init' }>): Promise<void> {
  base = BigInt(msg.base);
  clockOffset = Number(process.hrtime.bigint() - base) / 1e6 - performance.now();
  gatewayUrl = msg.gatewayUrl;
  kind = msg.kind;
  let fetched = 0;
  const loops = new Map<number, Buffer[]>();
  for (const spec of msg.sessions) {
    const t = new Track(spec);
    tracks.set(spec.id, t);
    if (msg.engineUrl) {
      let loop = loops.get(spec.hz);
      if (!loop) {
        const res = await fetch(`${msg.engineUrl}/tone?hz=${spec.hz}`);
        if (!res.ok) throw new Error(`engine /tone?hz=${spec.hz}: ${res.status}`);
        loop = deserializeLoop(Buffer.from(await res.arrayBuffer()));
        loops.set(spec.hz, loop);
        fetched++;
      }
      t.loop = loop;
    }
  }
  const url = new URL(gatewayUrl);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = Number(url.port);
  // Connect in bounded parallel batches: thousands of upgrades at once only queue up.
  const list = [...tracks.values()];
  for (let i = 0; i < list.length; i += 50) {
    await Promise.all(list.slice(i, i + 50).map((t) => (kind === 'ws' ? connectWs(t, host, port) : bindUdp(t))));
  }
  if (msg.decodeChecksPerSec > 0) {
    decodeTimer = setInterval(startCapture, Math.max(20, 1000 / msg.decodeChecksPerSec));
    decodeTimer.unref();
  }
  progressTimer = setInterval(sendProgress, 1000);
  progressTimer.unref();
  send({ ev: 'ready', tonesFetched: fetched });
}

function connectWs(t: Track, host: string, port: number): Promise<void> {
  t.ws = new WsClient(host, port, `/ws?session=${encodeURIComponent(t.spec.id)}`, {
    binary: (buf, start, end) => {
      if (end - start < 8) return;
      const time = now();
      t.frame(time, buf.readUInt32BE(start), 2 ** 32, buf, start + 8, end);
    },
    text: (text) => t.event(text),
    close: (reason) => {
      if (!closing && t.errors.length < 8) t.errors.push(`listener closed: ${reason}`);
    },
  });
  return t.ws.open;
}

function bindUdp(t: Track): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    t.udp = sock;
    sock.on('message', (msg: Buffer) => {
      const time = now();
      const p = parseRtpPacket(msg);
      if (!p) return;
      t.frame(time, p.seq, 2 ** 16, msg, msg.length - p.payload.length, msg.length);
    });
    sock.once('error', reject);
    sock.bind(0, '127.0.0.1', () => {
      try {
        sock.setRecvBufferSize(1 << 20);
      } catch {
        // The kernel's cap applies; a small buffer only matters under a burst.
      }
      t.udpPort = sock.address().port;
      resolve();
    });
  });
}

let closing = false;

async function play(msg: Extract<ToListener, { cmd: 'play' }>): Promise<void> {
  const list = msg.ids ? msg.ids.map((id) => tracks.get(id)!).filter(Boolean) : [...tracks.values()];
  const gap = msg.ratePerSec > 0 ? 1000 / msg.ratePerSec : 0;
  let ok = 0;
  let failed = 0;
  let firstError: string | undefined;
  const start = now();
  const pending: Promise<void>[] = [];
  for (let i = 0; i < list.length; i++) {
    const t = list[i]!;
    const due = start + i * gap;
    const wait = due - now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    t.newSegment = true;
    t.loopPos = -1;
    t.playSentAt = now();
    pending.push(
      (async () => {
        const res = await post(`/sessions/${encodeURIComponent(t.spec.id)}/play`, { url: t.spec.url });
        if (res.status !== 200) throw new Error(`play ${t.spec.id}: ${res.status} ${res.text.slice(0, 200)}`);
        if (kind === 'rtp') {
          const rtp = await post(`/sessions/${encodeURIComponent(t.spec.id)}/rtp`, { host: '127.0.0.1', port: t.udpPort });
          if (rtp.status !== 200) throw new Error(`rtp ${t.spec.id}: ${rtp.status} ${rtp.text.slice(0, 200)}`);
        }
      })().then(
        () => {
          ok++;
        },
        (err: Error) => {
          failed++;
          firstError ??= err.message;
          if (t.playErrors.length < 4) t.playErrors.push(err.message);
        },
      ),
    );
  }
  await Promise.all(pending);
  send(firstError === undefined ? { ev: 'played', ok, failed } : { ev: 'played', ok, failed, firstError });
}

async function control(msg: Extract<ToListener, { cmd: 'pause' | 'resume' }>): Promise<void> {
  let ok = 0;
  let failed = 0;
  let firstError: string | undefined;
  await Promise.all(
    msg.ids.map(async (id) => {
      const t = tracks.get(id);
      if (!t) return;
      if (msg.cmd === 'resume') t.resumeSentAt = now();
      try {
        const res = await post(`/sessions/${encodeURIComponent(id)}/${msg.cmd}`);
        if (res.status !== 200) throw new Error(`${msg.cmd} ${id}: ${res.status} ${res.text.slice(0, 200)}`);
        // RTP has no events: the command itself marks where a segment ends.
        if (msg.cmd === 'pause' && kind === 'rtp') t.newSegment = true;
        ok++;
      } catch (err) {
        failed++;
        firstError ??= (err as Error).message;
      }
    }),
  );
  send(firstError === undefined ? { ev: 'done', cmd: msg.cmd, ok, failed } : { ev: 'done', cmd: msg.cmd, ok, failed, firstError });
}

function stall(msg: Extract<ToListener, { cmd: 'stall' }>): void {
  for (const id of msg.ids) tracks.get(id)?.ws?.pause();
  setTimeout(() => {
    for (const id of msg.ids) tracks.get(id)?.ws?.resume();
    send({ ev: 'done', cmd: 'stall', ok: msg.ids.length, failed: 0 });
  }, msg.ms);
}

/** Starts capturing the next packets of one session (round-robin) for a decoded check. */
function startCapture(): void {
  if (decodeInFlight > 2 || tracks.size === 0) return;
  const list = [...tracks.values()];
  for (let tries = 0; tries < list.length; tries++) {
    const t = list[checkCursor++ % list.length]!;
    if (t.capture || t.frames === 0) continue;
    t.capture = [];
    return;
  }
}

function sendProgress(): void {
  let frames = 0;
  let seqGaps = 0;
  let contentMissing = 0;
  let misrouted = 0;
  let withFrames = 0;
  let decodedChecks = 0;
  let decodedFailures = 0;
  for (const t of tracks.values()) {
    frames += t.frames;
    seqGaps += t.seqGaps;
    contentMissing += t.contentMissing;
    misrouted += t.misrouted;
    decodedChecks += t.decodedChecks;
    decodedFailures += t.decodedFailures;
    if (t.frames > 0) withFrames++;
  }
  const progress: ProgressReport = {
    frames,
    seqGaps,
    contentMissing,
    misrouted,
    decodedChecks,
    decodedFailures,
    withFrames,
    sessions: tracks.size,
    recent: recent.percentiles(),
  };
  recent.reset();
  send({ ev: 'progress', progress });
}

function report(windows: WindowSpec[]): void {
  const hists = new Map(windows.map((w) => [w.name, new LatencyCounts()]));
  const timeline: LatencyCounts[] = [];
  const sessions: SessionReport[] = [];
  for (const t of tracks.values()) {
    const lateness: Record<string, Percentiles> = {};
    for (const w of windows) {
      if (w.ids && !w.ids.includes(t.spec.id)) continue;
      lateness[w.name] = t.lateness(w, hists.get(w.name)!, w.name === 'main' ? timeline : undefined);
    }
    sessions.push({
      id: t.spec.id,
      frames: t.frames,
      seqGaps: t.seqGaps,
      boundaryJumps: t.boundaryJumps,
      seqDupes: t.seqDupes,
      contentGaps: t.contentGaps,
      contentMissing: t.contentMissing,
      misrouted: t.misrouted,
      decodedChecks: t.decodedChecks,
      decodedFailures: t.decodedFailures,
      playToFirstMs: t.playToFirst,
      resumeGapsMs: t.resumeGaps,
      underrunEvents: t.underrunEvents,
      states: t.states,
      errors: t.errors,
      pauseReasons: t.pauseReasons,
      playErrors: t.playErrors,
      lastState: t.lastState,
      lateness,
    });
  }
  send({
    ev: 'report',
    windows: Object.fromEntries([...hists].map(([k, h]) => [k, h.toJSON()])),
    timeline: Array.from({ length: timeline.length }, (_, i) => timeline[i]?.toJSON() ?? null),
    sessions,
  });
}

function close(): void {
  closing = true;
  clearInterval(decodeTimer);
  clearInterval(progressTimer);
  for (const t of tracks.values()) {
    t.ws?.close();
    t.udp?.close();
  }
  void decodeWorker?.terminate();
  setTimeout(() => process.exit(0), 200).unref();
}

process.on('message', (msg: ToListener) => {
  const run = async () => {
    switch (msg.cmd) {
      case 'init':
        return init(msg);
      case 'play':
        return play(msg);
      case 'pause':
      case 'resume':
        return control(msg);
      case 'stall':
        return stall(msg);
      case 'report':
        return report(msg.windows);
      case 'close':
        return close();
    }
  };
  run().catch((err: unknown) => send({ ev: 'fatal', message: err instanceof Error ? err.message : String(err) }));
});
process.on('disconnect', () => process.exit(0));
