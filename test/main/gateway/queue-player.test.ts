/**
 * The queue played on a real engine and gateway: a listener decodes what it hears with
 * @discordjs/opus and tells the tones apart by frequency, frame by frame.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SAMPLE_RATE, FRAME_SAMPLES } from '../../../src/shared/audio.js';
import type { QueueEvent, QueueState } from '../../../src/shared/queue.js';
import { channel, goertzel } from '../../helpers/audio-analysis.js';
import { client } from '../../helpers/http.js';
import { TestListener } from '../../helpers/listener.js';
import { startStack, stopStack, type Stack } from '../../helpers/stack.js';

let stack: Stack;
let api: ReturnType<typeof client>;
const listeners: TestListener[] = [];

beforeAll(async () => {
  stack = await startStack({}, {}, { CHORUS_NO_LISTENER: 'play' });
  api = client(stack.url);
});
afterEach(() => {
  for (const l of listeners.splice(0)) l.close();
});
afterAll(() => stopStack(stack));

async function listen(id: string): Promise<TestListener> {
  const l = await TestListener.connect(stack.url, id);
  listeners.push(l);
  return l;
}

function finished(l: TestListener, timeoutMs = 15_000): Promise<unknown> {
  return l.waitForEvent('state', timeoutMs, (e) => e.type === 'state' && e.state === 'finished');
}

/**
 * Which of `freqs` each received frame carries most of (by the Goertzel power of its decoded
 * audio), decoding with a fresh decoder from each index of `tracksAt`: every track has an
 * encoder of its own, and a decoder carried over a track change spends the first frame of the
 * new track on its overlap with the old one.
 */
function frameTones(l: TestListener, freqs: number[], tracksAt: number[] = []): number[] {
  const bounds = [0, ...tracksAt, l.frames.length];
  const left = Float64Array.from(bounds.slice(1).flatMap((to, i) => Array.from(channel(l.decode(bounds[i]!, to)))));
  const out: number[] = [];
  for (let i = 0; i < l.frames.length; i++) {
    const frame = left.subarray(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES);
    const powers = freqs.map((f) => goertzel(frame, SAMPLE_RATE, f));
    out.push(freqs[powers.indexOf(Math.max(...powers))]!);
  }
  return out;
}

/** Runs of equal values: [[value, count], …]. */
function runs(values: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const v of values) {
    const last = out[out.length - 1];
    if (last && last[0] === v) last[1]++;
    else out.push([v, 1]);
  }
  return out;
}

function timestampBreaks(l: TestListener): number[] {
  const out: number[] = [];
  for (let i = 1; i < l.frames.length; i++) {
    if (l.frames[i]!.timestamp !== ((l.frames[i - 1]!.timestamp + FRAME_SAMPLES) >>> 0)) out.push(i);
  }
  return out;
}

describe('gapless', () => {
  it('follows the last frame of one track with the first of the next: no frame missing, none added, seq and timestamp continuous', async () => {
    const l = await listen('gapless');
    const added = await api('POST', '/sessions/gapless/queue', { tracks: ['tone:440?seconds=1', 'tone:880?seconds=1'] });
    expect(added.status).toBe(200);
    await finished(l);
    // Two 1 s tones are 50 + 50 frames of 20 ms.
    expect(l.frames.length).toBe(100);
    expect(l.seqBreaks()).toEqual([]);
    expect(timestampBreaks(l)).toEqual([]);
    // Packet 50 is the second track's first: its own decoder hears 880 Hz in it, and 440 Hz in
    // every packet before it.
    expect(runs(frameTones(l, [440, 880], [50]))).toEqual([
      [440, 50],
      [880, 50],
    ]);
    // One decoder over the whole stream, as a listener has: the change is within that one frame.
    expect(runs(frameTones(l, [440, 880])).map(([f, n]) => [f, Math.abs(n - 50) <= 1])).toEqual([
      [440, true],
      [880, true],
    ]);
    // The session played on through the change: no end, no buffering between the tracks.
    const states = l.events.flatMap((e) => (e.type === 'state' ? [e.state] : []));
    expect(states.slice(states.indexOf('playing'))).toEqual(['playing', 'finished']);
    // One underrun would be a gap the listener hears: there is none.
    const summary = (await api('GET', '/sessions/gapless')).json.session;
    expect(summary.underruns).toBe(0);
    // The listeners heard the change: the queue advanced to the second item, with its ready.
    const changes = l.events.filter((e): e is QueueEvent => e.type === 'queue').map((e) => [e.change, e.queue.index]);
    expect(changes).toContainEqual(['advance', 1]);
    expect(l.events.filter((e) => e.type === 'ready')).toHaveLength(2);
  });
});
