/**
 * Track changes as a WebSocket listener hears them (`chorus start`, real engine): sessions play
 * queues of one-second tones that alternate between two frequencies, so each frame tells which
 * item it belongs to. Per boundary: frames missing or added (an item must be exactly 50 frames),
 * seq and timestamp breaks, and the silence at the listener (the time between the last frame of
 * one item and the first of the next, less a frame time).
 *
 * Two ways, in the same run: `queue` (the gateway's queue, gapless: the engine queues the next
 * item behind the current one) and `play-on-finished` (what a client without a queue does: it
 * plays the next item when it hears `finished`).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import opus from '@discordjs/opus';
import WebSocket from 'ws';
import { CHANNELS, FRAME_SAMPLES, SAMPLE_RATE } from '../../src/shared/audio.js';
import { parseListenerFrame, type ListenerEvent } from '../../src/shared/listener-protocol.js';
import { spawnRole } from '../lib/procs.js';
import { percentilesOf, type Percentiles } from '../lib/stats.js';
import { toneRatio } from '../lib/decode-worker.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../dist/main/cli.js');
const TONES = [440, 880];
const ITEM_SECONDS = 1;
const ITEM_FRAMES = (ITEM_SECONDS * SAMPLE_RATE) / FRAME_SAMPLES;

export type BoundaryWay = 'queue' | 'play-on-finished';

export interface BoundaryResult {
  way: BoundaryWay;
  sessions: number;
  boundaries: number;
  /** Frames an item lacked / had over its 50, per boundary (the item after it). */
  missingFrames: Percentiles & { total: number };
  addedFrames: Percentiles & { total: number };
  seqBreaks: number;
  timestampBreaks: number;
  /** Silence at the listener at each boundary, ms (arrival gap less 20 ms, at least 0). */
  gapMs: Percentiles;
  /** The same between frames of one item: what the machine's own jitter gives, for comparison. */
  withinItemGapMs: Percentiles;
  /** Times a session's ring ran dry while playing (GET /sessions), over all sessions. */
  underruns: number;
}

interface Heard {
  seq: number;
  timestamp: number;
  at: number;
  payload: Buffer;
}

/** Which tone each frame carries: the second half of the frame, where a new encoder's first frame has its audio. */
function tonesOf(frames: Heard[]): number[] {
  const decoder = new opus.OpusEncoder(SAMPLE_RATE, CHANNELS);
  return frames.map((f) => {
    const pcm = decoder.decode(f.payload);
    const left = new Float64Array(FRAME_SAMPLES / 2);
    for (let i = 0; i < left.length; i++) left[i] = pcm.readInt16LE((FRAME_SAMPLES / 2 + i) * 2 * CHANNELS) / 32768;
    const ratios = TONES.map((hz) => toneRatio(left, hz));
    return TONES[ratios.indexOf(Math.max(...ratios))]!;
  });
}

async function playSession(url: string, id: string, items: number, way: BoundaryWay): Promise<Heard[]> {
  const tracks = Array.from({ length: items }, (_, i) => `tone:${TONES[i % 2]}?seconds=${ITEM_SECONDS}`);
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws?session=${id}`);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const heard: Heard[] = [];
  let next = 0;
  const post = (p: string, body: unknown) => fetch(`${url}/sessions/${id}${p}`, { method: 'POST', body: JSON.stringify(body) }).then((r) => r.text());
  const done = new Promise<void>((resolve) => {
    ws.on('message', (data: Buffer, binary: boolean) => {
      if (binary) {
        const f = parseListenerFrame(data)!;
        heard.push({ seq: f.seq, timestamp: f.timestamp, at: performance.now(), payload: Buffer.from(f.payload) });
        return;
      }
      const event = JSON.parse(data.toString()) as ListenerEvent;
      if (event.type !== 'state' || event.state !== 'finished') return;
      if (way === 'play-on-finished' && next < items) void post('/play', { url: tracks[next++] });
      else resolve();
    });
  });
  if (way === 'queue') await post('/queue', { tracks });
  else await post('/play', { url: tracks[next++] });
  await done;
  ws.close();
  return heard;
}

export async function benchBoundaries(way: BoundaryWay, sessions = 10, boundariesPerSession = 10): Promise<BoundaryResult> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CHORUS_')));
  const chorus = spawnRole('chorus start', [CLI, 'start'], { ...env, CHORUS_PORT: '0', CHORUS_NO_LISTENER: 'play' });
  try {
    const url = (await chorus.waitFor(/start ready http=(\S+)/, 30_000))[1]!;
    process.stderr.write(`boundaries: ${way}, ${sessions} sessions × ${boundariesPerSession}…\n`);
    const heard = await Promise.all(
      Array.from({ length: sessions }, (_, s) => playSession(url, `${way}-${s}`, boundariesPerSession + 1, way)),
    );
    const missing: number[] = [];
    const added: number[] = [];
    const gaps: number[] = [];
    const within: number[] = [];
    let seqBreaks = 0;
    let timestampBreaks = 0;
    for (const frames of heard) {
      for (let i = 1; i < frames.length; i++) {
        if (frames[i]!.seq !== ((frames[i - 1]!.seq + 1) >>> 0)) seqBreaks++;
        if (frames[i]!.timestamp !== ((frames[i - 1]!.timestamp + FRAME_SAMPLES) >>> 0)) timestampBreaks++;
      }
      // Runs of one tone: each is an item; every run after the first starts at a boundary.
      const tones = tonesOf(frames);
      const runs: { start: number; length: number }[] = [];
      tones.forEach((hz, i) => {
        if (i > 0 && hz === tones[i - 1]) runs[runs.length - 1]!.length++;
        else runs.push({ start: i, length: 1 });
      });
      for (let r = 1; r < runs.length; r++) {
        const { start, length } = runs[r]!;
        missing.push(Math.max(0, ITEM_FRAMES - length));
        added.push(Math.max(0, length - ITEM_FRAMES));
        gaps.push(Math.max(0, frames[start]!.at - frames[start - 1]!.at - 20));
      }
      for (const { start, length } of runs) {
        for (let i = start + 1; i < start + length; i++) within.push(Math.max(0, frames[i]!.at - frames[i - 1]!.at - 20));
      }
      // A boundary whose item never came at all is every one of its frames missing.
      for (let r = runs.length; r <= boundariesPerSession; r++) missing.push(ITEM_FRAMES);
    }
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    const summaries = ((await (await fetch(`${url}/sessions`)).json()) as { sessions: { underruns: number }[] }).sessions;
    return {
      way,
      sessions,
      boundaries: missing.length,
      missingFrames: { ...percentilesOf(missing), total: sum(missing) },
      addedFrames: { ...percentilesOf(added), total: sum(added) },
      seqBreaks,
      timestampBreaks,
      gapMs: percentilesOf(gaps),
      withinItemGapMs: percentilesOf(within),
      underruns: sum(summaries.map((x) => x.underruns)),
    };
  } finally {
    await chorus.stop();
  }
}
