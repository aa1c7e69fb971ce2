/**
 * `npm run loadtest -- [flags]`: N concurrent sessions through a real gateway, measured at the
 * listeners, for each mode asked, in one run. `npm run build` first (the gateway is spawned from
 * dist/main/cli.js). The flags are listed below (and by --help); see README § Load testing for
 * how to read the output.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { writeChart } from './lib/chart.js';
import { choiceFlag, defineCommand, numberFlag, parseCommandLine, UsageError } from './lib/cli.js';
import { FAULT_TEXT, judgeFault, type FaultVerdict } from './lib/faults.js';
import { summarizeProfile } from './lib/profile.js';
import { holds, rssSlope, runsMarkdown, runsTable, table, P99_TARGET_MS } from './lib/report.js';
import {
  DEFAULT_LOAD,
  DISTURBED_PERCENT,
  FAULTS,
  headlineSessions,
  ids,
  modeName,
  parseMode,
  REPO_ROOT,
  runOnce,
  type FaultName,
  type LoadSettings,
  type Mode,
  type RunOptions,
  type RunResult,
} from './lib/run.js';

const COMMAND = defineCommand({
  name: 'loadtest',
  usage: 'npm run loadtest -- [flags]',
  about: 'N concurrent sessions through a real gateway, measured at the listeners, for each mode asked, in one run.',
  flags: {
    sessions: { type: 'string', value: 'N', help: 'concurrent sessions (50; 100 with --fault)' },
    duration: {
      type: 'string',
      value: 'S',
      help: 'measured window in seconds (10; 30 with --fault); ≥ 60 also samples\nRSS every 10 s and reports its slope after warm-up (soak: 600)',
    },
    mode: { type: 'string', value: 'M[,M…]', help: 'thread | shared:<k> | baseline (thread,shared:64,baseline;\nthread with --fault)' },
    engine: {
      type: 'string',
      value: 'synthetic|real',
      help: 'synthetic replays pre-encoded tones (the gateway alone is measured);\nreal runs `chorus engine` (ffmpeg + Opus; small N only on 2 cores)',
    },
    listeners: { type: 'string', value: 'ws|rtp', help: 'WebSocket listeners, or RTP sinks (not for the baseline)' },
    stall: { type: 'string', value: 'F', help: 'fraction of listeners that stop reading for --stall-ms' },
    'stall-ms': { type: 'string', value: 'MS', help: `how long a stalled listener stops reading (${DEFAULT_LOAD.stallMs})` },
    pause: { type: 'string', value: 'F', help: 'fraction of sessions paused for --pause-ms, then resumed' },
    'pause-ms': { type: 'string', value: 'MS', help: `how long a paused session stays paused (${DEFAULT_LOAD.pauseMs})` },
    fault: {
      type: 'string',
      value: 'NAME',
      help:
        `${FAULTS.join(' | ')}:\na control run, then the same run with the fault; prints the pass criterion\n` +
        'and the verdict; none: two control runs (how far two runs differ on this\nmachine without any fault)',
    },
    json: { type: 'string', value: 'FILE', help: 'results (artifacts/loadtest-<time>.json)' },
    chart: { type: 'string', value: 'FILE', help: 'SVG of p99 lateness and gateway RSS against N, a line per mode' },
    sweep: {
      type: 'boolean',
      help: "the issue's sweep (npm run loadtest:sweep): thread 50…400, shared:64\n100…2000, baseline at every N; --duration per point (10)",
    },
    'listener-procs': { type: 'string', value: 'P', help: 'listener processes (1 up to 100 sessions, else 2)' },
    'play-rate': { type: 'string', value: 'R', help: `plays a second during warm-up (${DEFAULT_LOAD.playRate})` },
    'decode-rate': { type: 'string', value: 'R', help: `decoded samples a second per listener process (${DEFAULT_LOAD.decodeChecksPerSec})` },
    env: { type: 'string', multiple: true, value: 'K=V', help: 'extra CHORUS_* variable for the gateway (repeatable)' },
    profile: { type: 'boolean', help: 'node --cpu-prof on the gateway (artifacts/profiles/), summary printed' },
    judge: { type: 'string', value: 'FILE', help: "judge a fault run's JSON again, without running anything" },
    retries: {
      type: 'string',
      value: 'K',
      help: `run a point again (up to K times, 2) when other processes took more\nthan ${DISTURBED_PERCENT} % of a core during its window; the least disturbed is kept`,
    },
  },
});

interface Args {
  load: LoadSettings;
  sessions?: number;
  duration?: number;
  modes?: Mode[];
  fault?: FaultName | 'none';
  json?: string;
  chart?: string;
  sweep: boolean;
  listenerProcs?: number;
  profile: boolean;
  retries: number;
  judge?: string;
}

function readArgs(): Args {
  return parseCommandLine(COMMAND, (v) => {
    const env: Record<string, string> = {};
    for (const kv of v.env ?? []) {
      const m = /^(CHORUS_[A-Z_]+)=(.*)$/.exec(kv);
      if (!m) throw new UsageError('--env: expected CHORUS_NAME=value');
      env[m[1]!] = m[2]!;
    }
    const mode = (text: string) => {
      try {
        return parseMode(text);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
    };
    return {
      ...(v.sessions !== undefined ? { sessions: Math.round(numberFlag('sessions', v.sessions, 1, 20_000)) } : {}),
      ...(v.duration !== undefined ? { duration: numberFlag('duration', v.duration, 1, 86_400) } : {}),
      ...(v.mode !== undefined ? { modes: v.mode.split(',').map(mode) } : {}),
      load: {
        engine: v.engine === undefined ? DEFAULT_LOAD.engine : choiceFlag('engine', v.engine, ['synthetic', 'real'] as const),
        listeners: v.listeners === undefined ? DEFAULT_LOAD.listeners : choiceFlag('listeners', v.listeners, ['ws', 'rtp'] as const),
        stall: v.stall === undefined ? DEFAULT_LOAD.stall : numberFlag('stall', v.stall, 0, 1),
        stallMs: v['stall-ms'] === undefined ? DEFAULT_LOAD.stallMs : numberFlag('stall-ms', v['stall-ms'], 0, 600_000),
        pause: v.pause === undefined ? DEFAULT_LOAD.pause : numberFlag('pause', v.pause, 0, 1),
        pauseMs: v['pause-ms'] === undefined ? DEFAULT_LOAD.pauseMs : numberFlag('pause-ms', v['pause-ms'], 0, 600_000),
        playRate: v['play-rate'] === undefined ? DEFAULT_LOAD.playRate : numberFlag('play-rate', v['play-rate'], 1, 10_000),
        decodeChecksPerSec: v['decode-rate'] === undefined ? DEFAULT_LOAD.decodeChecksPerSec : numberFlag('decode-rate', v['decode-rate'], 0, 100),
        env,
      },
      ...(v.fault !== undefined ? { fault: choiceFlag('fault', v.fault, [...FAULTS, 'none'] as const) } : {}),
      ...(v.json !== undefined ? { json: v.json } : {}),
      ...(v.chart !== undefined ? { chart: v.chart } : {}),
      sweep: v.sweep ?? false,
      ...(v['listener-procs'] !== undefined ? { listenerProcs: Math.round(numberFlag('listener-procs', v['listener-procs'], 1, 16)) } : {}),
      profile: v.profile ?? false,
      ...(v.judge !== undefined ? { judge: v.judge } : {}),
      retries: v.retries === undefined ? 2 : Math.round(numberFlag('retries', v.retries, 0, 10)),
    };
  });
}

const stamp = () => new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
const isTty = process.stderr.isTTY === true;
let lastProgress = 0;

function progress(line: string): void {
  if (isTty) {
    process.stderr.write(`\r\x1b[K${line}`);
  } else if (Date.now() - lastProgress >= 5000) {
    lastProgress = Date.now();
    process.stderr.write(`${line}\n`);
  }
}

function log(line: string): void {
  if (isTty) process.stderr.write('\r\x1b[K');
  process.stderr.write(`${line}\n`);
}

function machine(): Record<string, unknown> {
  let commit = '';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
  } catch {
    // Not a checkout.
  }
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? '',
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    platform: `${os.type()} ${os.release()}`,
    commit,
  };
}

function staleBuildWarning(): void {
  const cli = path.join(REPO_ROOT, 'dist/main/cli.js');
  if (!fs.existsSync(cli)) return;
  const built = fs.statSync(cli).mtimeMs;
  const newer: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith('.ts') && fs.statSync(p).mtimeMs > built) newer.push(path.relative(REPO_ROOT, p));
    }
  };
  for (const d of ['src/main', 'src/workers', 'src/shared']) walk(path.join(REPO_ROOT, d));
  if (newer.length > 0) log(`warning: dist/ is older than ${newer.length} source file(s) (${newer.slice(0, 3).join(', ')}…): run \`npm run build\` to measure them`);
}

function options(a: Args, mode: Mode, sessions: number, duration: number, base: bigint, extra: Partial<RunOptions> = {}): RunOptions {
  return {
    mode,
    sessions,
    durationS: duration,
    ...a.load,
    listenerProcs: a.listenerProcs ?? (sessions <= 100 ? 1 : 2),
    ...(a.profile ? { profileDir: path.join(REPO_ROOT, 'artifacts/profiles', stamp()) } : {}),
    ...(duration >= 60 ? { rssEveryMs: 10_000 } : {}),
    base,
    log,
    progress,
    ...extra,
  };
}

/**
 * Runs once; if other processes took more than DISTURBED_PERCENT of a core meanwhile (another
 * engineer's build or tests on a shared machine), runs again, up to `retries` times, and keeps
 * the least disturbed run.
 */
async function measured(o: RunOptions, retries: number): Promise<RunResult> {
  let best: RunResult | undefined;
  for (let attempt = 0; attempt <= retries; attempt++) {
    const r = await runOnce(o);
    if (!best || r.loadgen.otherCpuPercent < best.loadgen.otherCpuPercent) best = r;
    if (!r.disturbed) break;
    if (attempt < retries) log(`${r.label}: other processes used ${r.loadgen.otherCpuPercent.toFixed(0)}% of a core during the window; running it again`);
  }
  return best!;
}

function printRun(r: RunResult): void {
  const p = r.lateness;
  const extra: string[] = [];
  const g = r.gatewayCounters;
  if (g.workerSendP99MedianMs !== undefined) {
    extra.push(`worker send lateness (10 sessions, whole play): p99 median ${g.workerSendP99MedianMs.toFixed(1)} ms, worst p99 ${g.workerSendP99MaxMs!.toFixed(1)} ms, max ${g.workerSendMaxMs!.toFixed(1)} ms`);
  }
  if (r.errors.length > 0) extra.push(`errors: ${r.errors.slice(0, 3).join(' | ')}`);
  if (r.anomalies.length > 0) extra.push(`anomalies (first): ${JSON.stringify(r.anomalies.slice(0, 2))}`);
  log(
    `${r.label}: p50 ${p.p50.toFixed(2)} / p99 ${p.p99.toFixed(2)} / p99.9 ${p.p999.toFixed(2)} / max ${p.max.toFixed(1)} ms over ${p.count} frames; ` +
      `lost ${r.lost.total}, misrouted ${r.misrouted}, decoded ${r.decoded.checks - r.decoded.failures}/${r.decoded.checks} ok; ` +
      `gateway ${r.gateway.rssEndMB.toFixed(0)} MB, ${r.gateway.cpuPercent.toFixed(0)}% CPU (main thread ${r.gateway.mainThreadCpuPercent.toFixed(0)}%), ${r.gateway.threads} threads; ` +
      `load generator ${(r.loadgen.listenerCpuPercent + r.loadgen.engineCpuPercent).toFixed(0)}% CPU (listeners ${r.loadgen.listenerCpuPercent.toFixed(0)}%, engine ${r.loadgen.engineCpuPercent.toFixed(0)}%); ` +
      `cores ${r.loadgen.machineBusyPercent.toFixed(0)}% busy, ${r.loadgen.otherCpuPercent.toFixed(0)}% of a core by others` +
      (extra.length ? `\n  ${extra.join('\n  ')}` : ''),
  );
  if (r.profile) log(summarizeProfile(r.profile));
}

/** Per mode, the largest N that holds, and the baseline comparison the issue asks for. */
function verdicts(runs: RunResult[]): { lines: string[]; largest: Record<string, number> } {
  const modes = [...new Set(runs.map((r) => r.mode))];
  const largest: Record<string, number> = {};
  const lines: string[] = [];
  for (const m of modes) {
    const ok = runs.filter((r) => r.mode === m && holds(r)).map((r) => r.sessions);
    largest[m] = ok.length ? Math.max(...ok) : 0;
    lines.push(`${m}: largest N with p99 ≤ ${P99_TARGET_MS} ms and nothing lost: ${largest[m] || 'none of those run'}`);
  }
  const b = largest.baseline;
  if (b !== undefined) {
    for (const m of modes.filter((x) => x !== 'baseline')) {
      const ratio = b > 0 ? largest[m]! / b : Infinity;
      lines.push(`${m} vs baseline: largest N ${largest[m]} vs ${b} (${b > 0 ? `${ratio.toFixed(1)}×` : 'baseline held at none'}; target ≥ 5×)`);
      if (b > 0) {
        const bRun = runs.find((r) => r.mode === 'baseline' && r.sessions === b);
        const cRun = runs.find((r) => r.mode === m && r.sessions === b);
        if (bRun && cRun) lines.push(`  at N=${b}: ${m} p99 ${cRun.lateness.p99.toFixed(2)} ms vs baseline ${bRun.lateness.p99.toFixed(2)} ms (${cRun.lateness.p99 < bRun.lateness.p99 ? 'lower' : 'NOT lower'})`);
        else lines.push(`  no ${m} run at N=${b} to compare p99`);
      }
    }
  }
  return { lines, largest };
}

async function main(): Promise<void> {
  const a = readArgs();
  staleBuildWarning();
  const base = process.hrtime.bigint();
  const started = new Date().toISOString();
  const out: Record<string, unknown> = { machine: machine(), started, args: process.argv.slice(2) };
  const runs: RunResult[] = [];
  const jsonFile = path.resolve(a.json ?? path.join(REPO_ROOT, 'artifacts', `loadtest-${a.sweep ? 'sweep-' : a.fault ? `${a.fault}-` : ''}${stamp()}.json`));
  const save = () => {
    fs.mkdirSync(path.dirname(jsonFile), { recursive: true });
    fs.writeFileSync(jsonFile, JSON.stringify({ ...out, runs }, null, 1));
  };

  if (a.judge) {
    // Judges a fault run's JSON again (after a change of criterion), without running anything.
    const saved = JSON.parse(fs.readFileSync(a.judge, 'utf8')) as { runs: RunResult[] };
    const [control, faulted] = saved.runs;
    if (!control || !faulted) throw new Error(`${a.judge}: not a fault run's JSON (a control run and a fault run)`);
    const verdict = judgeFault(faulted, control);
    console.log(`${faulted.label}: ${verdict.pass ? 'PASS' : 'FAIL'}`);
    console.log(table(verdict.criteria.map((c) => ({ criterion: c.name, result: c.pass ? 'pass' : 'FAIL', detail: c.detail }))));
    process.exitCode = verdict.pass ? 0 : 1;
    return;
  }

  if (a.fault) {
    const mode = a.modes?.[0] ?? { kind: 'thread' };
    const n = a.sessions ?? 100;
    const duration = a.duration ?? 30;
    const fault = a.fault === 'none' ? undefined : a.fault;
    const text = fault
      ? FAULT_TEXT[fault]
      : { does: 'nothing: a second control run', passes: 'the common criteria, to show how far two runs without a fault differ on this machine' };
    log(`fault ${a.fault} at ${n} sessions, ${modeName(mode)}, ${duration} s windows`);
    log(`  does:   ${text.does}`);
    log(`  passes: ${text.passes}`);
    log('control run (no fault):');
    const compared = headlineSessions(ids(n), fault, a.load.stall, a.load.pause);
    const control = await measured(options(a, mode, n, duration, base, { label: `control ${modeName(mode)} N=${n}`, headlineIds: compared }), a.retries);
    runs.push(control);
    printRun(control);
    save();
    log(`run with ${a.fault}:`);
    const faulted = await measured(options(a, mode, n, duration, base, { ...(fault ? { fault } : {}), label: `${a.fault} ${modeName(mode)} N=${n}` }), a.retries);
    runs.push(faulted);
    printRun(faulted);
    for (const e of faulted.fault?.events ?? []) log(`  t=${((e.at - (faulted.fault!.events[0]?.at ?? e.at)) / 1000).toFixed(2)} s  ${e.what}`);
    // Where in the window the late frames were, against the control run's p99.
    const bar = control.lateness.p99 + 1;
    const hot = (faulted.timeline ?? []).filter((x) => x.frames > 0 && x.p99 > bar);
    log(
      hot.length === 0
        ? `  no second of the window had a p99 above the control's p99 + 1 ms (${bar.toFixed(2)} ms)`
        : `  seconds of the window (from its start) with p99 above the control's p99 + 1 ms (${bar.toFixed(2)} ms): ` +
            hot.map((x) => `${x.s} s (p99 ${x.p99.toFixed(1)}, max ${x.max.toFixed(1)} ms)`).join(', '),
    );
    const verdict: FaultVerdict = judgeFault(faulted, control);
    out.verdict = verdict;
    save();
    console.log(`\n${runsTable(runs)}\n`);
    console.log(`fault ${a.fault}: ${verdict.pass ? 'PASS' : 'FAIL'}`);
    console.log(table(verdict.criteria.map((c) => ({ criterion: c.name, result: c.pass ? 'pass' : 'FAIL', detail: c.detail }))));
    console.log(`\nJSON: ${path.relative(process.cwd(), jsonFile)}`);
    process.exitCode = verdict.pass ? 0 : 1;
    return;
  }

  let plan: { mode: Mode; n: number }[];
  let duration: number;
  if (a.sweep) {
    duration = a.duration ?? 10;
    // The issue's points, and shared:64 below 500 too so that its largest N is among them;
    // the baseline at every N of the others.
    const sweep: [Mode, number[]][] = [
      [{ kind: 'thread' }, [50, 100, 200, 400]],
      [{ kind: 'shared', k: 64 }, [100, 200, 300, 500, 1000, 2000]],
      [{ kind: 'baseline' }, [50, 100, 200, 300, 400, 500, 1000, 2000]],
    ];
    const only = a.modes?.map(modeName);
    plan = sweep.filter(([m]) => !only || only.includes(modeName(m))).flatMap(([mode, ns]) => ns.map((n) => ({ mode, n })));
  } else {
    duration = a.duration ?? 10;
    const modes = a.modes ?? [{ kind: 'thread' }, { kind: 'shared', k: 64 }, { kind: 'baseline' }];
    plan = modes.map((mode) => ({ mode, n: a.sessions ?? 50 }));
  }
  if (a.load.listeners === 'rtp') plan = plan.filter((p) => p.mode.kind !== 'baseline');

  log(`${plan.length} run(s), ${duration} s measured each, ${a.load.engine} engine, ${a.load.listeners} listeners, ${os.cpus().length} cores`);
  const collapsed = new Set<string>();
  let i = 0;
  for (const { mode, n } of plan) {
    i++;
    const name = modeName(mode);
    if (collapsed.has(name)) {
      log(`[${i}/${plan.length}] ${name} N=${n}: skipped (this mode already collapsed at a smaller N)`);
      continue;
    }
    log(`[${i}/${plan.length}] ${name} N=${n}`);
    try {
      const r = await measured(options(a, mode, n, duration, base), a.retries);
      runs.push(r);
      printRun(r);
      if (r.rssSeries) {
        const warm = Math.max(60, duration * 0.1);
        const slope = rssSlope(r.rssSeries, warm);
        (r as RunResult & { rssSlope?: unknown }).rssSlope = { ...slope, warmupS: warm };
        log(
          `${r.label}: RSS every 10 s: ${r.rssSeries.map((p) => p.rssMB.toFixed(0)).join(' ')} MB; ` +
            `slope after ${warm.toFixed(0)} s: ${slope.mbPerMin.toFixed(3)} MB/min over ${slope.points} samples (target < 1 MB/min)`,
        );
      }
      // A sweep does not push a mode further once it is far past any use.
      if (a.sweep && (r.lateness.p99 > 1000 || r.playFailures > n / 10)) collapsed.add(name);
    } catch (err) {
      log(`${name} N=${n} failed: ${(err as Error).message}`);
      (out.failures ??= [] as unknown[]) && (out.failures as unknown[]).push({ mode: name, sessions: n, error: (err as Error).message });
      if (a.sweep) collapsed.add(name);
    }
    save();
  }

  console.log(`\n${runsTable(runs)}\n`);
  const v = verdicts(runs);
  out.largest = v.largest;
  out.verdicts = v.lines;
  for (const line of v.lines) console.log(line);
  save();
  const chartFile = a.chart ?? (a.sweep || runs.length > 1 ? jsonFile.replace(/\.json$/, '.svg') : undefined);
  if (chartFile && runs.length > 0) {
    writeChart(path.resolve(chartFile), runs, `chorus load test, ${a.load.engine} engine, ${a.load.listeners} listeners, ${os.cpus().length} cores, ${duration} s per point`);
    console.log(`chart: ${path.relative(process.cwd(), path.resolve(chartFile))}`);
  }
  const md = jsonFile.replace(/\.json$/, '.md');
  fs.writeFileSync(md, `${runsMarkdown(runs)}\n\n${v.lines.map((l) => `- ${l.trim()}`).join('\n')}\n`);
  console.log(`markdown table: ${path.relative(process.cwd(), md)}`);
  console.log(`JSON: ${path.relative(process.cwd(), jsonFile)}`);
}

main().catch((err: unknown) => {
  log(`loadtest: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
});
