/** The load scripts' printed tables and the soak's RSS slope. */
import type { RunResult } from './run.js';

export function table(rows: Record<string, string>[]): string {
  if (rows.length === 0) return '';
  const cols = Object.keys(rows[0]!);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (vals: string[]) => vals.map((v, i) => (i === 0 ? v.padEnd(width[i]!) : v.padStart(width[i]!))).join('  ');
  return [line(cols), line(width.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => r[c] ?? '')))].join('\n');
}

/** A bench's rows as a right-aligned table: integers as they are, other numbers to 2 places, booleans yes/NO. */
export function figuresTable<Row extends object>(rows: readonly Row[]): string {
  if (rows.length === 0) return '';
  const cols = Object.keys(rows[0]!) as (keyof Row & string)[];
  const cell = (v: unknown) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : typeof v === 'boolean' ? (v ? 'yes' : 'NO') : String(v));
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padStart(width[i]!)).join('  ');
  return [line(cols), line(width.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => cell(r[c]))))].join('\n');
}

const ms = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));

/** Largest N with p99 ≤ 5 ms and nothing lost or misrouted (the issue's criterion). */
export const P99_TARGET_MS = 5;

export function holds(r: RunResult): boolean {
  return r.lateness.count > 0 && r.lateness.p99 <= P99_TARGET_MS && r.lost.total === 0 && r.misrouted === 0 && r.playFailures === 0;
}

export function runRow(r: RunResult): Record<string, string> {
  return {
    mode: r.mode,
    N: String(r.sessions),
    'p50 ms': ms(r.lateness.p50),
    'p99 ms': ms(r.lateness.p99),
    'p99.9 ms': ms(r.lateness.p999),
    'max ms': ms(r.lateness.max),
    underruns: String(r.underruns),
    lost: String(r.lost.total),
    misrouted: String(r.misrouted + r.decoded.failures),
    'play→1st p50/p99 ms': `${ms(r.playToFirstMs.p50)}/${ms(r.playToFirstMs.p99)}`,
    'resume gap p50/max ms': r.resumeGapMs && r.resumeGapMs.count > 0 ? `${ms(r.resumeGapMs.p50)}/${ms(r.resumeGapMs.max)}` : '-',
    'RSS/session MB': r.gateway.rssPerSessionMB.toFixed(2),
    'CPU/session %': r.gateway.cpuPerSessionPercent.toFixed(3),
    threads: String(r.gateway.threads),
    'gateway CPU %': r.gateway.cpuPercent.toFixed(0),
    'loadgen CPU %': (r.loadgen.listenerCpuPercent + r.loadgen.engineCpuPercent).toFixed(0),
    'others CPU %': `${r.loadgen.otherCpuPercent.toFixed(0)}${r.disturbed ? '!' : ''}`,
    'p99≤5 & 0 lost': holds(r) ? 'yes' : 'NO',
  };
}

export function runsTable(runs: RunResult[]): string {
  return table(runs.map(runRow));
}

/** Least-squares slope of RSS (MB) against time (minutes) after `warmupS`. */
export function rssSlope(series: { atS: number; rssMB: number }[], warmupS: number): { mbPerMin: number; points: number } {
  const pts = series.filter((p) => p.atS >= warmupS);
  if (pts.length < 3) return { mbPerMin: Number.NaN, points: pts.length };
  const xs = pts.map((p) => p.atS / 60);
  const ys = pts.map((p) => p.rssMB);
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let num = 0;
  let den = 0;
  for (let i = 0; i < xs.length; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return { mbPerMin: den === 0 ? 0 : num / den, points: pts.length };
}

/** The runs as a markdown table (the README's measured table is made with this). */
export function runsMarkdown(runs: RunResult[]): string {
  const f = (v: number) => (v >= 100 ? v.toFixed(0) : v.toFixed(1));
  const head =
    '| mode | N | p50 | p99 | p99.9 | max | underruns | lost | misrouted | play→1st p50 / p99 | gateway RSS MB (per session) | gateway CPU % of a core (per session) | main thread % | threads | load generator CPU % | p99 ≤ 5 ms, 0 lost |';
  const rule = '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |';
  const rows = runs.map((r) => {
    const p = r.lateness;
    const g = r.gateway;
    return `| ${[
      r.mode,
      r.sessions,
      f(p.p50),
      f(p.p99),
      f(p.p999),
      f(p.max),
      r.underruns,
      r.lost.total,
      r.misrouted + r.decoded.failures,
      `${f(r.playToFirstMs.p50)} / ${f(r.playToFirstMs.p99)}`,
      `${g.rssEndMB.toFixed(0)} (${g.rssPerSessionMB.toFixed(2)})`,
      `${g.cpuPercent.toFixed(0)} (${g.cpuPerSessionPercent.toFixed(2)})`,
      g.mainThreadCpuPercent.toFixed(0),
      g.threads,
      (r.loadgen.listenerCpuPercent + r.loadgen.engineCpuPercent).toFixed(0),
      holds(r) ? 'yes' : 'no',
    ].join(' | ')} |`;
  });
  return [head, rule, ...rows].join('\n');
}
