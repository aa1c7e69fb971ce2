/**
 * `npm run bench:engine-cost`: what one playing stream costs the engine, split by part, in CPU
 * seconds per stream-second (CPU time is far less sensitive to a busy machine than wall time).
 *
 * N streams of one source kind play at once through the real engine (`<build>/src/main/cli.js
 * engine`); this script plays the gateway. `--pace realtime` grants each stream one frame per
 * 20 ms after a 200 ms prebuffer, as the gateway does for a listener; `--pace burst` grants
 * without limit (the engine encodes as fast as it can). Once every stream has frames flowing, a
 * window of `--seconds` is measured from /proc:
 *
 *   ffmpeg          the live ffmpeg children's CPU (and that of any reaped meanwhile)
 *   engine main     the engine's main thread: ffmpeg reads, PCM framing, scheduling, socket writes
 *   engine threads  every other engine thread: the Opus encoder threads, plus GC and libuv
 *
 * divided by the stream-seconds delivered in the window (frames / 50). Sources: `tone` (lavfi
 * sine), `mp3` (44.1 kHz stereo, 192 kb/s: what most files are), `ogg` (Vorbis, 48 kHz), `wav`
 * (s16le 48 kHz stereo, nothing to decode or resample), `opus` (Ogg Opus, 128 kb/s in 20 ms
 * packets: with CHORUS_OPUS_PASSTHROUGH on, its packets go out as they are, nothing decoded or
 * encoded), `http` (the mp3 from a loopback HTTP server, through the engine's egress proxy). The
 * files are made with the engine's own ffmpeg at start: a tone under noise, so the encoder works
 * about as hard as on music.
 *
 * Before the streams, 20 plays one at a time on the idle engine time play → first frame for the
 * source kind (Opus passthrough's sniff and checks included). Prints a table, the first-frame
 * times and the frames encoded and passed through, and writes artifacts/engine-cost.json. The
 * engine's knobs come from the environment (CHORUS_OPUS_COMPLEXITY, CHORUS_ENCODER_THREADS,
 * CHORUS_OPUS_PASSTHROUGH, …).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveFfmpeg } from '../../src/shared/ffmpeg.js';
import { frameKey, sessionIdOfKey, WireDecoder } from '../../src/shared/protocol.js';
import { choiceFlag, defineCommand, numberFlag, parseCommandLine } from '../lib/cli.js';
import { descendantsOf } from '../../test/helpers/chorus-process.js';
import { readProc, readThreadsCpu, startEngineIn, type Spawned } from '../lib/procs.js';
import { summarizeProfile } from '../lib/profile.js';

/** dist-scripts/, where this file is built (as scripts/bench/engine-cost.js) beside src/. */
const BUILD = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ROOT = path.dirname(BUILD);
const CLI = path.join(BUILD, 'src/main/cli.js');
const SOURCES = ['tone', 'mp3', 'ogg', 'opus', 'wav', 'http'] as const;
type SourceKind = (typeof SOURCES)[number];
const PACES = ['realtime', 'burst'] as const;
const FRAME_MS = 20;
const PREBUFFER_FRAMES = 10;
/** Frames every stream must have delivered before the window opens: ffmpeg started, encoders warm. */
const WARM_FRAMES = 50;

const COMMAND = defineCommand({
  name: 'bench-engine-cost',
  usage: 'npm run bench:engine-cost -- [flags]',
  about: 'CPU per stream-second of the engine, split into ffmpeg, engine main thread and engine threads.',
  flags: {
    streams: { type: 'string', value: 'N', help: 'concurrent streams (20)' },
    source: { type: 'string', value: SOURCES.join('|'), help: 'what every stream plays (tone)' },
    pace: { type: 'string', value: PACES.join('|'), help: 'realtime: one frame per 20 ms per stream; burst: unlimited (realtime)' },
    seconds: { type: 'string', value: 'S', help: 'length of the measured window (10)' },
    profile: { type: 'string', value: 'DIR', help: 'run the engine under node --cpu-prof, profiles in DIR, summary printed' },
  },
  notes: 'The engine\'s knobs come from the environment, e.g. CHORUS_OPUS_COMPLEXITY=10 npm run bench:engine-cost -- --source mp3',
});

interface Args {
  streams: number;
  source: SourceKind;
  pace: (typeof PACES)[number];
  seconds: number;
  profile: string | undefined;
}

function readArgs(): Args {
  return parseCommandLine(COMMAND, (v) => ({
    streams: numberFlag('streams', v.streams ?? '20', 1, 2000, true),
    source: choiceFlag('source', v.source ?? 'tone', SOURCES),
    pace: choiceFlag('pace', v.pace ?? 'realtime', PACES),
    seconds: numberFlag('seconds', v.seconds ?? '10', 1, 600),
    profile: v.profile,
  }));
}

/** A file of `seconds` of a tone under noise, in the format a source kind reads. */
function makeMedia(dir: string, kind: SourceKind, seconds: number): string {
  const format = kind === 'http' ? 'mp3' : kind;
  const codec: Record<string, string[]> = {
    mp3: ['-ar', '44100', '-c:a', 'libmp3lame', '-b:a', '192k'],
    ogg: ['-ar', '48000', '-c:a', 'libvorbis', '-q:a', '5'],
    opus: ['-ar', '48000', '-c:a', 'libopus', '-b:a', '128k', '-frame_duration', '20'],
    wav: ['-ar', '48000', '-c:a', 'pcm_s16le'],
  };
  const file = path.join(dir, `bench.${format}`);
  const input = `sine=frequency=440:sample_rate=48000:duration=${seconds},aformat=channel_layouts=stereo[a];anoisesrc=color=pink:amplitude=0.2:sample_rate=48000:duration=${seconds},aformat=channel_layouts=stereo[b];[a][b]amix=inputs=2`;
  execFileSync(resolveFfmpeg().path, ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', input, '-ac', '2', ...codec[format]!, file]);
  return file;
}

/** Serves one file over loopback HTTP, with its length (no ranges: ffmpeg reads it through). */
async function serveFile(file: string): Promise<{ url: string; close(): void }> {
  const server = http.createServer((_, res) => {
    res.writeHead(200, { 'content-type': 'audio/mpeg', 'content-length': fs.statSync(file).size });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return { url: `http://127.0.0.1:${port}/${path.basename(file)}`, close: () => server.close() };
}

/** CPU seconds of the live ffmpeg children, by pid, and of the engine's reaped children. */
function ffmpegCpu(enginePid: number): { live: Map<number, number>; reaped: number } {
  const live = new Map<number, number>();
  for (const pid of descendantsOf(enginePid)) {
    const s = readProc(pid, 0);
    if (s) live.set(pid, s.cpuSeconds);
  }
  return { live, reaped: readProc(enginePid, 0)?.reapedChildrenCpuSeconds ?? 0 };
}

export interface CostResult {
  source: SourceKind;
  pace: string;
  streams: number;
  window_s: number;
  stream_seconds: number;
  /** CPU seconds per stream-second (= cores per stream), by part. */
  cpu_per_stream_s: { ffmpeg: number; engine_main: number; engine_threads: number; total: number };
  /** Streams one core carries at this cost. */
  streams_per_core: number;
  /** Play → first frame on the idle engine, FIRST_FRAME_PLAYS plays one after another (ms). */
  first_frame_ms: { p50: number; max: number };
  /** Frames the engine encoded and passed through as the source's own Opus, over the whole run. */
  frames_encoded: number;
  frames_passthrough: number;
}

/** Plays timed one at a time before the streams start. */
const FIRST_FRAME_PLAYS = 20;

const round1 = (ms: number) => Math.round(ms * 10) / 10;

async function run(args: Args): Promise<CostResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-cost-'));
  // Long enough that no stream ends inside the window, at either pace.
  const trackSeconds = args.pace === 'realtime' ? args.seconds + 40 : Math.max(60, args.seconds * 40);
  const media = args.source === 'tone' ? undefined : makeMedia(dir, args.source, trackSeconds);
  const server = args.source === 'http' ? await serveFile(media!) : undefined;
  const url = (i: number) =>
    args.source === 'tone' ? `tone:${200 + 10 * i}?seconds=${trackSeconds}` : server ? server.url : path.basename(media!);

  let engine: Spawned | undefined;
  try {
    const started = await startEngineIn(
      CLI,
      dir,
      { CHORUS_MAX_SESSIONS: String(args.streams + 16), CHORUS_REMOTE_ALLOW: '127.0.0.1' },
      args.profile ? { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', args.profile] } : {},
    );
    engine = started.engine;
    const { url: engineUrl, socketPath } = started;
    const pid = engine.pid;
    const socket = net.connect(socketPath);
    const frames = new Map<string, number>();
    const firstFrameAt = new Map<string, number>();
    const granted = new Map<string, number>();
    const failures: string[] = [];
    let total = 0;
    const decoder = new WireDecoder({
      frame: (buf, idStart) => {
        const id = sessionIdOfKey(frameKey(buf, idStart));
        frames.set(id, (frames.get(id) ?? 0) + 1);
        if (!firstFrameAt.has(id)) firstFrameAt.set(id, performance.now());
        total++;
      },
      event: (event) => {
        if (event.type === 'hello' || event.type === 'credit') return;
        if (event.type === 'ready') {
          const first = args.pace === 'burst' ? 1e9 : PREBUFFER_FRAMES;
          granted.set(event.session_id, first);
          socket.write(JSON.stringify({ type: 'credit', session_id: event.session_id, frames: first }) + '\n');
        }
        if (event.type === 'error' || event.type === 'finished') failures.push(`${event.session_id}: ${event.type === 'error' ? event.message : `finished after ${frames.get(event.session_id) ?? 0} frames`}`);
      },
      error: (err) => failures.push(`protocol error ${err.kind}`),
    });
    socket.on('data', (chunk: Buffer) => decoder.push(chunk));
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write(JSON.stringify({ type: 'credit', session_id: 'bench', frames: 1 }) + '\n');

    // The gateway's credit: every 20 ms, one frame per stream per 20 ms since its start.
    const startedAt = new Map<string, number>();
    const credit =
      args.pace === 'realtime'
        ? setInterval(() => {
            const now = performance.now();
            const lines: string[] = [];
            for (const [id, given] of granted) {
              const from = startedAt.get(id) ?? now;
              startedAt.set(id, from);
              const due = PREBUFFER_FRAMES + Math.floor((now - from) / FRAME_MS);
              if (due > given) {
                lines.push(JSON.stringify({ type: 'credit', session_id: id, frames: due - given }));
                granted.set(id, due);
              }
            }
            if (lines.length > 0) socket.write(lines.join('\n') + '\n');
          }, FRAME_MS)
        : undefined;

    // Play → first frame, one play at a time on the idle engine, each stopped at its first frame.
    const firstFrames: number[] = [];
    for (let i = 0; i < FIRST_FRAME_PLAYS; i++) {
      const id = `first-${i}`;
      const sent = performance.now();
      const r = await fetch(`${engineUrl}/session/${id}/play`, { method: 'POST', body: JSON.stringify({ url: url(i), format: 'opus' }) });
      if (!r.ok) throw new Error(`play ${id}: HTTP ${r.status} ${await r.text()}`);
      while (!firstFrameAt.has(id)) {
        if (failures.length > 0) throw new Error(failures.join('; '));
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      firstFrames.push(firstFrameAt.get(id)! - sent);
      granted.delete(id);
      await fetch(`${engineUrl}/session/${id}/stop`, { method: 'POST' });
    }
    firstFrames.sort((a, b) => a - b);

    const ids = Array.from({ length: args.streams }, (_, i) => `cost-${i}`);
    for (const [i, id] of ids.entries()) {
      const r = await fetch(`${engineUrl}/session/${id}/play`, { method: 'POST', body: JSON.stringify({ url: url(i), format: 'opus' }) });
      if (!r.ok) throw new Error(`play ${id}: HTTP ${r.status} ${await r.text()}`);
    }
    const deadline = performance.now() + 60_000;
    while (ids.some((id) => (frames.get(id) ?? 0) < WARM_FRAMES)) {
      if (failures.length > 0) throw new Error(failures.join('; '));
      if (performance.now() > deadline) throw new Error('streams did not start within 60 s');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }

    const ff0 = ffmpegCpu(pid);
    const th0 = readThreadsCpu(pid)!;
    const frames0 = total;
    const t0 = performance.now();
    await new Promise((resolve) => setTimeout(resolve, args.seconds * 1000));
    const ff1 = ffmpegCpu(pid);
    const th1 = readThreadsCpu(pid)!;
    const window = (performance.now() - t0) / 1000;
    const streamSeconds = (total - frames0) / (1000 / FRAME_MS);
    const metrics = await (await fetch(`${engineUrl}/metrics`)).text();
    const counter = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(metrics)?.[1] ?? 0);
    clearInterval(credit);
    socket.destroy();
    if (failures.length > 0) throw new Error(failures.join('; '));

    let ffmpeg = ff1.reaped - ff0.reaped;
    for (const [pid, cpu] of ff1.live) ffmpeg += cpu - (ff0.live.get(pid) ?? 0);
    const main = th1.main - th0.main;
    const threads = th1.others - th0.others;
    const per = (x: number) => Math.round((x / streamSeconds) * 1e5) / 1e5;
    const perStream = { ffmpeg: per(ffmpeg), engine_main: per(main), engine_threads: per(threads), total: per(ffmpeg + main + threads) };
    return {
      source: args.source,
      pace: args.pace,
      streams: args.streams,
      window_s: Math.round(window * 100) / 100,
      stream_seconds: Math.round(streamSeconds * 10) / 10,
      cpu_per_stream_s: perStream,
      streams_per_core: Math.round(1 / perStream.total),
      first_frame_ms: { p50: round1(firstFrames[Math.floor(firstFrames.length / 2)]!), max: round1(firstFrames.at(-1)!) },
      frames_encoded: counter('chorus_engine_frames_encoded_total'),
      frames_passthrough: counter('chorus_engine_frames_passthrough_total'),
    };
  } finally {
    server?.close();
    await engine?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const args = readArgs();
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build:scripts\` first`);
  const knobs = {
    CHORUS_OPUS_COMPLEXITY: process.env.CHORUS_OPUS_COMPLEXITY || '(default)',
    CHORUS_ENCODER_THREADS: process.env.CHORUS_ENCODER_THREADS || '(default)',
  };
  const load = os.loadavg()[0]!.toFixed(2);
  process.stderr.write(`engine cost: ${args.streams} × ${args.source}, ${args.pace}, ${args.seconds} s window; load ${load}\n`);
  const r = await run(args);
  const pct = (x: number) => `${(x * 100).toFixed(3)} %`;
  const header = ['source', 'pace', 'streams', 'stream-s', 'ffmpeg', 'engine main', 'engine threads', 'total', 'streams/core'];
  const row = [r.source, r.pace, String(r.streams), String(r.stream_seconds), pct(r.cpu_per_stream_s.ffmpeg), pct(r.cpu_per_stream_s.engine_main), pct(r.cpu_per_stream_s.engine_threads), pct(r.cpu_per_stream_s.total), String(r.streams_per_core)];
  const widths = header.map((h, c) => Math.max(h.length, row[c]!.length));
  process.stdout.write('CPU per stream, % of one core (CPU s per stream-second × 100)\n');
  for (const line of [header, widths.map((w) => '-'.repeat(w)), row]) {
    process.stdout.write(`| ${line.map((cell, c) => cell.padStart(widths[c]!)).join(' | ')} |\n`);
  }
  process.stdout.write(`play → first frame (${FIRST_FRAME_PLAYS} plays, idle engine): p50 ${r.first_frame_ms.p50} ms, max ${r.first_frame_ms.max} ms; frames encoded ${r.frames_encoded}, passed through ${r.frames_passthrough}\n`);
  const out = path.join(ROOT, 'artifacts', 'engine-cost.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const machine = { cpus: os.availableParallelism(), load_avg_1m: Number(load), node: process.version };
  const json = { when: new Date().toISOString(), machine, knobs, result: r };
  fs.writeFileSync(out, JSON.stringify(json, null, 2) + '\n');
  process.stdout.write(JSON.stringify(json) + '\n');
  if (args.profile) process.stdout.write(summarizeProfile(args.profile));
}

main().catch((err: unknown) => {
  process.stderr.write(`bench-engine-cost: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
