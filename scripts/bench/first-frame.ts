/**
 * Play → first frame at a WebSocket listener, with pre-warmed threads and a `tone:` source on
 * the real engine (ffmpeg + Opus): `chorus start`, then `plays` plays one after another, each on
 * a fresh session whose listener is connected first. Measured from just before the play request
 * is sent to the listener's first binary message.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { Histogram } from '../../src/shared/histogram.js';
import { spawnRole } from '../lib/procs.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../dist/main/cli.js');

export interface FirstFrameResult {
  plays: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** The first play, before anything was warm (ffmpeg's binary not in the page cache, JIT cold). */
  coldMs: number;
}

export async function benchFirstFrame(plays = 50): Promise<FirstFrameResult> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CHORUS_')));
  // Its own session store: the bench's sessions must not come back in a later `npm start`.
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-bench-data-'));
  const chorus = spawnRole('chorus start', [CLI, 'start'], { ...env, CHORUS_PORT: '0', CHORUS_MAX_SESSIONS: String(plays + 10), CHORUS_DATA_DIR: dataDir });
  try {
    const url = (await chorus.waitFor(/start ready http=(\S+)/, 30_000))[1]!;
    const histogram = new Histogram(5000, 0.1);
    let coldMs = 0;
    for (let i = 0; i <= plays; i++) {
      const id = `first-${i}`;
      const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws?session=${id}`);
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      const first = new Promise<number>((resolve) => ws.on('message', (_d, binary) => binary && resolve(performance.now())));
      const sent = performance.now();
      const res = await fetch(`${url}/sessions/${id}/play`, { method: 'POST', body: JSON.stringify({ url: 'tone:440?seconds=2' }) });
      if (res.status !== 200) throw new Error(`play ${id}: ${res.status} ${await res.text()}`);
      const ms = (await first) - sent;
      if (i === 0) coldMs = ms;
      else histogram.record(ms);
      ws.close();
      await fetch(`${url}/sessions/${id}/stop`, { method: 'POST' });
      process.stderr.write(`\rfirst frame: ${i}/${plays} plays, last ${ms.toFixed(1)} ms   `);
    }
    process.stderr.write('\n');
    const p = histogram.percentiles();
    return { plays, p50Ms: p.p50, p99Ms: p.p99, maxMs: p.max, coldMs };
  } finally {
    await chorus.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}
