/**
 * One load run: an engine (synthetic or real), a gateway (chorus in thread or shared mode, or the
 * baseline), and listener processes for N sessions, on loopback; measured over a window, then
 * torn down. Everything it starts it stops, by pid, even when a step fails.
 *
 *   1. engine      synthetic (scripts/lib/synthetic-engine-main.ts; --seed for the baseline,
 *                  like the seed engine) or real (`chorus engine`: ffmpeg + Opus)
 *   2. gateway     `chorus gateway` from dist/main/cli.js, or the baseline (baseline-gateway.ts);
 *                  its idle RSS is read once it is connected and its threads are pre-warmed
 *   3. listeners   P child processes (listener-proc.ts) connect every session's listener first
 *                  (a session nobody hears autopauses), then play at a bounded rate
 *   4. warm-up     until every session has its first frame, then SETTLE_MS more
 *   5. window      `durationS` of measurement: /proc every second (gateway RSS, CPU, threads;
 *                  the load generator's CPU too), a progress line, faults/stalls/pauses on cue
 *   6. report      lateness per window from the listeners; counters from GET /sessions,
 *                  /metrics and the engine; the gateway must still answer /health
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SCHEMA } from '../../src/shared/config.js';
import type { FromListener, ListenerSessionSpec, ProgressReport, SessionReport, ToListener, WindowSpec } from './listener-proc.js';
import { readMachineCpu, readProc, readThreadsCpu, readTree, spawnRole, type ProcSample, type Spawned } from './procs.js';
import { LatencyHistogram, percentilesOf, type Percentiles } from './stats.js';
import { toneHz, toneUrl } from './tones.js';
import { WsClient } from './ws-client.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '../../..');
/** The chorus build to measure: dist/main/cli.js, or LOADTEST_CLI (an A/B copy of a build). */
export const CLI = process.env.LOADTEST_CLI ? path.resolve(process.env.LOADTEST_CLI) : path.join(REPO_ROOT, 'dist/main/cli.js');
const SYNTHETIC_MAIN = path.join(HERE, 'synthetic-engine-main.js');
const BASELINE_MAIN = path.join(HERE, 'baseline-gateway-main.js');
const LISTENER_MAIN = path.join(HERE, 'listener-proc.js');
/** A run during which other processes used more than this (per cent of one core) is disturbed. */
export const DISTURBED_PERCENT = 25;
/** After the last session's first frame, before the window opens. */
const SETTLE_MS = 2000;

export type Mode = { kind: 'thread' } | { kind: 'shared'; k: number } | { kind: 'baseline' };
export const FAULTS = ['engine-restart', 'garbage', 'worker-crash', 'main-block', 'stall-10', 'pause-10'] as const;
export type FaultName = (typeof FAULTS)[number];

export function modeName(m: Mode): string {
  return m.kind === 'shared' ? `shared:${m.k}` : m.kind;
}

export function parseMode(text: string): Mode {
  if (text === 'thread') return { kind: 'thread' };
  if (text === 'baseline') return { kind: 'baseline' };
  const m = /^shared:(\d+)$/.exec(text);
  if (m && Number(m[1]) >= 1) return { kind: 'shared', k: Number(m[1]) };
  throw new Error(`--mode ${text}: expected thread, shared:<k> or baseline`);
}

/** What the load test's flags set for every run (the rest of RunOptions varies per run). */
export interface LoadSettings {
  engine: 'synthetic' | 'real';
  listeners: 'ws' | 'rtp';
  /** Fraction of listeners that stop reading for stallMs, a third into the window. */
  stall: number;
  stallMs: number;
  /** Fraction of sessions paused for pauseMs, a third into the window, then resumed. */
  pause: number;
  pauseMs: number;
  /** Plays a second, all listener processes together. */
  playRate: number;
  decodeChecksPerSec: number;
  /** Extra CHORUS_* variables for the gateway (only those this build knows are passed). */
  env: Record<string, string>;
}

export const DEFAULT_LOAD: Readonly<LoadSettings> = {
  engine: 'synthetic',
  listeners: 'ws',
  stall: 0,
  stallMs: 5000,
  pause: 0,
  pauseMs: 3000,
  playRate: 100,
  decodeChecksPerSec: 4,
  env: {},
};

export interface RunOptions extends LoadSettings {
  mode: Mode;
  sessions: number;
  durationS: number;
  fault?: FaultName;
  listenerProcs: number;
  /** Sessions the headline lateness covers (a control run gets its fault run's); default: the untouched. */
  headlineIds?: string[];
  /** node --cpu-prof on the gateway, profiles into this directory. */
  profileDir?: string;
  /** Sample RSS every this many ms into the result (soak). */
  rssEveryMs?: number;
  label?: string;
  /** The test's clock origin (process.hrtime.bigint()), shared with every child. */
  base: bigint;
  log: (line: string) => void;
  progress: (line: string) => void;
}

export interface ProcFigures {
  rssIdleMB: number;
  rssEndMB: number;
  rssPeakMB: number;
  rssPerSessionMB: number;
  /** Per cent of one core over the window. */
  cpuPercent: number;
  cpuPerSessionPercent: number;
  /** The main thread's share of cpuPercent (the rest is worker threads and libuv's). */
  mainThreadCpuPercent: number;
  threads: number;
}

export interface FaultOutcome {
  name: FaultName;
  /** What was done and when (ms of the test clock). */
  events: { at: number; what: string }[];
  touched: string[];
  /** The window the criterion compares with the control run's 'main' window. */
  compareWindow: string;
  /** Compare every session (the fault touches all, the window leaves it out), not only the untouched. */
  compareAll?: boolean;
  details: Record<string, unknown>;
}

export interface RunResult {
  label: string;
  mode: string;
  sessions: number;
  durationS: number;
  engine: string;
  listeners: string;
  startedAt: string;
  /** Lateness over `headlineIds` (by default the sessions no stall, pause or fault touched) in `headlineWindow`. */
  lateness: Percentiles;
  headlineWindow: string;
  headlineIds: string[];
  touched: string[];
  /** Lateness of touched sessions (stalled listeners; paused sessions' own segments). */
  latenessTouched?: Percentiles;
  underruns: number;
  underrunEvents: number;
  lost: { seqGaps: number; contentMissing: number; total: number };
  /** Seq jumps where one play ends and the next begins (not counted as lost; see listener-proc.ts). */
  boundaryJumps: number;
  seqDupes: number;
  misrouted: number;
  decoded: { checks: number; failures: number; sessionsChecked: number };
  playToFirstMs: Percentiles;
  resumeGapMs?: Percentiles;
  gateway: ProcFigures;
  loadgen: {
    listenerCpuPercent: number;
    engineCpuPercent: number;
    /** Busy share of all cores (100 = every core busy). */
    machineBusyPercent: number;
    /** CPU used by processes outside this test (per cent of one core): another run, a build. */
    otherCpuPercent: number;
    listenerProcs: number;
  };
  gatewayCounters: Record<string, number>;
  engineCounters: Record<string, number>;
  servingAfter: boolean;
  /** Other processes used more than DISTURBED_PERCENT of a core during the window. */
  disturbed: boolean;
  errors: string[];
  playFailures: number;
  fault?: FaultOutcome;
  rssSeries?: { atS: number; rssMB: number }[];
  /** Per session, per window: lateness percentiles (for fault comparisons). */
  perSession: Record<string, Record<string, { p50: number; p99: number; max: number; count: number }>>;
  /** Every session's counters that are not zero (lost, misrouted, errors). */
  anomalies: Partial<SessionReport>[];
  windows: Record<string, Percentiles>;
  /** Second by second over the main window (every session): lateness p50/p99/max. */
  timeline: { s: number; frames: number; p50: number; p99: number; max: number }[];
  /** Directory of the gateway's .cpuprofile files (written as it exits). */
  profile?: string;
}

interface Ctx {
  opts: RunOptions;
  now: () => number;
  engine?: Spawned;
  engineUrl: string;
  enginePort: number;
  engineArgs: string[];
  engineEnv: NodeJS.ProcessEnv;
  gateway?: Spawned;
  gatewayUrl: string;
  listeners: { proc: Spawned; ids: string[]; waiting: ((m: FromListener) => boolean)[]; progress?: ProgressReport }[];
  tmp: string;
  socketPath: string;
}

/** `fraction` of the sessions, spread over them (and so over listener processes and threads). */
export function pickSessions(sessionIds: string[], fraction: number, offset: number): string[] {
  const n = sessionIds.length;
  const count = Math.max(1, Math.round(fraction * n));
  return Array.from({ length: count }, (_, i) => sessionIds[(offset + Math.floor((i * n) / count)) % n]!);
}

/**
 * The sessions a run's headline lateness covers: those no stall, pause or fault touches — or
 * all of them for a fault that touches every session at one known moment (main-block,
 * engine-restart: the window leaves that moment out). A control run is given the same list.
 */
export function headlineSessions(sessionIds: string[], fault: FaultName | undefined, stall: number, pause: number): string[] {
  if (fault === 'main-block' || fault === 'engine-restart') return sessionIds;
  const touched = new Set<string>();
  const stallFraction = fault === 'stall-10' ? 0.1 : stall;
  const pauseFraction = fault === 'pause-10' ? 0.1 : pause;
  if (stallFraction > 0) for (const id of pickSessions(sessionIds, stallFraction, 0)) touched.add(id);
  if (pauseFraction > 0) for (const id of pickSessions(sessionIds, pauseFraction, 1)) touched.add(id);
  if (fault === 'worker-crash') touched.add(sessionIds[0]!);
  return sessionIds.filter((id) => !touched.has(id));
}

export function ids(n: number): string[] {
  const width = String(n - 1).length;
  return Array.from({ length: n }, (_, i) => `lt-${String(i).padStart(width, '0')}`);
}

let known: Set<string> | undefined;

/** The CHORUS_* variables the built gateway (dist/main/cli.js) knows, from `chorus env`. */
function knownVars(): Set<string> {
  if (!known) {
    try {
      const text = execFileSync(process.execPath, [CLI, 'env'], { encoding: 'utf8', env: envFor({}, false) });
      known = new Set(text.split('\n').map((l) => l.split(/\s+/)[0]!).filter((n) => n.startsWith('CHORUS_')));
    } catch {
      known = new Set(Object.keys(SCHEMA));
    }
  }
  return known;
}

function envFor(extra: Record<string, string>, check = true): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CHORUS_')) env[k] = v;
  for (const [k, v] of Object.entries(extra)) {
    // Only what the built chorus knows: an unknown CHORUS_* variable stops it at start.
    if (!check || knownVars().has(k)) env[k] = v;
  }
  return env;
}

/** The limits a load test lifts (when this build has them) so that only capacity is measured. */
function liftedLimits(n: number): Record<string, string> {
  return {
    CHORUS_MAX_SESSIONS: String(Math.max(256, n + 16)),
    CHORUS_LOG_LEVEL: 'info',
  };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function getJson(url: string, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${text.slice(0, 200)}`);
  return JSON.parse(text) as Record<string, unknown>;
}

async function post(url: string, timeoutMs = 15_000): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { method: 'POST', signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, text: await res.text() };
}

function parseMetrics(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(\{[^}]*\})?\s+([-\d.eE+]+)$/.exec(line.trim());
    if (m) out[m[1]! + (m[2] ?? '')] = Number(m[3]);
  }
  return out;
}

async function startEngine(ctx: Ctx): Promise<void> {
  const { opts } = ctx;
  const name = 'engine';
  if (opts.engine === 'synthetic') {
    ctx.engine = spawnRole(name, [SYNTHETIC_MAIN, ...ctx.engineArgs], ctx.engineEnv);
    const m = await ctx.engine.waitFor(/synthetic-engine ready http=(\S+)/, 120_000);
    ctx.engineUrl = m[1]!;
  } else {
    ctx.engine = spawnRole(name, [CLI, 'engine'], ctx.engineEnv);
    const m = await ctx.engine.waitFor(/engine ready http=(\S+)/, 30_000);
    ctx.engineUrl = m[1]!;
  }
  ctx.enginePort = Number(new URL(ctx.engineUrl).port);
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 100): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

function toListeners(ctx: Ctx, msg: ToListener, filter?: (ids: string[]) => ToListener | undefined): void {
  for (const l of ctx.listeners) {
    const m = filter ? filter(l.ids) : msg;
    if (m) l.proc.child.send(m);
  }
}

/** Waits for one message matching `match` from every listener process (or those given). */
function fromListeners<T extends FromListener>(
  ctx: Ctx,
  match: (m: FromListener) => m is T,
  timeoutMs: number,
  which = ctx.listeners,
): Promise<T[]> {
  return Promise.all(
    which.map(
      (l) =>
        new Promise<T>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`listener process ${l.proc.name} did not answer within ${timeoutMs} ms`)), timeoutMs);
          l.waiting.push((m) => {
            if (m.ev === 'fatal') {
              clearTimeout(timer);
              reject(new Error(`${l.proc.name}: ${m.message}`));
              return true;
            }
            if (!match(m)) return false;
            clearTimeout(timer);
            resolve(m);
            return true;
          });
        }),
    ),
  );
}

function progressTotals(ctx: Ctx): ProgressReport & { recentP99: number } {
  const t = { frames: 0, seqGaps: 0, contentMissing: 0, misrouted: 0, decodedFailures: 0, decodedChecks: 0, withFrames: 0, sessions: 0, recentP99: 0 };
  for (const l of ctx.listeners) {
    const p = l.progress;
    if (!p) continue;
    t.frames += p.frames;
    t.seqGaps += p.seqGaps;
    t.contentMissing += p.contentMissing;
    t.misrouted += p.misrouted;
    t.decodedFailures += p.decodedFailures;
    t.decodedChecks += p.decodedChecks;
    t.withFrames += p.withFrames;
    t.sessions += p.sessions;
    t.recentP99 = Math.max(t.recentP99, p.recent.p99);
  }
  return { ...t, recent: { count: 0, p50: 0, p99: t.recentP99, p999: 0, max: 0, mean: 0 } };
}

export async function runOnce(opts: RunOptions): Promise<RunResult> {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
  const baseline = opts.mode.kind === 'baseline';
  if (baseline && opts.listeners === 'rtp') throw new Error('the baseline serves WebSocket listeners only (the seed had no RTP)');
  const label = opts.label ?? `${modeName(opts.mode)} N=${opts.sessions}`;
  const now = () => Number(process.hrtime.bigint() - opts.base) / 1e6;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-load-'));
  const socketPath = path.join(tmp, 'engine.sock');
  const sessionIds = ids(opts.sessions);
  const toneSeconds = Math.ceil(opts.sessions / opts.playRate + opts.durationS + 180);
  const specs: ListenerSessionSpec[] = sessionIds.map((id, i) => ({ id, hz: toneHz(i), url: toneUrl(toneHz(i), toneSeconds) }));
  const limits = liftedLimits(opts.sessions);
  const ctx: Ctx = {
    opts,
    now,
    engineUrl: '',
    enginePort: 0,
    engineArgs:
      opts.engine === 'synthetic'
        ? ['--socket', socketPath, '--prepare', String(opts.sessions), ...(baseline ? ['--seed'] : [])]
        : [],
    engineEnv:
      opts.engine === 'synthetic'
        ? envFor({})
        : envFor({ CHORUS_SOCKET: socketPath, CHORUS_ENGINE_PORT: '0', CHORUS_MAX_SESSIONS: limits.CHORUS_MAX_SESSIONS!, CHORUS_LOG_LEVEL: 'info' }),
    gatewayUrl: '',
    listeners: [],
    tmp,
    socketPath,
  };
  const errors: string[] = [];
  const samples: { gw: ProcSample[]; engine: ProcSample[]; listeners: ProcSample[][]; machine: { at: number; busy: number; total: number }[] } = {
    gw: [],
    engine: [],
    listeners: [],
    machine: [],
  };
  let sampler: NodeJS.Timeout | undefined;
  let profileFile: string | undefined;
  try {
    // 0. a quiet machine: another engineer's test run would be measured as ours
    await waitForQuiet(opts);
    // 1. engine
    opts.log(`${label}: starting the ${opts.engine} engine${opts.engine === 'synthetic' ? ` (tone loops for ${opts.sessions} sessions)` : ''}`);
    await startEngine(ctx);
    // Restarts reuse the port, so the gateway's CHORUS_ENGINE_URL stays right.
    if (opts.engine === 'synthetic') ctx.engineArgs.push('--port', String(ctx.enginePort));

    // 2. gateway
    if (baseline) {
      ctx.gateway = spawnRole('baseline', [BASELINE_MAIN, '--socket', socketPath, '--engine-url', ctx.engineUrl], envFor({}));
      ctx.gatewayUrl = (await ctx.gateway.waitFor(/baseline ready http=(\S+)/, 30_000))[1]!;
    } else {
      const env = envFor({
        ...limits,
        CHORUS_SOCKET: socketPath,
        CHORUS_ENGINE_URL: ctx.engineUrl,
        CHORUS_PORT: '0',
        CHORUS_HOST: '127.0.0.1',
        CHORUS_SESSIONS_PER_THREAD: String(opts.mode.kind === 'shared' ? opts.mode.k : 1),
        CHORUS_DEBUG_ENDPOINTS: opts.fault === 'worker-crash' || opts.fault === 'main-block' ? '1' : '0',
        ...opts.env,
      });
      const nodeArgs: string[] = [];
      if (opts.profileDir) {
        fs.mkdirSync(opts.profileDir, { recursive: true });
        nodeArgs.push('--cpu-prof', '--cpu-prof-dir', opts.profileDir);
      }
      ctx.gateway = spawnRole('gateway', [CLI, 'gateway'], env, { nodeArgs });
      ctx.gatewayUrl = (await ctx.gateway.waitFor(/gateway ready http=(\S+)/, 30_000))[1]!;
    }
    await waitFor('the gateway to connect to the engine', async () => (await getJson(`${ctx.gatewayUrl}/health`)).engineConnected === true, 20_000);
    await sleep(1500); // pre-warmed threads boot
    const idle = readProc(ctx.gateway.pid, now());
    if (!idle) throw new Error('gateway exited');

    // 3. listeners
    const procs = Math.max(1, Math.min(opts.listenerProcs, opts.sessions));
    for (let p = 0; p < procs; p++) {
      const share = specs.filter((_, i) => i % procs === p);
      // LOADTEST_LISTENER_PROFILE=dir profiles the load generator's own listeners (to keep them cheap).
      const profile = process.env.LOADTEST_LISTENER_PROFILE;
      const proc = spawnRole(`listeners-${p}`, [LISTENER_MAIN], envFor({}), {
        ipc: true,
        ...(profile ? { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profile] } : {}),
      });
      const entry = { proc, ids: share.map((s) => s.id), waiting: [] as ((m: FromListener) => boolean)[], progress: undefined as ProgressReport | undefined };
      proc.child.on('message', (m: FromListener) => {
        if (m.ev === 'progress') entry.progress = m.progress;
        const i = entry.waiting.findIndex((w) => w(m));
        if (i >= 0) entry.waiting.splice(i, 1);
      });
      ctx.listeners.push(entry);
      proc.child.send({
        cmd: 'init',
        base: String(opts.base),
        gatewayUrl: ctx.gatewayUrl,
        ...(opts.engine === 'synthetic' ? { engineUrl: ctx.engineUrl } : {}),
        kind: opts.listeners,
        sessions: share,
        decodeChecksPerSec: opts.decodeChecksPerSec,
      } satisfies ToListener);
    }
    await fromListeners(ctx, (m): m is Extract<FromListener, { ev: 'ready' }> => m.ev === 'ready', 120_000);
    opts.log(`${label}: ${opts.sessions} ${opts.listeners} listeners connected in ${procs} process(es) to ${ctx.gatewayUrl} (pid ${ctx.gateway.pid}); playing at ${opts.playRate}/s`);

    sampler = setInterval(() => {
      const at = now();
      const gw = ctx.gateway && readProc(ctx.gateway.pid, at);
      if (gw) samples.gw.push(gw);
      // The real engine's ffmpeg processes are its children: counted with it.
      const en = ctx.engine && (opts.engine === 'real' ? readTree(ctx.engine.pid, at) : readProc(ctx.engine.pid, at));
      if (en) samples.engine.push(en);
      samples.listeners.push(ctx.listeners.map((l) => readProc(l.proc.pid, at)).filter((s): s is ProcSample => !!s));
      samples.machine.push({ at, ...readMachineCpu() });
    }, 1000);

    // 4. plays, then every session's first frame
    const rampStart = now();
    const played = fromListeners(ctx, (m): m is Extract<FromListener, { ev: 'played' }> => m.ev === 'played', 60_000 + (opts.sessions / opts.playRate) * 4000);
    toListeners(ctx, { cmd: 'play', ratePerSec: opts.playRate / procs });
    const rampTicker = setInterval(() => {
      const p = progressTotals(ctx);
      opts.progress(`${label}: warm-up ${((now() - rampStart) / 1000).toFixed(0)} s, ${p.withFrames}/${opts.sessions} sessions playing`);
    }, 1000);
    let playFailures = 0;
    try {
      const answers = await played;
      for (const a of answers) {
        playFailures += a.failed;
        if (a.firstError) errors.push(`play: ${a.firstError}`);
      }
      if (playFailures > 0) opts.log(`${label}: ${playFailures} plays failed, e.g. ${answers.find((a) => a.firstError)?.firstError}`);
      await waitFor(
        'every session to get its first frame',
        () => progressTotals(ctx).withFrames >= opts.sessions - playFailures,
        30_000 + opts.sessions * 20,
        200,
      ).catch((err: Error) => errors.push(err.message));
    } finally {
      clearInterval(rampTicker);
    }
    await sleep(SETTLE_MS);

    // 5. the window
    const windowStart = now();
    const mainCpuStart = readThreadsCpu(ctx.gateway.pid)?.main ?? 0;
    const durationMs = opts.durationS * 1000;
    const touched = new Set<string>();
    const fault: FaultOutcome | undefined = opts.fault ? { name: opts.fault, events: [], touched: [], compareWindow: 'main', details: {} } : undefined;
    const note = (what: string) => {
      fault?.events.push({ at: now(), what });
      opts.log(`${label}: ${what}`);
    };
    const windows: WindowSpec[] = [];
    const actions: Promise<void>[] = [];
    const third = windowStart + durationMs / 3;
    const pick = (fraction: number, offset: number) => pickSessions(sessionIds, fraction, offset);
    const stallFraction = opts.fault === 'stall-10' ? 0.1 : opts.stall;
    const pauseFraction = opts.fault === 'pause-10' ? 0.1 : opts.pause;
    let resumeGaps: number[] | undefined;
    const at = (t: number, fn: () => Promise<void>) =>
      actions.push(
        (async () => {
          await sleep(Math.max(0, t - now()));
          await fn();
        })().catch((err: Error) => {
          errors.push(err.message);
          note(`failed: ${err.message}`);
        }),
      );
    if (stallFraction > 0) {
      const stalled = pick(stallFraction, 0);
      for (const id of stalled) touched.add(id);
      at(third, async () => {
        note(`${stalled.length} listeners stop reading for ${opts.stallMs} ms`);
        const done = fromListeners(ctx, (m): m is Extract<FromListener, { ev: 'done' }> => m.ev === 'done' && m.cmd === 'stall', opts.stallMs + 30_000, ctx.listeners.filter((l) => l.ids.some((id) => stalled.includes(id))));
        toListeners(ctx, { cmd: 'stall', ids: [], ms: 0 }, (mine) => {
          const subset = mine.filter((id) => stalled.includes(id));
          return subset.length > 0 ? { cmd: 'stall', ids: subset, ms: opts.stallMs } : undefined;
        });
        await done;
        note('stalled listeners read again');
      });
    }
    if (pauseFraction > 0) {
      const paused = pick(pauseFraction, 1);
      for (const id of paused) touched.add(id);
      resumeGaps = [];
      at(third, async () => {
        await control(ctx, 'pause', paused);
        note(`${paused.length} sessions paused for ${opts.pauseMs} ms`);
        await sleep(opts.pauseMs);
        await control(ctx, 'resume', paused);
        note(`${paused.length} sessions resumed`);
      });
    }
    if (opts.fault && fault) await scheduleFault(ctx, fault, opts.fault, { at, note, third, windowStart, durationMs, sessionIds, touched, windows });

    let lastLine = 0;
    const windowEnd = windowStart + durationMs;
    let rssSeries: { atS: number; rssMB: number }[] | undefined;
    let nextRss = windowStart;
    while (now() < windowEnd) {
      await sleep(Math.min(250, Math.max(0, windowEnd - now())));
      if (opts.rssEveryMs && now() >= nextRss && ctx.gateway) {
        const s = readProc(ctx.gateway.pid, now());
        if (s) (rssSeries ??= []).push({ atS: (s.at - windowStart) / 1000, rssMB: s.rssBytes / 2 ** 20 });
        nextRss += opts.rssEveryMs;
      }
      if (now() - lastLine >= 1000) {
        lastLine = now();
        const p = progressTotals(ctx);
        const gw = samples.gw.at(-1);
        const gw0 = samples.gw.find((s) => s.at >= windowStart) ?? gw;
        const cpu = gw && gw0 && gw.at > gw0.at ? ((gw.cpuSeconds - gw0.cpuSeconds) / ((gw.at - gw0.at) / 1000)) * 100 : 0;
        opts.progress(
          `${label}: ${((now() - windowStart) / 1000).toFixed(0)}/${opts.durationS} s  frames ${p.frames}  ` +
            `recent p99 ≤ ${p.recentP99.toFixed(1)} ms  lost ${p.seqGaps + p.contentMissing}  misrouted ${p.misrouted}  ` +
            `gateway ${gw ? (gw.rssBytes / 2 ** 20).toFixed(0) : '?'} MB ${cpu.toFixed(0)}% CPU ${gw?.threads ?? '?'} threads`,
        );
      }
    }
    await Promise.all(actions);
    const windowClose = now();
    const mainCpuEnd = readThreadsCpu(ctx.gateway.pid)?.main ?? 0;
    windows.unshift({ name: 'main', from: windowStart, to: windowClose });
    // Every window ends with the main one: what comes after (collecting figures, the serving
    // probe) is not measured.
    for (const w of windows) w.to = Math.min(w.to, windowClose);

    // 6. report
    const reportAnswers = fromListeners(ctx, (m): m is Extract<FromListener, { ev: 'report' }> => m.ev === 'report', 120_000);
    toListeners(ctx, { cmd: 'report', windows });
    const reports = await reportAnswers;
    clearInterval(sampler);
    sampler = undefined;

    let servingAfter = false;
    let gatewayCounters: Record<string, number> = {};
    let underruns = 0;
    try {
      const health = await getJson(`${ctx.gatewayUrl}/health`);
      const summary = await getJson(`${ctx.gatewayUrl}/sessions`);
      servingAfter = health.engineConnected === true && (await probe(ctx.gatewayUrl, toneUrl(toneHz(opts.sessions), 5), errors));
      const sessions = (summary.sessions as { underruns?: number; late?: number; dropped?: number; skipped?: number }[]) ?? [];
      for (const s of sessions) underruns += s.underruns ?? 0;
      gatewayCounters = {
        workerLateFrames: sessions.reduce((n, s) => n + (s.late ?? 0), 0),
        ringDropped: sessions.reduce((n, s) => n + (s.dropped ?? 0), 0),
        skipped: sessions.reduce((n, s) => n + (s.skipped ?? 0), 0),
        threads: Number(summary.threads ?? 0),
      };
      if (!baseline) {
        // The worker's own view: how late it sent frames (before the main thread and the socket).
        const sample = Array.from({ length: Math.min(10, opts.sessions) }, (_, i) => sessionIds[Math.floor((i * opts.sessions) / Math.min(10, opts.sessions))]!);
        const stats = await Promise.all(
          sample.map((id) => getJson(`${ctx.gatewayUrl}/sessions/${encodeURIComponent(id)}`).then((j) => (j.worker as { sendLatenessMs?: { p99: number; max: number } } | undefined)?.sendLatenessMs, () => undefined)),
        );
        const got = stats.filter((x): x is { p99: number; max: number } => !!x);
        if (got.length > 0) {
          const p99s = got.map((x) => x.p99).sort((a, b) => a - b);
          gatewayCounters.workerSendP99MedianMs = p99s[Math.floor(p99s.length / 2)]!;
          gatewayCounters.workerSendP99MaxMs = p99s.at(-1)!;
          gatewayCounters.workerSendMaxMs = Math.max(...got.map((x) => x.max));
        }
        const metrics = parseMetrics(await (await fetch(`${ctx.gatewayUrl}/metrics`)).text());
        for (const [k, v] of Object.entries(metrics)) if (!k.includes('{')) gatewayCounters[k.replace(/^chorus_gateway_/, '')] = v;
      }
    } catch (err) {
      errors.push(`gateway did not answer after the run: ${(err as Error).message}`);
    }
    let engineCounters: Record<string, number> = {};
    if (opts.engine === 'synthetic') {
      try {
        engineCounters = (await getJson(`${ctx.engineUrl}/stats`)) as Record<string, number>;
      } catch (err) {
        errors.push(`engine /stats: ${(err as Error).message}`);
      }
    }

    // Figures
    const all = reports.flatMap((r) => r.sessions);
    const perSession: RunResult['perSession'] = {};
    for (const s of all) {
      perSession[s.id] = Object.fromEntries(Object.entries(s.lateness).map(([w, p]) => [w, { p50: p.p50, p99: p.p99, max: p.max, count: p.count }]));
    }
    // Lateness second by second over the main window (where in the run the late frames were).
    const timelineHists: LatencyHistogram[] = [];
    for (const r of reports) {
      (r.timeline ?? []).forEach((json, i) => {
        if (json) (timelineHists[i] ??= new LatencyHistogram(json.figures)).merge(json);
      });
    }
    const timeline = Array.from({ length: timelineHists.length }, (_, i) => {
      const p = timelineHists[i]?.percentiles();
      return { s: i, frames: p?.count ?? 0, p50: p?.p50 ?? 0, p99: p?.p99 ?? 0, max: p?.max ?? 0 };
    });
    const windowHists: Record<string, LatencyHistogram> = {};
    for (const r of reports) {
      for (const [name, json] of Object.entries(r.windows)) {
        (windowHists[name] ??= new LatencyHistogram()).merge(json);
      }
    }
    // Headline lateness: the sessions the run compares (by default those no stall, pause or
    // fault touched), in the window the run compares; touched sessions are reported apart.
    const touchedAll = new Set([...touched, ...(fault?.touched ?? [])]);
    const headlineWindow = fault?.compareWindow ?? 'main';
    const headlineIds = opts.headlineIds ?? (fault?.compareAll ? sessionIds : sessionIds.filter((id) => !touchedAll.has(id)));
    const untouchedHist = new LatencyHistogram();
    const touchedHist = new LatencyHistogram();
    if (touchedAll.size > 0 || headlineWindow !== 'main' || headlineIds.length !== sessionIds.length) {
      const base = windows.find((w) => w.name === headlineWindow) ?? windows[0]!;
      const groups: WindowSpec[] = [{ ...base, name: 'headline', ids: headlineIds }];
      if (touchedAll.size > 0) groups.push({ ...windows[0]!, name: 'touched', ids: [...touchedAll] });
      const again = fromListeners(ctx, (m): m is Extract<FromListener, { ev: 'report' }> => m.ev === 'report', 120_000);
      toListeners(ctx, { cmd: 'report', windows: groups });
      for (const r of await again) {
        if (r.windows.headline) untouchedHist.merge(r.windows.headline);
        if (r.windows.touched) touchedHist.merge(r.windows.touched);
      }
    } else {
      untouchedHist.merge(windowHists.main ?? new LatencyHistogram());
    }

    const windowSamples = (list: ProcSample[]) => list.filter((s) => s.at >= windowStart && s.at <= windowClose + 1000);
    const gwWin = windowSamples(samples.gw);
    const cpuOf = (list: ProcSample[]) => {
      if (list.length < 2) return 0;
      let cpuSeconds = 0;
      for (let i = 1; i < list.length; i++) {
        const d = list[i]!.cpuSeconds - list[i - 1]!.cpuSeconds;
        // A drop is a process started again (engine-restart): the new one counts from zero.
        cpuSeconds += d >= 0 ? d : list[i]!.cpuSeconds;
      }
      return (cpuSeconds / ((list.at(-1)!.at - list[0]!.at) / 1000)) * 100;
    };
    const gwEnd = gwWin.at(-1) ?? idle;
    const gwCpu = cpuOf(gwWin);
    const listenerCpu = ctx.listeners.reduce((sum, _l, i) => sum + cpuOf(windowSamples(samples.listeners.map((row) => row[i]!).filter(Boolean))), 0);
    const machWin = samples.machine.filter((s) => s.at >= windowStart && s.at <= windowClose + 1000);
    const machineBusy =
      machWin.length >= 2 ? ((machWin.at(-1)!.busy - machWin[0]!.busy) / (machWin.at(-1)!.total - machWin[0]!.total)) * 100 : 0;
    const otherCpu = Math.max(0, machineBusy * os.cpus().length - gwCpu - listenerCpu - cpuOf(windowSamples(samples.engine)));
    const rssPeak = Math.max(...gwWin.map((s) => s.rssBytes), gwEnd.rssBytes);

    const sum = (f: (s: SessionReport) => number) => all.reduce((n, s) => n + f(s), 0);
    const playToFirst = all.flatMap((s) => s.playToFirstMs.slice(0, 1));
    const resumes = all.filter((s) => touchedAll.has(s.id)).flatMap((s) => s.resumeGapsMs);
    if (resumeGaps) resumeGaps.push(...resumes);
    const anomalies = all
      .filter((s) => s.seqGaps || s.boundaryJumps || s.contentMissing || s.misrouted || s.seqDupes || s.decodedFailures || s.errors.length || s.playErrors.length)
      .slice(0, 50)
      .map((s) => ({
        id: s.id,
        seqGaps: s.seqGaps,
        boundaryJumps: s.boundaryJumps,
        contentMissing: s.contentMissing,
        misrouted: s.misrouted,
        seqDupes: s.seqDupes,
        decodedFailures: s.decodedFailures,
        errors: s.errors,
        playErrors: s.playErrors,
        lastState: s.lastState,
      }));
    const lost = { seqGaps: sum((s) => s.seqGaps), contentMissing: sum((s) => s.contentMissing), total: 0 };
    // Both checks see the same loss when frames vanish after the worker numbered them; only the
    // content check sees frames lost before (engine → ring). Count a frame once: the larger.
    lost.total = all.reduce((n, s) => n + Math.max(s.seqGaps, s.contentMissing), 0);

    if (fault) {
      fault.details.sessions = fault.touched.map((id) => all.find((s) => s.id === id)).filter(Boolean).slice(0, 20).map((s) => ({
        id: s!.id,
        errors: s!.errors,
        lastState: s!.lastState,
        frames: s!.frames,
        seqGaps: s!.seqGaps,
        contentMissing: s!.contentMissing,
        resumeGapsMs: s!.resumeGapsMs,
      }));
      fault.details.errorsSeen = all.filter((s) => s.errors.length > 0).length;
    }

    // The profiles are written when the gateway and its threads exit (after this run).
    if (opts.profileDir) profileFile = opts.profileDir;

    const result: RunResult = {
      label,
      mode: modeName(opts.mode),
      sessions: opts.sessions,
      durationS: opts.durationS,
      engine: opts.engine,
      listeners: opts.listeners,
      startedAt: new Date().toISOString(),
      lateness: untouchedHist.percentiles(),
      headlineWindow,
      headlineIds,
      touched: [...touchedAll],
      ...(touchedAll.size > 0 ? { latenessTouched: touchedHist.percentiles() } : {}),
      underruns,
      underrunEvents: sum((s) => s.underrunEvents),
      lost,
      boundaryJumps: sum((s) => s.boundaryJumps),
      seqDupes: sum((s) => s.seqDupes),
      misrouted: sum((s) => s.misrouted),
      decoded: {
        checks: sum((s) => s.decodedChecks),
        failures: sum((s) => s.decodedFailures),
        sessionsChecked: all.filter((s) => s.decodedChecks > 0).length,
      },
      playToFirstMs: percentilesOf(playToFirst),
      ...(resumeGaps ? { resumeGapMs: percentilesOf(resumeGaps) } : {}),
      gateway: {
        rssIdleMB: idle.rssBytes / 2 ** 20,
        rssEndMB: gwEnd.rssBytes / 2 ** 20,
        rssPeakMB: rssPeak / 2 ** 20,
        rssPerSessionMB: (gwEnd.rssBytes - idle.rssBytes) / 2 ** 20 / opts.sessions,
        cpuPercent: gwCpu,
        cpuPerSessionPercent: gwCpu / opts.sessions,
        mainThreadCpuPercent: ((mainCpuEnd - mainCpuStart) / ((windowClose - windowStart) / 1000)) * 100,
        threads: gwEnd.threads,
      },
      loadgen: {
        listenerCpuPercent: listenerCpu,
        engineCpuPercent: cpuOf(windowSamples(samples.engine)),
        machineBusyPercent: machineBusy,
        otherCpuPercent: otherCpu,
        listenerProcs: procs,
      },
      gatewayCounters,
      engineCounters,
      servingAfter,
      disturbed: otherCpu > DISTURBED_PERCENT,
      errors,
      playFailures,
      ...(fault ? { fault } : {}),
      ...(rssSeries ? { rssSeries } : {}),
      perSession,
      anomalies,
      windows: Object.fromEntries(Object.entries(windowHists).map(([k, h]) => [k, h.percentiles()])),
      timeline,
      ...(profileFile ? { profile: profileFile } : {}),
    };
    return result;
  } finally {
    if (sampler) clearInterval(sampler);
    for (const l of ctx.listeners) {
      try {
        l.proc.child.send({ cmd: 'close' } satisfies ToListener);
      } catch {
        // Already gone.
      }
    }
    // They exit by themselves on 'close' (a profile, if any, is written then); SIGTERM only if not.
    await Promise.all(ctx.listeners.map((l) => Promise.race([l.proc.exited, sleep(3000)]).then(() => l.proc.stop(3000))));
    await ctx.gateway?.stop(10_000);
    await ctx.engine?.stop(5000);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Waits (up to 2 minutes) until the cores are less than 25 % busy over a second. */
async function waitForQuiet(opts: RunOptions): Promise<void> {
  const until = Date.now() + 120_000;
  let told = false;
  for (;;) {
    const a = readMachineCpu();
    await sleep(1000);
    const b = readMachineCpu();
    const busy = ((b.busy - a.busy) / Math.max(1, b.total - a.total)) * 100;
    if (busy < 25 || Date.now() > until) {
      if (told) opts.log(`machine quiet enough (${busy.toFixed(0)} % busy); starting`);
      return;
    }
    if (!told) opts.log(`the machine is ${busy.toFixed(0)} % busy with something else; waiting for it to settle (up to 2 min)`);
    told = true;
  }
}

/** Plays a new session with a listener of its own; true when 5 frames arrive within 10 s. */
async function probe(gatewayUrl: string, url: string, errors: string[]): Promise<boolean> {
  const u = new URL(gatewayUrl);
  let frames = 0;
  let resolveFrames!: () => void;
  const got = new Promise<void>((r) => (resolveFrames = r));
  const ws = new WsClient(u.hostname, Number(u.port), '/ws?session=lt-probe', {
    binary: () => {
      if (++frames === 5) resolveFrames();
    },
    text: () => undefined,
    close: () => undefined,
  });
  try {
    await ws.open;
    const res = await fetch(`${gatewayUrl}/sessions/lt-probe/play`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ url }),
      signal: AbortSignal.timeout(10_000),
    });
    if (!res.ok) throw new Error(`probe play: ${res.status} ${await res.text()}`);
    await Promise.race([got, sleep(10_000).then(() => Promise.reject(new Error(`probe got ${frames} frames in 10 s`)))]);
    return true;
  } catch (err) {
    errors.push(`serving probe: ${(err as Error).message}`);
    return false;
  } finally {
    ws.close();
  }
}

async function control(ctx: Ctx, cmd: 'pause' | 'resume', list: string[]): Promise<void> {
  const targets = ctx.listeners.filter((l) => l.ids.some((id) => list.includes(id)));
  const done = fromListeners(ctx, (m): m is Extract<FromListener, { ev: 'done' }> => m.ev === 'done' && m.cmd === cmd, 60_000, targets);
  toListeners(ctx, { cmd, ids: [] }, (mine) => {
    const subset = mine.filter((id) => list.includes(id));
    return subset.length > 0 ? { cmd, ids: subset } : undefined;
  });
  const answers = await done;
  const failed = answers.reduce((n, a) => n + a.failed, 0);
  if (failed > 0) throw new Error(`${cmd}: ${failed} failed, e.g. ${answers.find((a) => a.firstError)?.firstError}`);
}

interface FaultTools {
  at(t: number, fn: () => Promise<void>): void;
  note(what: string): void;
  third: number;
  windowStart: number;
  durationMs: number;
  sessionIds: string[];
  touched: Set<string>;
  windows: WindowSpec[];
}

/** Arms one fault scenario in the window (see faults.ts for what each one must show). */
async function scheduleFault(ctx: Ctx, fault: FaultOutcome, name: FaultName, tools: FaultTools): Promise<void> {
  const { at, note, third, windowStart, durationMs, sessionIds } = tools;
  const gw = ctx.gatewayUrl;
  switch (name) {
    case 'garbage': {
      const kinds = ['invalid-json', 'oversized-length', 'truncated-id'] as const;
      kinds.forEach((kind, i) => {
        at(windowStart + ((i + 1) * durationMs) / 4, async () => {
          const before = (await getJson(`${ctx.engineUrl}/stats`)).connections as number;
          const res = await post(`${ctx.engineUrl}/fault/garbage?kind=${kind}`);
          note(`engine wrote garbage: ${kind} (${res.text})`);
          if (kind !== 'invalid-json') {
            await waitFor('the gateway to reconnect after the garbage', async () => ((await getJson(`${ctx.engineUrl}/stats`)).connections as number) > before, 10_000, 20);
            note('gateway reconnected');
          }
        });
      });
      return;
    }
    case 'worker-crash': {
      const victim = sessionIds[0]!;
      fault.touched.push(victim);
      at(third, async () => {
        const res = await post(`${gw}/debug/crash?session=${encodeURIComponent(victim)}&kind=session`);
        note(`session ${victim}'s worker made to throw: ${res.status} ${res.text}`);
      });
      return;
    }
    case 'main-block': {
      fault.touched.push(...sessionIds.filter(() => ctx.opts.listeners === 'ws'));
      at(third, async () => {
        const sent = ctx.now();
        const res = await post(`${gw}/debug/block?ms=300`);
        const back = ctx.now();
        note(`gateway main thread blocked 300 ms: ${res.status} ${res.text}; answered after ${(back - sent).toFixed(0)} ms`);
        tools.windows.push({ name: 'outside-block', from: windowStart, to: windowStart + durationMs, exclude: [[sent - 50, back + 1000]] });
        tools.windows.push({ name: 'during-block', from: sent - 50, to: back + 1000 });
        fault.details.blockMs = back - sent;
      });
      // Whether a session was touched or not, the criterion compares the frames outside the block.
      fault.compareWindow = 'outside-block';
      fault.compareAll = true;
      return;
    }
    case 'engine-restart': {
      fault.touched.push(...sessionIds);
      fault.compareWindow = 'after-restart';
      fault.compareAll = true;
      at(third, async () => {
        note('kill -9 the engine');
        await ctx.engine!.kill9();
        await sleep(500);
        await startEngine(ctx);
        note('engine restarted');
        await waitFor('the gateway to reconnect to the new engine', async () => (await getJson(`${gw}/health`)).engineConnected === true, 30_000, 50);
        note('gateway reconnected');
        // The new engine knows none of the tracks: the gateway must end every one of them.
        await waitFor(
          'every interrupted session to end',
          async () => {
            const s = (await getJson(`${gw}/sessions`)).sessions as { state: string }[];
            return s.every((x) => x.state === 'error' || x.state === 'finished' || x.state === 'stopped');
          },
          30_000,
          100,
        );
        note('every interrupted session ended');
        const replay = fromListeners(ctx, (m): m is Extract<FromListener, { ev: 'played' }> => m.ev === 'played', 120_000);
        toListeners(ctx, { cmd: 'play', ratePerSec: ctx.opts.playRate / ctx.listeners.length });
        const answers = await replay;
        const failed = answers.reduce((n, a) => n + a.failed, 0);
        note(`every session played again (${failed} failed)`);
        fault.details.replayFailures = failed;
        await sleep(SETTLE_MS);
        const from = ctx.now();
        tools.windows.push({ name: 'after-restart', from, to: 1e15 });
        note('measuring after the restart');
      });
      return;
    }
    case 'stall-10':
    case 'pause-10':
      // Armed by the stall/pause fractions in runOnce.
      return;
  }
}
