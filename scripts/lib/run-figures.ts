/** A load run's figures, from what its listener processes report and its /proc samples. */
import os from 'node:os';
import type { SessionReport, WindowSpec } from './listener-proc.js';
import type { ProcSample } from './procs.js';
import { collectReports, listenerProcs, type Ctx, type Report, type MeasuredWindow } from './run-context.js';
import type { FaultOutcome, RunResult } from './run.js';
import { LatencyHistogram, type Percentiles } from './stats.js';

interface LatenessFigures {
  headline: Percentiles;
  headlineWindow: string;
  headlineIds: string[];
  /** Sessions a stall, pause or fault touched. */
  touched: Set<string>;
  touchedPercentiles: Percentiles;
  perSession: RunResult['perSession'];
  windows: RunResult['windows'];
  timeline: RunResult['timeline'];
}

/** The listeners' lateness, merged: per window, second by second, per session, and the headline. */
export async function latenessFigures(ctx: Ctx, reports: Report[], window: MeasuredWindow): Promise<LatenessFigures> {
  const { opts, sessionIds } = ctx;
  const perSession: RunResult['perSession'] = {};
  for (const s of reports.flatMap((r) => r.sessions)) {
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
  const { fault, windows } = window;
  const touched = new Set([...window.touched, ...(fault?.touched ?? [])]);
  const headlineWindow = fault?.compareWindow ?? 'main';
  const headlineIds = opts.headlineIds ?? (fault?.compareAll ? sessionIds : sessionIds.filter((id) => !touched.has(id)));
  const headline = new LatencyHistogram();
  const touchedHist = new LatencyHistogram();
  if (touched.size > 0 || headlineWindow !== 'main' || headlineIds.length !== sessionIds.length) {
    const base = windows.find((w) => w.name === headlineWindow) ?? windows[0]!;
    const groups: WindowSpec[] = [{ ...base, name: 'headline', ids: headlineIds }];
    if (touched.size > 0) groups.push({ ...windows[0]!, name: 'touched', ids: [...touched] });
    for (const r of await collectReports(ctx, groups)) {
      if (r.windows.headline) headline.merge(r.windows.headline);
      if (r.windows.touched) touchedHist.merge(r.windows.touched);
    }
  } else {
    headline.merge(windowHists.main ?? new LatencyHistogram());
  }
  return {
    headline: headline.percentiles(),
    headlineWindow,
    headlineIds,
    touched,
    touchedPercentiles: touchedHist.percentiles(),
    perSession,
    windows: Object.fromEntries(Object.entries(windowHists).map(([k, h]) => [k, h.percentiles()])),
    timeline,
  };
}

/** The gateway's and the load generator's RSS and CPU over the window, from the /proc samples. */
export function procFigures(ctx: Ctx, window: MeasuredWindow, idle: ProcSample): Pick<RunResult, 'gateway' | 'loadgen'> {
  const { opts, samples } = ctx;
  const inWindow = (list: ProcSample[]) => list.filter((s) => s.at >= window.start && s.at <= window.close + 1000);
  const gwWin = inWindow(samples.gw);
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
  const listenerCpu = ctx.listeners.reduce((sum, _l, i) => sum + cpuOf(inWindow(samples.listeners.map((row) => row[i]!).filter(Boolean))), 0);
  const engineCpu = cpuOf(inWindow(samples.engine));
  const machWin = samples.machine.filter((s) => s.at >= window.start && s.at <= window.close + 1000);
  const machineBusy = machWin.length >= 2 ? ((machWin.at(-1)!.busy - machWin[0]!.busy) / (machWin.at(-1)!.total - machWin[0]!.total)) * 100 : 0;
  const otherCpu = Math.max(0, machineBusy * os.cpus().length - gwCpu - listenerCpu - engineCpu);
  const rssPeak = Math.max(...gwWin.map((s) => s.rssBytes), gwEnd.rssBytes);
  return {
    gateway: {
      rssIdleMB: idle.rssBytes / 2 ** 20,
      rssEndMB: gwEnd.rssBytes / 2 ** 20,
      rssPeakMB: rssPeak / 2 ** 20,
      rssPerSessionMB: (gwEnd.rssBytes - idle.rssBytes) / 2 ** 20 / opts.sessions,
      cpuPercent: gwCpu,
      cpuPerSessionPercent: gwCpu / opts.sessions,
      mainThreadCpuPercent: ((window.mainCpuEnd - window.mainCpuStart) / ((window.close - window.start) / 1000)) * 100,
      threads: gwEnd.threads,
    },
    loadgen: {
      listenerCpuPercent: listenerCpu,
      engineCpuPercent: engineCpu,
      machineBusyPercent: machineBusy,
      otherCpuPercent: otherCpu,
      listenerProcs: listenerProcs(opts),
    },
  };
}

export function lostFrames(all: SessionReport[]): RunResult['lost'] {
  // Both checks see the same loss when frames vanish after the worker numbered them; only the
  // content check sees frames lost before (engine → ring). Count a frame once: the larger.
  return {
    seqGaps: all.reduce((n, s) => n + s.seqGaps, 0),
    contentMissing: all.reduce((n, s) => n + s.contentMissing, 0),
    total: all.reduce((n, s) => n + Math.max(s.seqGaps, s.contentMissing), 0),
  };
}

/** Every session's counters that are not zero (the first 50 such sessions). */
export function anomaliesOf(all: SessionReport[]): RunResult['anomalies'] {
  return all
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
}

/** What the sessions a fault touched saw (the first 20), into its details. */
export function describeFault(fault: FaultOutcome, all: SessionReport[]): void {
  fault.details.sessions = fault.touched
    .map((id) => all.find((s) => s.id === id))
    .filter((s): s is SessionReport => !!s)
    .slice(0, 20)
    .map((s) => ({
      id: s.id,
      errors: s.errors,
      pauseReasons: s.pauseReasons,
      lastState: s.lastState,
      frames: s.frames,
      seqGaps: s.seqGaps,
      contentMissing: s.contentMissing,
      resumeGapsMs: s.resumeGapsMs,
    }));
  fault.details.errorsSeen = all.filter((s) => s.errors.length > 0).length;
  fault.details.toldSeen = all.filter((s) => s.errors.length > 0 || s.pauseReasons.length > 0).length;
}
