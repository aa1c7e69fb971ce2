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
 *   4. warm-up     until every session has its first frame and (thread per session with the
 *                  bridge) has moved to its own thread, then SETTLE_MS more
 *   5. window      `durationS` of measurement: /proc every second (gateway RSS, CPU, threads;
 *                  the load generator's CPU too), a progress line, faults/stalls/pauses on cue
 *   6. report      lateness per window from the listeners; counters from GET /sessions,
 *                  /metrics and the engine; the gateway must still answer /health
 *
 * The phases share run-context.ts; the figures are computed in run-figures.ts; faults are armed
 * (and judged) in faults.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { scheduleFault } from './faults.js';
import type { FromListener, ListenerSessionSpec, SessionReport, ToListener, WindowSpec } from './listener-proc.js';
import { readMachineCpu, readProc, readThreadsCpu, readTree, spawnRole, type ProcSample } from './procs.js';
import {
  BASELINE_MAIN,
  CLI,
  collectReports,
  envFor,
  fromListeners,
  gatewayHealth,
  getJson,
  LISTENER_MAIN,
  liftedLimits,
  listenerProcs,
  parseMetrics,
  progressTotals,
  SETTLE_MS,
  sleep,
  startEngine,
  toListeners,
  waitFor,
  type Ctx,
  type ListenerProc,
  type MeasuredWindow,
} from './run-context.js';
import { anomaliesOf, describeFault, latenessFigures, lostFrames, procFigures } from './run-figures.js';
import { percentilesOf, type Percentiles } from './stats.js';
import { toneHz, toneUrl } from './tones.js';
import { WsClient } from './ws-client.js';

export { CLI, REPO_ROOT } from './run-context.js';

/** A run during which other processes used more than this (per cent of one core) is disturbed. */
export const DISTURBED_PERCENT = 25;

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

/** One load run, phase by phase (numbered as in the header above). */
export async function runOnce(opts: RunOptions): Promise<RunResult> {
  const ctx = newRun(opts);
  try {
    // 0. a quiet machine: another engineer's test run would be measured as ours
    await waitForQuiet(opts);
    opts.log(`${ctx.label}: starting the ${opts.engine} engine${opts.engine === 'synthetic' ? ` (tone loops for ${opts.sessions} sessions)` : ''}`);
    await startEngine(ctx);
    // Restarts reuse the port, so the gateway's CHORUS_ENGINE_URL stays right.
    if (opts.engine === 'synthetic') ctx.engineArgs.push('--port', String(ctx.enginePort));
    const idle = await startGateway(ctx);
    await startListeners(ctx);
    startSampling(ctx);
    const playFailures = await warmUp(ctx);
    const window = await measureWindow(ctx);
    const reports = await collectReports(ctx, window.windows);
    clearInterval(ctx.sampler);
    ctx.sampler = undefined;
    const after = await gatewayAfter(ctx);
    const engineCounters = await engineCountersAfter(ctx);
    const all = reports.flatMap((r) => r.sessions);
    const lateness = await latenessFigures(ctx, reports, window);
    const touchedAll = lateness.touched;
    const sum = (f: (s: SessionReport) => number) => all.reduce((n, s) => n + f(s), 0);
    const resumes = all.filter((s) => touchedAll.has(s.id)).flatMap((s) => s.resumeGapsMs);
    if (window.fault) describeFault(window.fault, all);
    const procs = procFigures(ctx, window, idle);
    return {
      label: ctx.label,
      mode: modeName(opts.mode),
      sessions: opts.sessions,
      durationS: opts.durationS,
      engine: opts.engine,
      listeners: opts.listeners,
      startedAt: new Date().toISOString(),
      lateness: lateness.headline,
      headlineWindow: lateness.headlineWindow,
      headlineIds: lateness.headlineIds,
      touched: [...touchedAll],
      ...(touchedAll.size > 0 ? { latenessTouched: lateness.touchedPercentiles } : {}),
      underruns: after.underruns,
      underrunEvents: sum((s) => s.underrunEvents),
      lost: lostFrames(all),
      boundaryJumps: sum((s) => s.boundaryJumps),
      seqDupes: sum((s) => s.seqDupes),
      misrouted: sum((s) => s.misrouted),
      decoded: {
        checks: sum((s) => s.decodedChecks),
        failures: sum((s) => s.decodedFailures),
        sessionsChecked: all.filter((s) => s.decodedChecks > 0).length,
      },
      playToFirstMs: percentilesOf(all.flatMap((s) => s.playToFirstMs.slice(0, 1))),
      ...(window.paused ? { resumeGapMs: percentilesOf(resumes) } : {}),
      gateway: procs.gateway,
      loadgen: procs.loadgen,
      gatewayCounters: after.counters,
      engineCounters,
      servingAfter: after.serving,
      disturbed: procs.loadgen.otherCpuPercent > DISTURBED_PERCENT,
      errors: ctx.errors,
      playFailures,
      ...(window.fault ? { fault: window.fault } : {}),
      ...(window.rssSeries ? { rssSeries: window.rssSeries } : {}),
      perSession: lateness.perSession,
      anomalies: anomaliesOf(all),
      windows: lateness.windows,
      timeline: lateness.timeline,
      // The profiles are written when the gateway and its threads exit (after this run).
      ...(opts.profileDir ? { profile: opts.profileDir } : {}),
    };
  } finally {
    await tearDown(ctx);
  }
}

function newRun(opts: RunOptions): Ctx {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
  const baseline = opts.mode.kind === 'baseline';
  if (baseline && opts.listeners === 'rtp') throw new Error('the baseline serves WebSocket listeners only (the seed had no RTP)');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-load-'));
  const socketPath = path.join(tmp, 'engine.sock');
  return {
    opts,
    label: opts.label ?? `${modeName(opts.mode)} N=${opts.sessions}`,
    baseline,
    now: () => Number(process.hrtime.bigint() - opts.base) / 1e6,
    sessionIds: ids(opts.sessions),
    engineUrl: '',
    enginePort: 0,
    engineArgs:
      opts.engine === 'synthetic'
        ? ['--socket', socketPath, '--prepare', String(opts.sessions), ...(baseline ? ['--seed'] : [])]
        : [],
    engineEnv:
      opts.engine === 'synthetic'
        ? envFor({})
        : envFor({
            CHORUS_SOCKET: socketPath,
            CHORUS_ENGINE_PORT: '0',
            CHORUS_MAX_SESSIONS: liftedLimits(opts.sessions).CHORUS_MAX_SESSIONS!,
            CHORUS_LOG_LEVEL: 'info',
          }),
    gatewayUrl: '',
    listeners: [],
    tmp,
    socketPath,
    errors: [],
    samples: { gw: [], engine: [], listeners: [], machine: [] },
  };
}

/** 2. The gateway (chorus or the baseline), connected, its threads pre-warmed; returns its idle reading. */
async function startGateway(ctx: Ctx): Promise<ProcSample> {
  const { opts } = ctx;
  if (ctx.baseline) {
    ctx.gateway = spawnRole('baseline', [BASELINE_MAIN, '--socket', ctx.socketPath, '--engine-url', ctx.engineUrl], envFor({}));
    ctx.gatewayUrl = (await ctx.gateway.waitFor(/baseline ready http=(\S+)/, 30_000))[1]!;
  } else {
    const env = envFor({
      ...liftedLimits(opts.sessions),
      CHORUS_SOCKET: ctx.socketPath,
      CHORUS_ENGINE_URL: ctx.engineUrl,
      // Each run's own session store: sessions of an earlier run must not come back into this one.
      CHORUS_DATA_DIR: path.join(ctx.tmp, 'data'),
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
  await waitFor('the gateway to connect to the engine', async () => (await gatewayHealth(ctx.gatewayUrl)).engine_connected === true, 20_000);
  await sleep(1500); // pre-warmed threads boot
  const idle = readProc(ctx.gateway.pid, ctx.now());
  if (!idle) throw new Error('gateway exited');
  return idle;
}

/** 3. The listener processes, each with its share of the sessions, every listener connected. */
async function startListeners(ctx: Ctx): Promise<void> {
  const { opts } = ctx;
  const specs: ListenerSessionSpec[] = ctx.sessionIds.map((id, i) => ({ id, hz: toneHz(i), url: toneUrl(toneHz(i), toneSeconds(opts)) }));
  const procs = listenerProcs(opts);
  for (let p = 0; p < procs; p++) {
    const share = specs.filter((_, i) => i % procs === p);
    // LOADTEST_LISTENER_PROFILE=dir profiles the load generator's own listeners (to keep them cheap).
    const profile = process.env.LOADTEST_LISTENER_PROFILE;
    const proc = spawnRole(`listeners-${p}`, [LISTENER_MAIN], envFor({}), {
      ipc: true,
      ...(profile ? { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profile] } : {}),
    });
    const entry: ListenerProc = { proc, ids: share.map((s) => s.id), waiting: [] };
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
  opts.log(
    `${ctx.label}: ${opts.sessions} ${opts.listeners} listeners connected in ${procs} process(es) to ${ctx.gatewayUrl} (pid ${ctx.gateway!.pid}); playing at ${opts.playRate}/s`,
  );
}

/** Long enough for the plays, the window and what follows, so no tone ends within the run. */
const toneSeconds = (opts: RunOptions) => Math.ceil(opts.sessions / opts.playRate + opts.durationS + 180);

/** Reads /proc every second from now on: the gateway, the engine (with its ffmpeg), the listeners, the machine. */
function startSampling(ctx: Ctx): void {
  const { samples } = ctx;
  ctx.sampler = setInterval(() => {
    const at = ctx.now();
    const gw = ctx.gateway && readProc(ctx.gateway.pid, at);
    if (gw) samples.gw.push(gw);
    // The real engine's ffmpeg processes are its children: counted with it.
    const en = ctx.engine && (ctx.opts.engine === 'real' ? readTree(ctx.engine.pid, at) : readProc(ctx.engine.pid, at));
    if (en) samples.engine.push(en);
    samples.listeners.push(ctx.listeners.map((l) => readProc(l.proc.pid, at)).filter((s): s is ProcSample => !!s));
    samples.machine.push({ at, ...readMachineCpu() });
  }, 1000);
}

/** 4. Every session played, until each has its first frame, then SETTLE_MS; returns the plays that failed. */
async function warmUp(ctx: Ctx): Promise<number> {
  const { opts, label } = ctx;
  const rampStart = ctx.now();
  const played = fromListeners(ctx, (m): m is Extract<FromListener, { ev: 'played' }> => m.ev === 'played', 60_000 + (opts.sessions / opts.playRate) * 4000);
  toListeners(ctx, { cmd: 'play', ratePerSec: opts.playRate / listenerProcs(opts) });
  const rampTicker = setInterval(() => {
    const p = progressTotals(ctx);
    opts.progress(`${label}: warm-up ${((ctx.now() - rampStart) / 1000).toFixed(0)} s, ${p.withFrames}/${opts.sessions} sessions playing`);
  }, 1000);
  let playFailures = 0;
  try {
    const answers = await played;
    for (const a of answers) {
      playFailures += a.failed;
      if (a.firstError) ctx.errors.push(`play: ${a.firstError}`);
    }
    if (playFailures > 0) opts.log(`${label}: ${playFailures} plays failed, e.g. ${answers.find((a) => a.firstError)?.firstError}`);
    await waitFor(
      'every session to get its first frame',
      () => progressTotals(ctx).withFrames >= opts.sessions - playFailures,
      30_000 + opts.sessions * 20,
      200,
    ).catch((err: Error) => ctx.errors.push(err.message));
  } finally {
    clearInterval(rampTicker);
  }
  await leaveBridge(ctx);
  await sleep(SETTLE_MS);
  return playFailures;
}

/**
 * Sessions that started on the bridge move to their own threads as those boot: the window starts
 * once none is left there (thread boots are play → first frame's part, measured above), so that
 * it measures sessions on their own threads, as it did when plays waited for them. Bounded.
 */
async function leaveBridge(ctx: Ctx): Promise<void> {
  if (ctx.opts.mode.kind !== 'thread') return;
  const onBridge = async () => parseMetrics(await (await fetch(`${ctx.gatewayUrl}/metrics`)).text()).chorus_gateway_bridge_sessions ?? 0;
  const start = ctx.now();
  const ticker = setInterval(() => {
    void onBridge().then(
      (n) => ctx.opts.progress(`${ctx.label}: ${n} sessions still on the bridge, their threads booting (${((ctx.now() - start) / 1000).toFixed(0)} s)`),
      () => undefined,
    );
  }, 2000);
  try {
    await waitFor('every session to move from the bridge to its own thread', async () => (await onBridge()) === 0, 30_000 + ctx.opts.sessions * 500, 250).catch((err: Error) =>
      ctx.errors.push(err.message),
    );
  } finally {
    clearInterval(ticker);
  }
}

/** 5. The measured window, with its stalls, pauses and fault on cue and a progress line a second. */
async function measureWindow(ctx: Ctx): Promise<MeasuredWindow> {
  const { opts, label } = ctx;
  const start = ctx.now();
  const mainCpuStart = readThreadsCpu(ctx.gateway!.pid)?.main ?? 0;
  const durationMs = opts.durationS * 1000;
  const touched = new Set<string>();
  const fault: FaultOutcome | undefined = opts.fault ? { name: opts.fault, events: [], touched: [], compareWindow: 'main', details: {} } : undefined;
  const note = (what: string) => {
    fault?.events.push({ at: ctx.now(), what });
    opts.log(`${label}: ${what}`);
  };
  const windows: WindowSpec[] = [];
  const actions: Promise<void>[] = [];
  const third = start + durationMs / 3;
  const stallFraction = opts.fault === 'stall-10' ? 0.1 : opts.stall;
  const pauseFraction = opts.fault === 'pause-10' ? 0.1 : opts.pause;
  const at = (t: number, fn: () => Promise<void>) =>
    actions.push(
      (async () => {
        await sleep(Math.max(0, t - ctx.now()));
        await fn();
      })().catch((err: Error) => {
        ctx.errors.push(err.message);
        note(`failed: ${err.message}`);
      }),
    );
  if (stallFraction > 0) {
    const stalled = pickSessions(ctx.sessionIds, stallFraction, 0);
    for (const id of stalled) touched.add(id);
    at(third, () => stall(ctx, stalled, note));
  }
  if (pauseFraction > 0) {
    const paused = pickSessions(ctx.sessionIds, pauseFraction, 1);
    for (const id of paused) touched.add(id);
    at(third, async () => {
      await control(ctx, 'pause', paused);
      note(`${paused.length} sessions paused for ${opts.pauseMs} ms`);
      await sleep(opts.pauseMs);
      await control(ctx, 'resume', paused);
      note(`${paused.length} sessions resumed`);
    });
  }
  if (opts.fault && fault) await scheduleFault(ctx, fault, opts.fault, { at, note, third, windowStart: start, durationMs, sessionIds: ctx.sessionIds, touched, windows });

  const rssSeries = await watchWindow(ctx, start, start + durationMs);
  await Promise.all(actions);
  const close = ctx.now();
  const mainCpuEnd = readThreadsCpu(ctx.gateway!.pid)?.main ?? 0;
  windows.unshift({ name: 'main', from: start, to: close });
  // Every window ends with the main one: what comes after (collecting figures, the serving
  // probe) is not measured.
  for (const w of windows) w.to = Math.min(w.to, close);
  return { start, close, mainCpuStart, mainCpuEnd, windows, touched, paused: pauseFraction > 0, ...(fault ? { fault } : {}), ...(rssSeries ? { rssSeries } : {}) };
}

/** `stalled` listeners stop reading for stallMs. */
async function stall(ctx: Ctx, stalled: string[], note: (what: string) => void): Promise<void> {
  const { opts } = ctx;
  note(`${stalled.length} listeners stop reading for ${opts.stallMs} ms`);
  const done = fromListeners(
    ctx,
    (m): m is Extract<FromListener, { ev: 'done' }> => m.ev === 'done' && m.cmd === 'stall',
    opts.stallMs + 30_000,
    ctx.listeners.filter((l) => l.ids.some((id) => stalled.includes(id))),
  );
  toListeners(ctx, { cmd: 'stall', ids: [], ms: 0 }, (mine) => {
    const subset = mine.filter((id) => stalled.includes(id));
    return subset.length > 0 ? { cmd: 'stall', ids: subset, ms: opts.stallMs } : undefined;
  });
  await done;
  note('stalled listeners read again');
}

/** Until `end`: a progress line a second, and the gateway's RSS every rssEveryMs (returned, when asked). */
async function watchWindow(ctx: Ctx, start: number, end: number): Promise<{ atS: number; rssMB: number }[] | undefined> {
  const { opts, label, samples } = ctx;
  let lastLine = 0;
  let rssSeries: { atS: number; rssMB: number }[] | undefined;
  let nextRss = start;
  while (ctx.now() < end) {
    await sleep(Math.min(250, Math.max(0, end - ctx.now())));
    if (opts.rssEveryMs && ctx.now() >= nextRss && ctx.gateway) {
      const s = readProc(ctx.gateway.pid, ctx.now());
      if (s) (rssSeries ??= []).push({ atS: (s.at - start) / 1000, rssMB: s.rssBytes / 2 ** 20 });
      nextRss += opts.rssEveryMs;
    }
    if (ctx.now() - lastLine >= 1000) {
      lastLine = ctx.now();
      const p = progressTotals(ctx);
      const gw = samples.gw.at(-1);
      const gw0 = samples.gw.find((s) => s.at >= start) ?? gw;
      const cpu = gw && gw0 && gw.at > gw0.at ? ((gw.cpuSeconds - gw0.cpuSeconds) / ((gw.at - gw0.at) / 1000)) * 100 : 0;
      opts.progress(
        `${label}: ${((ctx.now() - start) / 1000).toFixed(0)}/${opts.durationS} s  frames ${p.frames}  ` +
          `recent p99 ≤ ${p.recentP99.toFixed(1)} ms  lost ${p.seqGaps + p.contentMissing}  misrouted ${p.misrouted}  ` +
          `gateway ${gw ? (gw.rssBytes / 2 ** 20).toFixed(0) : '?'} MB ${cpu.toFixed(0)}% CPU ${gw?.threads ?? '?'} threads`,
      );
    }
  }
  return rssSeries;
}

/** The gateway after the window: still serving (a new session gets frames), and its counters. */
async function gatewayAfter(ctx: Ctx): Promise<{ serving: boolean; counters: Record<string, number>; underruns: number }> {
  const { opts } = ctx;
  let serving = false;
  let counters: Record<string, number> = {};
  let underruns = 0;
  try {
    const health = await gatewayHealth(ctx.gatewayUrl);
    const summary = await getJson(`${ctx.gatewayUrl}/sessions`);
    serving = health.engine_connected === true && (await probe(ctx.gatewayUrl, toneUrl(toneHz(opts.sessions), 5), ctx.errors));
    const sessions = (summary.sessions as { underruns?: number; late?: number; dropped?: number; skipped?: number }[]) ?? [];
    for (const s of sessions) underruns += s.underruns ?? 0;
    counters = {
      workerLateFrames: sessions.reduce((n, s) => n + (s.late ?? 0), 0),
      ringDropped: sessions.reduce((n, s) => n + (s.dropped ?? 0), 0),
      skipped: sessions.reduce((n, s) => n + (s.skipped ?? 0), 0),
      threads: Number(summary.threads ?? 0),
    };
    if (!ctx.baseline) Object.assign(counters, await workerSendLateness(ctx), await gatewayMetrics(ctx));
  } catch (err) {
    ctx.errors.push(`gateway did not answer after the run: ${(err as Error).message}`);
  }
  return { serving, counters, underruns };
}

/** The worker's own view, from 10 sessions: how late it sent frames (before the main thread and the socket). */
async function workerSendLateness(ctx: Ctx): Promise<Record<string, number>> {
  const n = ctx.opts.sessions;
  const sample = Array.from({ length: Math.min(10, n) }, (_, i) => ctx.sessionIds[Math.floor((i * n) / Math.min(10, n))]!);
  const stats = await Promise.all(
    sample.map((id) =>
      getJson(`${ctx.gatewayUrl}/sessions/${encodeURIComponent(id)}`).then(
        (j) => (j.worker as { sendLatenessMs?: { p99: number; max: number } } | undefined)?.sendLatenessMs,
        () => undefined,
      ),
    ),
  );
  const got = stats.filter((x): x is { p99: number; max: number } => !!x);
  if (got.length === 0) return {};
  const p99s = got.map((x) => x.p99).sort((a, b) => a - b);
  return {
    workerSendP99MedianMs: p99s[Math.floor(p99s.length / 2)]!,
    workerSendP99MaxMs: p99s.at(-1)!,
    workerSendMaxMs: Math.max(...got.map((x) => x.max)),
  };
}

/** The gateway's unlabelled /metrics, without their chorus_gateway_ prefix. */
async function gatewayMetrics(ctx: Ctx): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const metrics = parseMetrics(await (await fetch(`${ctx.gatewayUrl}/metrics`)).text());
  for (const [k, v] of Object.entries(metrics)) if (!k.includes('{')) out[k.replace(/^chorus_gateway_/, '')] = v;
  return out;
}

/** The synthetic engine's counters (the real engine has none to give). */
async function engineCountersAfter(ctx: Ctx): Promise<Record<string, number>> {
  if (ctx.opts.engine !== 'synthetic') return {};
  try {
    return (await getJson(`${ctx.engineUrl}/stats`)) as Record<string, number>;
  } catch (err) {
    ctx.errors.push(`engine /stats: ${(err as Error).message}`);
    return {};
  }
}

/** Closes the listeners (they exit by themselves, writing a profile if any), then the gateway and the engine. */
async function tearDown(ctx: Ctx): Promise<void> {
  if (ctx.sampler) clearInterval(ctx.sampler);
  for (const l of ctx.listeners) {
    try {
      l.proc.child.send({ cmd: 'close' } satisfies ToListener);
    } catch {
      // Already gone.
    }
  }
  // SIGTERM only if a listener process has not exited 3 s after 'close'.
  await Promise.all(ctx.listeners.map((l) => Promise.race([l.proc.exited, sleep(3000)]).then(() => l.proc.stop(3000))));
  await ctx.gateway?.stop(10_000);
  await ctx.engine?.stop(5000);
  fs.rmSync(ctx.tmp, { recursive: true, force: true });
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
