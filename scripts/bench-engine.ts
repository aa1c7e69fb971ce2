/**
 * `npm run bench:engine`: how fast and how lean the engine encodes. For N = 1, 8, 32 concurrent
 * tone sessions of 10 s each, the bench plays gateway with unlimited credit (the engine encodes
 * as fast as it can) and measures, from /proc:
 *
 *   frames/s        Opus frames delivered per wall-clock second, all sessions together
 *   CPU             engine (main thread, other threads) and its ffmpeg children, in seconds
 *   × real time     seconds of audio per CPU second (target ≥ 100 per core)
 *   CPU/s audio     CPU seconds per second of audio per session (target ≤ 0.01)
 *   RSS             peak of the engine, peak of each ffmpeg; per session = (engine + Σ ffmpeg) / N
 *                   (target ≤ 20 MB), and the marginal cost of one more session
 *
 * It runs the engine's CLI as a user would (`node <build>/src/main/cli.js engine`, from the same
 * dist-scripts/ build as this script). Prints a table and writes artifacts/bench-engine.json.
 * Flags: --sessions 1,8,32 --seconds 10 (--help). The engine's knobs come from the environment as usual
 * (CHORUS_OPUS_COMPLEXITY, CHORUS_ENCODER_THREADS, …), e.g.
 *   CHORUS_OPUS_COMPLEXITY=10 npm run bench:engine
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { frameKey, WireDecoder } from '../src/shared/protocol.js';
import { descendantsOf } from '../test/helpers/chorus-process.js';
import { defineCommand, numberFlag, parseCommandLine } from './lib/cli.js';
import { readProc, readThreadsCpu, startEngineIn } from './lib/procs.js';

/** dist-scripts/, where this file is built (as scripts/bench-engine.js) beside src/. */
const BUILD = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ROOT = path.dirname(BUILD);
const CLI = path.join(BUILD, 'src/main/cli.js');

const COMMAND = defineCommand({
  name: 'bench-engine',
  usage: 'npm run bench:engine -- [flags]',
  about: 'How fast and how lean the engine encodes: N concurrent tone sessions with unlimited credit.',
  flags: {
    sessions: { type: 'string', value: 'N[,N…]', help: 'the concurrent sessions of each run (1,8,32)' },
    seconds: { type: 'string', value: 'S', help: 'length of every tone (10)' },
  },
  notes: "The engine's knobs come from the environment, e.g. CHORUS_OPUS_COMPLEXITY=10 npm run bench:engine",
});

function readArgs(): { counts: number[]; seconds: number } {
  return parseCommandLine(COMMAND, (v) => ({
    counts: (v.sessions ?? '1,8,32').split(',').map((n) => numberFlag('sessions', n, 1, 10_000, true)),
    seconds: numberFlag('seconds', v.seconds ?? '10', 1, 3600),
  }));
}

interface Cpu {
  self: number;
  children: number;
  mainThread: number;
}

function cpuOf(pid: number): Cpu {
  const proc = readProc(pid, 0)!;
  return { self: proc.cpuSeconds, children: proc.reapedChildrenCpuSeconds, mainThread: readThreadsCpu(pid)!.main };
}

function rssPeakMb(pid: number): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Proportional set size: resident memory with pages shared among processes (ffmpeg's code) split between them. */
function pssMb(pid: number): number | undefined {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

function commOf(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

interface Engine {
  pid: number;
  socketPath: string;
  url: string;
  stop(): Promise<void>;
}

async function startEngine(): Promise<Engine> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-bench-'));
  const { engine, url, socketPath } = await startEngineIn(CLI, dir, { CHORUS_MAX_SESSIONS: '1024' });
  return {
    pid: engine.pid,
    socketPath,
    url,
    async stop() {
      await engine.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

interface Result {
  sessions: number;
  audio_seconds_per_session: number;
  wall_s: number;
  frames: number;
  frames_per_s: number;
  cpu_s: { engine_main_thread: number; engine_other_threads: number; ffmpeg: number; total: number };
  realtime_x_per_core: number;
  cpu_s_per_audio_s_per_session: number;
  rss_mb: { engine_peak: number; ffmpeg_peak_max: number; ffmpeg_peak_mean: number; per_session: number };
  /** Largest PSS seen: the engine's and the sum over its ffmpegs at one moment. */
  pss_mb: { engine: number; ffmpeg_sum: number; per_session: number };
}

async function run(sessions: number, seconds: number): Promise<Result> {
  const engine = await startEngine();
  const socket = net.connect(engine.socketPath);
  let frames = 0;
  const finished = new Set<string>();
  const failures: string[] = [];
  const warm = new Set<string>();
  let allDone!: () => void;
  const done = new Promise<void>((resolve) => (allDone = resolve));
  const decoder = new WireDecoder({
    frame: (buf, idStart) => {
      if (!frameKey(buf, idStart).startsWith('warm-')) frames++;
    },
    event: (event) => {
      if (event.type === 'ready') socket.write(JSON.stringify({ type: 'credit', session_id: event.session_id, frames: 1e9 }) + '\n');
      if (event.type === 'error') failures.push(`${event.session_id}: ${event.message}`);
      if (event.type !== 'ready' && event.type !== 'finished' && event.type !== 'error') return;
      if (event.session_id.startsWith('warm-')) {
        if (event.type === 'finished' || event.type === 'error') warm.add(event.session_id);
        return;
      }
      if (event.type === 'finished' || event.type === 'error') {
        finished.add(event.session_id);
        if (finished.size === sessions) allDone();
      }
    },
    error: (err) => failures.push(`protocol error ${err.kind}`),
  });
  socket.on('data', (chunk: Buffer) => decoder.push(chunk));
  await new Promise((resolve) => socket.once('connect', resolve));
  socket.write(JSON.stringify({ type: 'credit', session_id: 'bench', frames: 1 }) + '\n'); // credit mode from the start

  const ffmpegPeaks = new Map<number, number>();
  let enginePss = 0;
  let ffmpegPssSum = 0;
  let pssTotal = 0;
  const sample = () => {
    let ffmpegPss = 0;
    for (const pid of descendantsOf(engine.pid)) {
      // Between fork and exec a child is a copy of the engine: only count it once it is ffmpeg.
      if (commOf(pid) !== 'ffmpeg') continue;
      const rss = rssPeakMb(pid);
      if (rss !== undefined) ffmpegPeaks.set(pid, Math.max(ffmpegPeaks.get(pid) ?? 0, rss));
      ffmpegPss += pssMb(pid) ?? 0;
    }
    const own = pssMb(engine.pid) ?? 0;
    if (own + ffmpegPss > pssTotal) [pssTotal, enginePss, ffmpegPssSum] = [own + ffmpegPss, own, ffmpegPss];
  };
  // Warm up every encoder thread (JIT, first allocations) so the figures are steady state, then
  // reset the engine's peak RSS (clear_refs 5) so the warm-up's sessions are not counted.
  await Promise.all([0, 1, 2, 3].map((i) => fetch(`${engine.url}/session/warm-${i}/play`, { method: 'POST', body: JSON.stringify({ url: 'tone:1000?seconds=2' }) })));
  while (warm.size < 4) await new Promise((resolve) => setTimeout(resolve, 20));
  fs.writeFileSync(`/proc/${engine.pid}/clear_refs`, '5');
  const sampler = setInterval(sample, 10);

  const cpu0 = cpuOf(engine.pid);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: sessions }, (_, i) =>
      fetch(`${engine.url}/session/bench-${i}/play`, {
        method: 'POST',
        body: JSON.stringify({ url: `tone:${200 + 10 * i}?seconds=${seconds}`, format: 'opus' }),
      }).then((r) => {
        if (!r.ok) throw new Error(`play ${i}: HTTP ${r.status}`);
      }),
    ),
  );
  await done;
  const wall = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  await new Promise((resolve) => setTimeout(resolve, 200)); // let the engine reap its ffmpegs
  const cpu1 = cpuOf(engine.pid);
  const enginePeak = rssPeakMb(engine.pid)!;
  socket.destroy();
  await engine.stop();
  if (failures.length > 0) throw new Error(`sessions failed: ${failures.join('; ')}`);

  const main = cpu1.mainThread - cpu0.mainThread;
  const self = cpu1.self - cpu0.self;
  const ffmpeg = cpu1.children - cpu0.children;
  const total = self + ffmpeg;
  const peaks = [...ffmpegPeaks.values()];
  const sum = peaks.reduce((a, b) => a + b, 0);
  const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;
  return {
    sessions,
    audio_seconds_per_session: seconds,
    wall_s: round(wall),
    frames,
    frames_per_s: Math.round(frames / wall),
    cpu_s: { engine_main_thread: round(main), engine_other_threads: round(self - main), ffmpeg: round(ffmpeg), total: round(total) },
    realtime_x_per_core: Math.round((sessions * seconds) / total),
    cpu_s_per_audio_s_per_session: round(total / (sessions * seconds), 4),
    rss_mb: {
      engine_peak: round(enginePeak, 1),
      ffmpeg_peak_max: round(Math.max(0, ...peaks), 1),
      ffmpeg_peak_mean: round(peaks.length ? sum / peaks.length : 0, 1),
      per_session: round((enginePeak + sum) / sessions, 1),
    },
    pss_mb: { engine: round(enginePss, 1), ffmpeg_sum: round(ffmpegPssSum, 1), per_session: round(pssTotal / sessions, 1) },
  };
}

async function main(): Promise<void> {
  const { counts, seconds } = readArgs();
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build:scripts\` first`);
  const knobs = {
    CHORUS_OPUS_COMPLEXITY: process.env.CHORUS_OPUS_COMPLEXITY || '(default)',
    CHORUS_ENCODER_THREADS: process.env.CHORUS_ENCODER_THREADS || '(default)',
  };
  process.stdout.write(`engine bench: ${seconds} s tones, unlimited credit; ${Object.entries(knobs).map(([k, v]) => `${k}=${v}`).join(' ')}\n`);
  const results: Result[] = [];
  for (const n of counts) {
    process.stderr.write(`bench: ${n} session(s) × ${seconds} s …\n`);
    results.push(await run(n, seconds));
  }

  const header = ['sessions', 'frames', 'wall s', 'frames/s', 'CPU s main', 'CPU s threads', 'CPU s ffmpeg', '× real time/core', 'CPU s per audio s', 'engine RSS MB', 'ffmpeg RSS MB', 'RSS MB/session', 'PSS MB/session'];
  const rows = results.map((r) => [
    r.sessions, r.frames, r.wall_s, r.frames_per_s, r.cpu_s.engine_main_thread, r.cpu_s.engine_other_threads, r.cpu_s.ffmpeg,
    r.realtime_x_per_core, r.cpu_s_per_audio_s_per_session, r.rss_mb.engine_peak, r.rss_mb.ffmpeg_peak_max, r.rss_mb.per_session, r.pss_mb.per_session,
  ].map(String));
  const lines = [header, header.map((h) => '-'.repeat(h.length)), ...rows];
  const widths = header.map((_, c) => Math.max(...lines.map((l) => l[c]!.length)));
  for (const l of lines) process.stdout.write(`| ${l.map((cell, c) => cell.padStart(widths[c]!)).join(' | ')} |\n`);
  if (results.length >= 2) {
    const [a, b] = [results[0]!, results.at(-1)!];
    const marginal = (b.rss_mb.engine_peak - a.rss_mb.engine_peak) / (b.sessions - a.sessions) + b.rss_mb.ffmpeg_peak_mean;
    process.stdout.write(`marginal RSS per added session (engine growth + one ffmpeg): ${marginal.toFixed(1)} MB\n`);
  }

  const out = path.join(ROOT, 'artifacts', 'bench-engine.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const machine = { cpus: os.availableParallelism(), cpu_model: os.cpus()[0]?.model, node: process.version };
  fs.writeFileSync(out, JSON.stringify({ when: new Date().toISOString(), machine, knobs, results }, null, 2) + '\n');
  process.stdout.write(`wrote ${path.relative(process.cwd(), out)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench-engine: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
