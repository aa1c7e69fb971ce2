/**
 * The load scripts' charts, written as self-contained SVG (no library, no network to view it):
 * two panels against N (log scale), one line per series (a mode). writeChart is the load test's:
 * listener p99 lateness (log scale, with the 5 ms target) and the gateway's RSS; a hollow marker
 * is a run that lost or misrouted frames. writePanelsChart draws any two such panels.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { RunResult } from './run.js';
import { P99_TARGET_MS } from './report.js';

const COLORS = ['#1f6feb', '#d9480f', '#6e7781', '#2f9e44', '#ae3ec9', '#e8590c', '#0c8599'];
const W = 1000;
const H = 480;
const PANEL_W = 420;
const PANEL_H = 330;
const TOP = 80;
const LEFTS = [80, 570];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

interface Axis {
  min: number;
  max: number;
  log: boolean;
}

function scale(a: Axis, v: number, px: number): number {
  if (a.log) {
    const lo = Math.log10(a.min);
    const hi = Math.log10(a.max);
    return ((Math.log10(Math.max(v, a.min)) - lo) / (hi - lo)) * px;
  }
  return ((v - a.min) / (a.max - a.min)) * px;
}

function niceLogTicks(min: number, max: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= min * 0.999 && v <= max * 1.001) out.push(v);
    }
  }
  return out;
}

function fmt(v: number): string {
  if (v >= 1000) return `${v / 1000}k`;
  if (v >= 1) return String(Math.round(v * 10) / 10);
  return String(v);
}

/** One measured point: a series (mode), its N, a value per panel, and whether it lost frames. */
export interface ChartPoint {
  series: string;
  n: number;
  values: [number, number];
  bad: boolean;
}

export interface ChartPanel {
  label: string;
  /** A dashed line at this value (a target). */
  target?: number;
  /** The lowest value the axis shows. */
  floor: number;
}

export function writeChart(file: string, runs: RunResult[], title: string): void {
  const points: ChartPoint[] = runs.map((r) => ({
    series: r.mode,
    n: r.sessions,
    values: [Math.max(r.lateness.p99, 0.1), Math.max(r.gateway.rssEndMB, 1)],
    bad: r.lost.total > 0 || r.misrouted > 0,
  }));
  writePanelsChart(file, points, title, 'concurrent sessions N (log scale)', 'hollow marker: frames lost or misrouted', [
    { label: 'listener p99 lateness, ms (log scale)', target: P99_TARGET_MS, floor: 0.1 },
    { label: 'gateway RSS, MB (log scale)', floor: 1 },
  ]);
}

export function writePanelsChart(file: string, points: ChartPoint[], title: string, xLabel: string, badNote: string, panels: [ChartPanel, ChartPanel]): void {
  const modes = [...new Set(points.map((r) => r.series))];
  const ns = [...new Set(points.map((r) => r.n))].sort((a, b) => a - b);
  const x: Axis = { min: Math.min(...ns) / 1.3, max: Math.max(...ns) * 1.3, log: true };
  const axis = (i: 0 | 1): Axis => {
    const vs = points.map((p) => Math.max(p.values[i], panels[i].floor));
    const target = panels[i].target;
    if (target !== undefined) return { min: panels[i].floor, max: Math.max(target * 2, ...vs) * 1.5, log: true };
    return { min: Math.max(panels[i].floor, Math.min(...vs) / 2), max: Math.max(...vs) * 1.5, log: true };
  };

  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  parts.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`);

  // Legend
  const step = Math.min(170, 600 / Math.max(1, modes.length));
  modes.forEach((m, i) => {
    const lx = 80 + i * step;
    parts.push(`<line x1="${lx}" y1="46" x2="${lx + 28}" y2="46" stroke="${COLORS[i % COLORS.length]}" stroke-width="2.5"/>`);
    parts.push(`<circle cx="${lx + 14}" cy="46" r="4" fill="${COLORS[i % COLORS.length]}"/>`);
    parts.push(`<text x="${lx + 36}" y="50">${esc(m)}</text>`);
  });
  parts.push(`<text x="${80 + modes.length * step}" y="50" fill="#555">${esc(badNote)}</text>`);

  const panel = (left: number, i: 0 | 1) => {
    const { label, target, floor } = panels[i];
    const y = axis(i);
    const value = (p: ChartPoint) => Math.max(p.values[i], floor);
    const top = TOP;
    const X = (v: number) => left + scale(x, v, PANEL_W);
    const Y = (v: number) => top + PANEL_H - scale(y, v, PANEL_H);
    parts.push(`<rect x="${left}" y="${top}" width="${PANEL_W}" height="${PANEL_H}" fill="none" stroke="#999"/>`);
    for (const t of niceLogTicks(y.min, y.max)) {
      parts.push(`<line x1="${left}" y1="${Y(t)}" x2="${left + PANEL_W}" y2="${Y(t)}" stroke="#eee"/>`);
      parts.push(`<text x="${left - 6}" y="${Y(t) + 4}" text-anchor="end" fill="#444">${fmt(t)}</text>`);
    }
    for (const n of ns) {
      parts.push(`<line x1="${X(n)}" y1="${top}" x2="${X(n)}" y2="${top + PANEL_H}" stroke="#f2f2f2"/>`);
      parts.push(`<text x="${X(n)}" y="${top + PANEL_H + 16}" text-anchor="middle" fill="#444">${n}</text>`);
    }
    parts.push(`<text x="${left + PANEL_W / 2}" y="${top + PANEL_H + 36}" text-anchor="middle">${esc(xLabel)}</text>`);
    parts.push(`<text transform="translate(${left - 50},${top + PANEL_H / 2}) rotate(-90)" text-anchor="middle">${esc(label)}</text>`);
    if (target !== undefined) {
      parts.push(`<line x1="${left}" y1="${Y(target)}" x2="${left + PANEL_W}" y2="${Y(target)}" stroke="#c92a2a" stroke-dasharray="6 4"/>`);
      parts.push(`<text x="${left + PANEL_W - 4}" y="${Y(target) - 5}" text-anchor="end" fill="#c92a2a">target ${target} ms</text>`);
    }
    modes.forEach((m, mi) => {
      const color = COLORS[mi % COLORS.length]!;
      const pts = points.filter((r) => r.series === m).sort((a, b) => a.n - b.n);
      if (pts.length > 1) {
        parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2.5" points="${pts.map((r) => `${X(r.n).toFixed(1)},${Y(value(r)).toFixed(1)}`).join(' ')}"/>`);
      }
      for (const r of pts) {
        const v = value(r);
        parts.push(
          `<circle cx="${X(r.n).toFixed(1)}" cy="${Y(v).toFixed(1)}" r="4.5" fill="${r.bad ? '#fff' : color}" stroke="${color}" stroke-width="2">` +
            `<title>${esc(`${m} N=${r.n}: ${label} ${v.toFixed(2)}${r.bad ? '; lost frames' : ''}`)}</title></circle>`,
        );
      }
    });
  };
  panel(LEFTS[0]!, 0);
  panel(LEFTS[1]!, 1);
  parts.push('</svg>');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, parts.join('\n') + '\n');
}
