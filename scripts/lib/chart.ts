/**
 * The load test's chart, written as a self-contained SVG (no library, no network to view it):
 * two panels against N (log scale), one line per mode — listener p99 lateness (log scale, with
 * the 5 ms target) and the gateway's RSS. A hollow marker is a run that lost or misrouted frames.
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

export function writeChart(file: string, runs: RunResult[], title: string): void {
  const modes = [...new Set(runs.map((r) => r.mode))];
  const ns = [...new Set(runs.map((r) => r.sessions))].sort((a, b) => a - b);
  const x: Axis = { min: Math.min(...ns) / 1.3, max: Math.max(...ns) * 1.3, log: true };
  const p99s = runs.map((r) => Math.max(r.lateness.p99, 0.1));
  const lat: Axis = { min: 0.1, max: Math.max(10, ...p99s) * 1.5, log: true };
  const rss = runs.map((r) => Math.max(r.gateway.rssEndMB, 1));
  const mem: Axis = { min: Math.max(10, Math.min(...rss) / 2), max: Math.max(...rss) * 1.5, log: true };

  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  parts.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  parts.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`);

  // Legend
  modes.forEach((m, i) => {
    const lx = 80 + i * 170;
    parts.push(`<line x1="${lx}" y1="46" x2="${lx + 28}" y2="46" stroke="${COLORS[i % COLORS.length]}" stroke-width="2.5"/>`);
    parts.push(`<circle cx="${lx + 14}" cy="46" r="4" fill="${COLORS[i % COLORS.length]}"/>`);
    parts.push(`<text x="${lx + 36}" y="50">${esc(m)}</text>`);
  });
  parts.push(`<text x="${80 + modes.length * 170}" y="50" fill="#555">hollow marker: frames lost or misrouted</text>`);

  const panel = (left: number, y: Axis, label: string, value: (r: RunResult) => number, target?: number) => {
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
    parts.push(`<text x="${left + PANEL_W / 2}" y="${top + PANEL_H + 36}" text-anchor="middle">concurrent sessions N (log scale)</text>`);
    parts.push(`<text transform="translate(${left - 50},${top + PANEL_H / 2}) rotate(-90)" text-anchor="middle">${esc(label)}</text>`);
    if (target !== undefined) {
      parts.push(`<line x1="${left}" y1="${Y(target)}" x2="${left + PANEL_W}" y2="${Y(target)}" stroke="#c92a2a" stroke-dasharray="6 4"/>`);
      parts.push(`<text x="${left + PANEL_W - 4}" y="${Y(target) - 5}" text-anchor="end" fill="#c92a2a">target ${target} ms</text>`);
    }
    modes.forEach((m, i) => {
      const color = COLORS[i % COLORS.length]!;
      const pts = runs.filter((r) => r.mode === m).sort((a, b) => a.sessions - b.sessions);
      if (pts.length > 1) {
        parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2.5" points="${pts.map((r) => `${X(r.sessions).toFixed(1)},${Y(value(r)).toFixed(1)}`).join(' ')}"/>`);
      }
      for (const r of pts) {
        const bad = r.lost.total > 0 || r.misrouted > 0;
        const v = value(r);
        parts.push(
          `<circle cx="${X(r.sessions).toFixed(1)}" cy="${Y(v).toFixed(1)}" r="4.5" fill="${bad ? '#fff' : color}" stroke="${color}" stroke-width="2">` +
            `<title>${esc(`${m} N=${r.sessions}: ${label} ${v.toFixed(2)}; lost ${r.lost.total}`)}</title></circle>`,
        );
      }
    });
  };
  panel(LEFTS[0]!, lat, 'listener p99 lateness, ms (log scale)', (r) => Math.max(r.lateness.p99, 0.1), P99_TARGET_MS);
  panel(LEFTS[1]!, mem, 'gateway RSS, MB (log scale)', (r) => Math.max(r.gateway.rssEndMB, 1));
  parts.push('</svg>');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, parts.join('\n') + '\n');
}
