/**
 * `npm run bench:floor`: what a session thread costs against the least a Node worker that wakes
 * every 20 ms can cost, measured in one run. Each variant runs in a child process of its own:
 *
 *   wait      N bare workers, each looping on Atomics.wait(…, 20 ms)
 *   timeout   N bare workers, each on a drift-free setTimeout chain of 20 ms
 *   send      N bare workers, each sleeping in Atomics.wait to a drift-free 20 ms deadline and
 *             sending one RTP packet (12 + 320 bytes, its own SSRC, seq + 1 each) per wake on a
 *             connected UDP socket to the same receiver as the session variants, back to its
 *             event loop every 100 ms as session threads are: the least a thread that delivers a
 *             frame each 20 ms costs, and how punctually N such threads deliver on this machine
 *   thread    N chorus session slots (SlotPool, one session per thread), each paced from its ring
 *             and sent to one RTP target (a UDP socket of this process), the child's main thread
 *             keeping every ring fed as the gateway's demux would
 *   shared:k  the same sessions, k per thread
 *
 * CPU per session is the child's CPU outside its main thread (the workers, and V8's helper
 * threads that collect their garbage) over the window, divided by N; RSS per session is the
 * child's RSS growth from before its workers started, divided by N. The variants that send are
 * also timed at the receiver: how late each stream's packets arrive, as the load test's listeners
 * measure it. `--node-args` runs every variant's process with node or V8 flags. `--profile`
 * writes a CPU profile of every session thread and summarises where their time goes. Then (`--play-rate R`,
 * 20 by default) N plays arriving at R per second on thread-per-session pools as the gateway
 * runs them (its WorkerSlots, default prewarm, the bridge unless `--bridge 0`): ms from each
 * play to its first frame arriving at its RTP target, and whether its RTP stream stayed
 * continuous through its move from the bridge to its own thread.
 */
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { FRAME_MS, FRAME_SAMPLES } from '../../src/shared/audio.js';
import { loadConfig } from '../../src/shared/config.js';
import { Ring } from '../../src/shared/ring.js';
import { CONTROL_WORDS, type SessionInit } from '../../src/shared/worker-messages.js';
import { SlotPool } from '../../src/main/gateway/slot-pool.js';
import { sessionPools, WorkerSlots } from '../../src/main/gateway/worker-slots.js';
import { GatewaySession } from '../../src/main/gateway/session.js';
import { gatewayCounters } from '../../src/main/gateway/counters.js';
import type { EngineApi } from '../../src/main/gateway/engine-api.js';
import { Redactor } from '../../src/shared/redact.js';
import { parseRtpPacket } from '../../src/shared/rtp.js';
import { choiceFlag, defineCommand, numberFlag, parseCommandLine, UsageError } from '../lib/cli.js';
import { readProc, readThreadsCpu, spawnRole } from '../lib/procs.js';
import { summarizeProfile, type ProfileWindow } from '../lib/profile.js';
import { figuresTable } from '../lib/report.js';
import { anchorOffsets, percentilesOf, type Percentiles } from '../lib/stats.js';

const SELF = fileURLToPath(import.meta.url);
const FRAME_BYTES = 320;
const FEED_AHEAD = 25;

type BareVariant = 'wait' | 'timeout' | 'send';
type Variant = BareVariant | 'thread' | `shared:${number}`;
const isBare = (v: Variant): v is BareVariant => v === 'wait' || v === 'timeout' || v === 'send';
/** The variants whose threads send RTP to the receiver. */
const sends = (v: Variant) => v !== 'wait' && v !== 'timeout';

interface VariantResult {
  variant: Variant;
  sessions: number;
  windowS: number;
  /** % of one core per session (threads other than the child's main). */
  cpuPerSessionPct: number;
  /** MB of RSS per session, grown from before the workers started. */
  rssPerSessionMb: number;
  /** ms from the first worker asked for to the last one running, and per worker. */
  bootMs: number;
  /** RTP packets per second received from the variants that send (50 × N when all play). */
  packetsPerSecond?: number;
  /** How late their packets arrived, as the load test's listeners measure it (StreamArrivals). */
  latenessMs?: Percentiles;
}

const COMMAND = defineCommand({
  name: 'thread-floor',
  usage: 'npm run bench:floor -- [flags]',
  about: 'Bare 20 ms workers against chorus session threads with RTP targets: CPU and RSS per session, in one run.',
  flags: {
    sessions: { type: 'string', value: 'N', help: 'workers / sessions per variant (50)' },
    seconds: { type: 'string', value: 'S', help: 'measured window per variant (10)' },
    settle: { type: 'string', value: 'S', help: 'wait after the last session started, before the window (15)' },
    variants: { type: 'string', value: 'V[,V…]', help: 'of wait, timeout, send, thread, shared:<k> (wait,timeout,send,thread,shared:64)' },
    profile: { type: 'boolean', help: 'CPU-profile the session threads (artifacts/profiles/floor-…) and summarise' },
    json: { type: 'string', value: 'FILE', help: 'where the JSON goes (artifacts/thread-floor.json)' },
    'play-rate': { type: 'string', value: 'R', help: 'also time N plays arriving at R/s on a thread-per-session pool: play → first frame (0: skip; 20)' },
    bridge: { type: 'string', value: '0|1', help: 'the plays start on a shared bridge thread while their own boots, as the gateway does (1)' },
    'node-args': { type: 'string', value: 'ARGS', help: 'node and V8 flags for every variant\'s process, space-separated (to try a tuning)' },
    child: { type: 'string', value: 'VARIANT', help: '(internal) run one variant in this process' },
    'attach-rate': { type: 'string', value: 'R', help: '(internal) time plays at R/s in this process' },
  },
});

interface Options {
  sessions: number;
  seconds: number;
  settleS: number;
  variants: Variant[];
  profile: boolean;
  json: string;
  nodeArgs: string[];
  child?: Variant;
  playRate: number;
  bridge: boolean;
  attachRate?: number;
  rtpPort: number;
}

function readVariant(text: string): Variant {
  if (/^shared:\d+$/.test(text)) {
    numberFlag('variants', text.slice(7), 1, 1024, true);
    return text as Variant;
  }
  return choiceFlag('variants', text, ['wait', 'timeout', 'send', 'thread'] as const);
}

function readArgs(): Options {
  return parseCommandLine(COMMAND, (v) => {
    const variants = (v.variants ?? 'wait,timeout,send,thread,shared:64').split(',').map(readVariant);
    if (variants.length === 0) throw new UsageError('--variants: name at least one');
    return {
      sessions: numberFlag('sessions', v.sessions ?? '50', 1, 2000, true),
      seconds: numberFlag('seconds', v.seconds ?? '10', 1, 600),
      settleS: numberFlag('settle', v.settle ?? '15', 0, 600),
      variants,
      profile: v.profile ?? false,
      json: v.json ?? 'artifacts/thread-floor.json',
      nodeArgs: v['node-args']?.split(' ').filter(Boolean) ?? [],
      ...(v.child ? { child: readVariant(v.child) } : {}),
      playRate: numberFlag('play-rate', v['play-rate'] ?? '20', 0, 1000),
      bridge: numberFlag('bridge', v.bridge ?? '1', 0, 1, true) === 1,
      ...(v['attach-rate'] ? { attachRate: numberFlag('attach-rate', v['attach-rate'], 1, 1000) } : {}),
      rtpPort: Number(process.env.FLOOR_RTP_PORT ?? 0),
    };
  });
}

/** Bare workers: the least a thread that wakes every 20 ms costs. */
const BARE = {
  wait: `const w = new Int32Array(new SharedArrayBuffer(4)); require('node:worker_threads').parentPort.postMessage('up'); for (;;) Atomics.wait(w, 0, 0, 20);`,
  timeout: `const { parentPort } = require('node:worker_threads'); const { performance } = require('node:perf_hooks');
let next = performance.now() + 20; const tick = () => { next += 20; setTimeout(tick, Math.max(0, next - performance.now())); };
setTimeout(tick, 20); parentPort.postMessage('up');`,
  send: `const { parentPort, workerData } = require('node:worker_threads'); const { performance } = require('node:perf_hooks');
const w = new Int32Array(new SharedArrayBuffer(4)); const packet = Buffer.alloc(12 + 320);
packet[0] = 0x80; packet[1] = 120; packet.writeUInt32BE(workerData.index + 1, 8);
const socket = require('node:dgram').createSocket('udp4');
let next = performance.now() + 20; let seq = 0;
const run = () => { const away = performance.now() + 100;
  for (;;) { const ms = next - performance.now(); if (ms > 0) Atomics.wait(w, 0, 0, ms);
    packet.writeUInt16BE(seq, 2); packet.writeUInt32BE((seq * ${FRAME_SAMPLES}) >>> 0, 4); seq = (seq + 1) & 0xffff;
    socket.send(packet); next += 20; if (next > away) break; }
  setImmediate(run); };
socket.connect(workerData.port, '127.0.0.1', () => { parentPort.postMessage('up'); run(); });`,
};

async function startBare(kind: BareVariant, n: number, rtpPort: number): Promise<Worker[]> {
  const workers: Worker[] = [];
  for (let i = 0; i < n; i++) {
    const w = new Worker(BARE[kind], { eval: true, workerData: { port: rtpPort, index: i } });
    await new Promise<void>((resolve, reject) => {
      w.once('message', () => resolve());
      w.once('error', reject);
    });
    workers.push(w);
  }
  return workers;
}

const VOICE_UDP_SILENCE_MS = loadConfig({}).CHORUS_VOICE_UDP_SILENCE_MS;

/** A ring holding FEED_AHEAD copies of `frame`. */
function fedRing(frame: Uint8Array): Ring {
  const ring = Ring.create(Ring.capacityFor(FEED_AHEAD * 2, FRAME_BYTES));
  for (let f = 0; f < FEED_AHEAD; f++) ring.write(frame);
  return ring;
}

/** A session's start on a slot, as the gateway sends it: paced from `ring`, paused without a listener. */
function sessionInit(sid: number, sessionId: string, ring: Ring): SessionInit {
  return {
    sid,
    sessionId,
    format: 'opus',
    ring: ring.buffer,
    control: new SharedArrayBuffer(CONTROL_WORDS * 4),
    prebufferFrames: 3,
    noListener: 'pause',
    listeners: 0,
    nextSeq: 0,
    nextTimestamp: 0,
    voiceUdpSilenceMs: VOICE_UDP_SILENCE_MS,
  };
}

/** The child's side: sessions played from rings this thread keeps fed, sent by RTP to the parent. */
async function startSessions(variant: Variant, n: number, rtpPort: number): Promise<() => Promise<void>> {
  const k = variant === 'thread' ? 1 : Number(variant.slice(7));
  const pool = new SlotPool({ sessionsPerThread: k, prewarm: 0, prewarmMax: 0, maxSessions: n }, () => undefined);
  const frame = new Uint8Array(FRAME_BYTES).fill(0x55);
  const rings: Ring[] = [];
  for (let i = 0; i < n; i++) {
    const ring = fedRing(frame);
    rings.push(ring);
    const { slot } = await pool.attach(sessionInit(i, `floor-${i}`, ring));
    await slot.call((api) => api.addRtpSink({ host: '127.0.0.1', port: rtpPort }));
    await slot.call((api) => api.reset(false));
  }
  const feeder = setInterval(() => {
    for (const ring of rings) while (ring.records() < FEED_AHEAD) ring.write(frame);
  }, 10);
  return async () => {
    clearInterval(feeder);
    await pool.close();
  };
}

interface PlayTimes {
  /** ms from each play to its first frame at its RTP target. */
  firstFrameMs: number[];
  /** Sessions moved from the bridge to their own threads. */
  moves: number;
  /** Sessions whose RTP stream broke (a seq or timestamp step other than +1, +960). */
  broken: number;
}

/**
 * Plays arriving at `rate` per second through the gateway's WorkerSlots on a thread-per-session
 * pool with its default prewarm (2, up to 32), with the bridge or without: ms from each play to
 * its first frame arriving at its RTP target (this process's socket). Then, the plays that moved
 * having moved, whether each RTP stream ran on with no break.
 */
async function playLatency(n: number, rate: number, bridge: boolean): Promise<PlayTimes> {
  const config = loadConfig({ CHORUS_MAX_SESSIONS: String(n), CHORUS_BRIDGE_THREAD: bridge ? '1' : '0' });
  const { pool, bridge: shared } = sessionPools(config, () => undefined);
  let closing = false;
  const slots = new WorkerSlots(config, pool, { control: async () => undefined } as unknown as EngineApi, () => closing, shared);
  const rx = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => rx.bind(0, '127.0.0.1', resolve));
  // Room for a second of every stream while this thread is busy starting threads: a packet the
  // kernel drops here would look like a break in its stream.
  rx.setRecvBufferSize(4 * 2 ** 20);
  const played = new Array<number>(n).fill(0);
  const firstAt = new Array<number>(n).fill(0);
  const last = new Map<number, { seq: number; timestamp: number }>();
  const broken = new Set<number>();
  rx.on('message', (msg) => {
    const at = performance.now();
    const packet = parseRtpPacket(msg);
    if (!packet) return;
    const i = packet.ssrc - 1;
    if (firstAt[i] === 0) firstAt[i] = at;
    const prev = last.get(i);
    if (prev && (((packet.seq - prev.seq) & 0xffff) !== 1 || ((packet.timestamp - prev.timestamp) >>> 0) !== FRAME_SAMPLES)) broken.add(i);
    last.set(i, { seq: packet.seq, timestamp: packet.timestamp });
  });
  // The threads started ahead (and the bridge's) are booted before the first play, as in a gateway that has run a while.
  await sleep(3000);
  const frame = new Uint8Array(FRAME_BYTES).fill(0x55);
  const sessions: GatewaySession[] = [];
  const feeder = setInterval(() => {
    for (const session of sessions) {
      const ring = session.ring;
      while (ring && ring.records() < FEED_AHEAD) ring.write(frame);
    }
  }, 10);
  const plays: Promise<void>[] = [];
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    await sleep(Math.max(0, start + (i * 1000) / rate - performance.now()));
    const session = new GatewaySession(`play-${i}`, i, config.CHORUS_RING_MS, 'wait', gatewayCounters(), new Redactor(), config.CHORUS_WS_MESSAGE_RATE);
    session.keepRtpSink({ host: '127.0.0.1', port: rx.address().port, stream: { ssrc: i + 1, seqOffset: 0, timestampOffset: 0 } });
    sessions.push(session);
    played[i] = performance.now();
    plays.push(
      session.exclusive(async () => {
        session.beginTrack({ url: 'bench', format: 'opus', startAt: 0 });
        for (let f = 0; f < FEED_AHEAD; f++) session.ring!.write(frame);
        await slots.prepare(session, true, false);
      }),
    );
  }
  await Promise.all(plays);
  const until = performance.now() + 30_000;
  while ((firstAt.includes(0) || slots.bridgeCounters.sessions > 0) && performance.now() < until) await sleep(50);
  // A second more of every stream on its own thread.
  await sleep(1000);
  clearInterval(feeder);
  const result: PlayTimes = { firstFrameMs: firstAt.map((at, i) => (at === 0 ? Infinity : at - played[i]!)), moves: slots.bridgeCounters.moves, broken: broken.size };
  rx.close();
  closing = true;
  await Promise.all([pool.close(), shared?.close()]);
  return result;
}

async function child(opts: Options): Promise<void> {
  if (opts.attachRate) {
    const times = await playLatency(opts.sessions, opts.attachRate, opts.bridge);
    process.stdout.write(`floor-attach ${JSON.stringify(times)}\n`);
    process.exit(0);
  }
  const variant = opts.child!;
  const rss0 = process.memoryUsage.rss();
  const t0 = performance.now();
  let stop: () => Promise<void> = async () => undefined;
  if (isBare(variant)) await startBare(variant, opts.sessions, opts.rtpPort);
  else stop = await startSessions(variant, opts.sessions, opts.rtpPort);
  process.stdout.write(`floor-ready rss0=${rss0} bootMs=${(performance.now() - t0).toFixed(1)}\n`);
  // The parent measures, then ends this process: a clean exit, so that --cpu-prof writes its profiles.
  const keepAlive = setInterval(() => undefined, 60_000);
  process.once('SIGTERM', () => {
    clearInterval(keepAlive);
    void stop().finally(() => process.exit(0));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Each RTP stream's arrivals over the window, and their lateness as the load test's listeners
 * measure it (scripts/lib/listener-proc.ts): packet k of a stream (by seq from its first in the
 * window) is due at a + 20 ms · k, the anchor a being the schedule of its most punctual packet.
 */
class StreamArrivals {
  recording = false;
  /** Per SSRC: its first seq in the window, and each packet's arrival − 20 ms · k. */
  private readonly streams = new Map<number, { firstSeq: number; offsets: number[] }>();

  add(msg: Buffer, at: number): void {
    const packet = parseRtpPacket(msg);
    if (!packet) return;
    let stream = this.streams.get(packet.ssrc);
    if (!stream) this.streams.set(packet.ssrc, (stream = { firstSeq: packet.seq, offsets: [] }));
    stream.offsets.push(at - FRAME_MS * ((packet.seq - stream.firstSeq) & 0xffff));
  }

  lateness(): Percentiles {
    const values: number[] = [];
    for (const { offsets } of this.streams.values()) {
      const first = values.length;
      for (const offset of offsets) values.push(offset);
      anchorOffsets(values, first);
    }
    return percentilesOf(values);
  }
}

const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);

async function runVariant(opts: Options, variant: Variant, profileDir: string | undefined): Promise<VariantResult & { window: ProfileWindow }> {
  const rtp = dgram.createSocket('udp4');
  let packets = 0;
  const arrivals = new StreamArrivals();
  rtp.on('message', (msg) => {
    packets++;
    if (arrivals.recording) arrivals.add(msg, performance.now());
  });
  await new Promise<void>((resolve) => rtp.bind(0, '127.0.0.1', resolve));
  const nodeArgs = [...opts.nodeArgs, ...(profileDir && !isBare(variant) ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [])];
  const proc = spawnRole(`floor-${variant}`, [SELF, '--child', variant, '--sessions', String(opts.sessions)], { ...process.env, FLOOR_RTP_PORT: String(rtp.address().port) }, { nodeArgs });
  try {
    const m = await proc.waitFor(/floor-ready rss0=(\d+) bootMs=([\d.]+)/, 120_000 + opts.sessions * 2000);
    const rss0 = Number(m[1]);
    const bootMs = Number(m[2]);
    // V8's memory reducer runs a few full collections on every new thread in its first ~10 s
    // (~20 ms of CPU each thread): a window that starts after them measures the steady state.
    await sleep(opts.settleS * 1000);
    const cpu0 = readThreadsCpu(proc.pid)!;
    const p0 = packets;
    const t0 = performance.now();
    const fromUs = monotonicUs();
    arrivals.recording = true;
    await sleep(opts.seconds * 1000);
    arrivals.recording = false;
    const cpu1 = readThreadsCpu(proc.pid)!;
    const windowS = (performance.now() - t0) / 1000;
    const rss = readProc(proc.pid, 0)!.rssBytes;
    const result: VariantResult & { window: ProfileWindow } = {
      window: { fromUs, toUs: monotonicUs() },
      variant,
      sessions: opts.sessions,
      windowS,
      cpuPerSessionPct: ((cpu1.others - cpu0.others) / windowS / opts.sessions) * 100,
      rssPerSessionMb: (rss - rss0) / opts.sessions / 2 ** 20,
      bootMs,
    };
    if (sends(variant)) {
      result.packetsPerSecond = (packets - p0) / windowS;
      result.latenessMs = arrivals.lateness();
    }
    return result;
  } finally {
    await proc.stop();
    rtp.close();
  }
}

/** The plays phase, in a child process of its own. */
async function timePlays(opts: Options): Promise<PlayTimes> {
  const proc = spawnRole('floor-plays', [SELF, '--attach-rate', String(opts.playRate), '--sessions', String(opts.sessions), '--bridge', opts.bridge ? '1' : '0'], process.env);
  try {
    const m = await proc.waitFor(/floor-attach (\{.*\})/, 120_000 + opts.sessions * 2000);
    return JSON.parse(m[1]!, (_key, value: unknown) => (value === null ? Infinity : value)) as PlayTimes;
  } finally {
    await proc.stop();
  }
}

async function main(): Promise<void> {
  const opts = readArgs();
  if (opts.child || opts.attachRate) return child(opts);
  const profileDir = opts.profile ? path.resolve('artifacts/profiles', `floor-${new Date().toISOString().replace(/[:.]/g, '-')}`) : undefined;
  if (profileDir) fs.mkdirSync(profileDir, { recursive: true });
  const results: VariantResult[] = [];
  const windows: ProfileWindow[] = [];
  for (const variant of opts.variants) {
    process.stderr.write(`thread-floor: ${variant}, ${opts.sessions} sessions…\n`);
    const { window, ...result } = await runVariant(opts, variant, profileDir);
    results.push(result);
    if (!isBare(variant)) windows.push(window);
  }
  let firstFrame: { plays: number; perSecond: number; bridge: boolean; p50Ms: number; p99Ms: number; maxMs: number; moves: number; broken: number } | undefined;
  if (opts.playRate > 0) {
    process.stderr.write(`thread-floor: ${opts.sessions} plays at ${opts.playRate}/s${opts.bridge ? ', bridge' : ', no bridge'}…\n`);
    const times = await timePlays(opts);
    const ms = [...times.firstFrameMs].sort((a, b) => a - b);
    const at = (q: number) => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))]!;
    firstFrame = { plays: ms.length, perSecond: opts.playRate, bridge: opts.bridge, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: ms[ms.length - 1]!, moves: times.moves, broken: times.broken };
  }
  const floorOf = (kind: BareVariant) => results.find((r) => r.variant === kind)?.cpuPerSessionPct;
  const ratio = (r: VariantResult, kind: BareVariant) => {
    const floor = floorOf(kind);
    return floor ? (r.cpuPerSessionPct / floor).toFixed(2) : '-';
  };
  console.log(`\nThread floor: ${opts.sessions} per variant, ${opts.seconds} s window after ${opts.settleS} s, ${os.cpus().length} cores, node ${process.version}\n`);
  console.log(
    figuresTable(
      results.map((r) => ({
        variant: r.variant,
        'CPU %/session': r.cpuPerSessionPct,
        '× wait floor': ratio(r, 'wait'),
        '× timeout floor': ratio(r, 'timeout'),
        '× send floor': ratio(r, 'send'),
        'RSS MB/session': r.rssPerSessionMb,
        'start ms/session': r.bootMs / r.sessions,
        'RTP pkt/s': r.packetsPerSecond === undefined ? '-' : Math.round(r.packetsPerSecond),
        'late p50/p99/max ms': r.latenessMs ? `${r.latenessMs.p50.toFixed(1)}/${r.latenessMs.p99.toFixed(1)}/${r.latenessMs.max.toFixed(1)}` : '-',
      })),
    ),
  );
  if (firstFrame) {
    const f = firstFrame;
    console.log(
      `\nPlay → first frame at its RTP target (thread per session, prewarm 2 up to 32, ${f.bridge ? 'bridge' : 'no bridge'}), ${f.plays} plays at ${f.perSecond}/s: ` +
        `p50 ${f.p50Ms.toFixed(1)} ms, p99 ${f.p99Ms.toFixed(1)} ms, max ${f.maxMs.toFixed(1)} ms; ${f.moves} moved from the bridge, ${f.broken} RTP streams broken`,
    );
  }
  const out = {
    date: new Date().toISOString(),
    ...(firstFrame ? { firstFrame } : {}),
    machine: { cpus: os.cpus().length, node: process.version },
    results: results.map((r) => ({ ...r, vsWaitFloor: Number(ratio(r, 'wait')) || null, vsTimeoutFloor: Number(ratio(r, 'timeout')) || null, vsSendFloor: Number(ratio(r, 'send')) || null })),
  };
  fs.mkdirSync(path.dirname(path.resolve(opts.json)), { recursive: true });
  fs.writeFileSync(opts.json, JSON.stringify(out, null, 2));
  console.log(`\nJSON: ${opts.json}`);
  // The measured windows only: not the threads' start, nor their end.
  if (profileDir) console.log(`\n${summarizeProfile(profileDir, 30, { fromUs: Math.min(...windows.map((w) => w.fromUs)), toUs: Math.max(...windows.map((w) => w.toUs)) })}`);
}

await main();
