/**
 * What the phases of one load run (run.ts) share: the run's state (Ctx), where its programs are,
 * the environment its processes get, the HTTP calls it makes, and the messages to and from its
 * listener processes.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SCHEMA } from '../../src/shared/config.js';
import type { GatewayHealth } from '../../src/shared/health.js';
import type { FromListener, ProgressReport, ToListener, WindowSpec } from './listener-proc.js';
import { spawnRole, type ProcSample, type Spawned } from './procs.js';
import type { FaultOutcome, RunOptions } from './run.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '../../..');
/** The chorus build to measure: dist/main/cli.js, or LOADTEST_CLI (an A/B copy of a build). */
export const CLI = process.env.LOADTEST_CLI ? path.resolve(process.env.LOADTEST_CLI) : path.join(REPO_ROOT, 'dist/main/cli.js');
export const SYNTHETIC_MAIN = path.join(HERE, 'synthetic-engine-main.js');
export const BASELINE_MAIN = path.join(HERE, 'baseline-gateway-main.js');
export const LISTENER_MAIN = path.join(HERE, 'listener-proc.js');

/** After the last session's first frame, before the window opens. */
export const SETTLE_MS = 2000;

export interface ListenerProc {
  proc: Spawned;
  ids: string[];
  waiting: ((m: FromListener) => boolean)[];
  progress?: ProgressReport;
}

export interface Samples {
  gw: ProcSample[];
  engine: ProcSample[];
  listeners: ProcSample[][];
  machine: { at: number; busy: number; total: number }[];
}

/** One run's state, filled in phase by phase (see runOnce). */
export interface Ctx {
  opts: RunOptions;
  label: string;
  baseline: boolean;
  now: () => number;
  sessionIds: string[];
  engine?: Spawned;
  engineUrl: string;
  enginePort: number;
  engineArgs: string[];
  engineEnv: NodeJS.ProcessEnv;
  gateway?: Spawned;
  gatewayUrl: string;
  listeners: ListenerProc[];
  tmp: string;
  socketPath: string;
  errors: string[];
  samples: Samples;
  sampler?: NodeJS.Timeout;
}

export interface MeasuredWindow {
  start: number;
  close: number;
  /** CPU seconds of the gateway's main thread at the start and the close. */
  mainCpuStart: number;
  mainCpuEnd: number;
  /** 'main' first, then any a fault added; none ends after the main one. */
  windows: WindowSpec[];
  /** Sessions a stall or a pause touched. */
  touched: Set<string>;
  paused: boolean;
  fault?: FaultOutcome;
  rssSeries?: { atS: number; rssMB: number }[];
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

export function envFor(extra: Record<string, string>, check = true): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CHORUS_')) env[k] = v;
  for (const [k, v] of Object.entries(extra)) {
    // Only what the built chorus knows: an unknown CHORUS_* variable stops it at start.
    if (!check || knownVars().has(k)) env[k] = v;
  }
  return env;
}

/** The limits a load test lifts (when this build has them) so that only capacity is measured. */
export function liftedLimits(n: number): Record<string, string> {
  return {
    CHORUS_MAX_SESSIONS: String(Math.max(256, n + 16)),
    CHORUS_LOG_LEVEL: 'info',
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function getJson(url: string, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${text.slice(0, 200)}`);
  return JSON.parse(text) as Record<string, unknown>;
}

/** GET /health, whose 503 (engine not connected) is an answer too, not a failure to answer. */
export async function gatewayHealth(gatewayUrl: string): Promise<Partial<GatewayHealth>> {
  const res = await fetch(`${gatewayUrl}/health`, { signal: AbortSignal.timeout(10_000) });
  return (await res.json()) as Partial<GatewayHealth>;
}

export async function post(url: string, timeoutMs = 15_000): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { method: 'POST', signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, text: await res.text() };
}

export function parseMetrics(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(\{[^}]*\})?\s+([-\d.eE+]+)$/.exec(line.trim());
    if (m) out[m[1]! + (m[2] ?? '')] = Number(m[3]);
  }
  return out;
}

export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 100): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export async function startEngine(ctx: Ctx): Promise<void> {
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

export function toListeners(ctx: Ctx, msg: ToListener, filter?: (ids: string[]) => ToListener | undefined): void {
  for (const l of ctx.listeners) {
    const m = filter ? filter(l.ids) : msg;
    if (m) l.proc.child.send(m);
  }
}

/** Waits for one message matching `match` from every listener process (or those given). */
export function fromListeners<T extends FromListener>(
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

export function progressTotals(ctx: Ctx): ProgressReport & { recentP99: number } {
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

export type Report = Extract<FromListener, { ev: 'report' }>;

/** 6. Every listener process's report on `windows`. */
export async function collectReports(ctx: Ctx, windows: WindowSpec[]): Promise<Report[]> {
  const answers = fromListeners(ctx, (m): m is Report => m.ev === 'report', 120_000);
  toListeners(ctx, { cmd: 'report', windows });
  return answers;
}

export const listenerProcs = (opts: RunOptions) => Math.max(1, Math.min(opts.listenerProcs, opts.sessions));
