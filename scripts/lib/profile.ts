/**
 * Where the gateway's time goes: reads the .cpuprofile files `node --cpu-prof` wrote (one per
 * thread: the main thread's name ends in `.0.<n>.cpuprofile`, its workers' in their thread id),
 * prints the top functions by self time for the main thread and for all workers together, and
 * writes a flame graph (SVG, an icicle: callers above callees, width = time) per group.
 */
import fs from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

interface Tree {
  name: string;
  self: number;
  total: number;
  children: Map<string, Tree>;
}

function frameName(n: ProfileNode): string {
  const f = n.callFrame;
  const file = f.url ? path.basename(f.url.replace(/^file:\/\//, '')) : '';
  return `${f.functionName || '(anonymous)'}${file ? ` ${file}:${f.lineNumber + 1}` : ''}`;
}

/** Samples taken from `from` to `to` (µs of the monotonic clock, as process.hrtime) count. */
export interface ProfileWindow {
  fromUs: number;
  toUs: number;
}

/** Self time per node in ms, from samples and time deltas (hitCount × interval when absent). */
function selfTimes(p: CpuProfile, window?: ProfileWindow): Map<number, number> {
  const out = new Map<number, number>();
  if (p.samples && p.timeDeltas && p.samples.length === p.timeDeltas.length) {
    let at = p.startTime;
    for (let i = 0; i < p.samples.length; i++) {
      at += p.timeDeltas[i]!;
      if (window && (at < window.fromUs || at > window.toUs)) continue;
      const dt = (p.timeDeltas[i + 1] ?? p.timeDeltas[i] ?? 0) / 1000;
      out.set(p.samples[i]!, (out.get(p.samples[i]!) ?? 0) + dt);
    }
  } else {
    const hits = p.nodes.reduce((n, x) => n + (x.hitCount ?? 0), 0) || 1;
    const per = (p.endTime - p.startTime) / 1000 / hits;
    for (const n of p.nodes) out.set(n.id, (n.hitCount ?? 0) * per);
  }
  return out;
}

/**
 * Frames that are waiting, not working: V8's idle, and a session thread asleep in Atomics.wait on
 * its doorbell (src/shared/doorbell.ts), which the profiler sees as that function running.
 */
function isIdle(functionName: string): boolean {
  return functionName === '(idle)' || functionName === 'sleepUnlessRung';
}

function addProfile(root: Tree, flat: Map<string, number>, p: CpuProfile, window?: ProfileWindow): void {
  const self = selfTimes(p, window);
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const walk = (id: number, parent: Tree) => {
    const n = byId.get(id);
    // Idle time is not where the time goes: left out, so the graph's width is busy time.
    if (!n || isIdle(n.callFrame.functionName)) return 0;
    const name = frameName(n);
    let t = parent.children.get(name);
    if (!t) {
      t = { name, self: 0, total: 0, children: new Map() };
      parent.children.set(name, t);
    }
    const s = self.get(id) ?? 0;
    t.self += s;
    flat.set(name, (flat.get(name) ?? 0) + s);
    let total = s;
    for (const c of n.children ?? []) total += walk(c, t);
    t.total += total;
    return total;
  };
  const rootNode = p.nodes[0];
  if (rootNode) root.total += walk(rootNode.id, root);
}

function flameSvg(root: Tree, title: string): string {
  const W = 1400;
  const ROW = 17;
  const rows: string[] = [];
  let depthMax = 0;
  const draw = (t: Tree, x: number, w: number, depth: number) => {
    if (w < 0.6) return;
    depthMax = Math.max(depthMax, depth);
    const y = 30 + depth * ROW;
    const hue = 20 + ((t.name.length * 37) % 40);
    const label = w > 40 ? t.name.slice(0, Math.floor(w / 6.5)) : '';
    const pct = root.total > 0 ? ((t.total / root.total) * 100).toFixed(1) : '0';
    rows.push(
      `<g><title>${esc(t.name)} — ${t.total.toFixed(0)} ms (${pct} %), self ${t.self.toFixed(0)} ms</title>` +
        `<rect x="${x.toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${ROW - 1}" fill="hsl(${hue},85%,${depth === 0 ? 80 : 62}%)"/>` +
        (label ? `<text x="${(x + 3).toFixed(1)}" y="${y + 12}" font-size="11">${esc(label)}</text>` : '') +
        '</g>',
    );
    let cx = x;
    for (const c of [...t.children.values()].sort((a, b) => b.total - a.total)) {
      const cw = t.total > 0 ? (c.total / t.total) * w : 0;
      draw(c, cx, cw, depth + 1);
      cx += cw;
    }
  };
  draw(root, 10, W - 20, 0);
  const H = 40 + (depthMax + 1) * ROW;
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="monospace">` +
    `<rect width="${W}" height="${H}" fill="#fff"/><text x="10" y="18" font-size="13" font-family="sans-serif">${esc(title)}</text>` +
    rows.join('') +
    '</svg>\n'
  );
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Summarises every profile in `dir` (the samples within `window`, if given); writes flame graphs next to them. */
export function summarizeProfile(dir: string, top = 20, window?: ProfileWindow): string {
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
  const groups = new Map<string, { root: Tree; flat: Map<string, number>; files: number; wallMs: number }>();
  for (const f of files) {
    // CPU.<date>.<time>.<pid>.<threadId>.<seq>.cpuprofile
    const tid = f.split('.').at(-3);
    const group = tid === '0' ? 'main thread' : 'worker threads';
    let g = groups.get(group);
    if (!g) {
      g = { root: { name: group, self: 0, total: 0, children: new Map() }, flat: new Map(), files: 0, wallMs: 0 };
      groups.set(group, g);
    }
    const p = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as CpuProfile;
    addProfile(g.root, g.flat, p, window);
    g.files++;
    g.wallMs = Math.max(g.wallMs, ((window ? Math.min(p.endTime, window.toUs) - Math.max(p.startTime, window.fromUs) : p.endTime - p.startTime)) / 1000);
  }
  const lines: string[] = [`CPU profile (${dir}):`];
  for (const [name, g] of groups) {
    const busy = [...g.flat].filter(([k]) => !k.startsWith('(program)')).reduce((n, [, v]) => n + v, 0);
    lines.push(`  ${name} (${g.files} profile${g.files === 1 ? '' : 's'}, ${(g.wallMs / 1000).toFixed(0)} s each): ${busy.toFixed(0)} ms busy`);
    const sorted = [...g.flat].sort((a, b) => b[1] - a[1]).slice(0, top);
    for (const [k, v] of sorted) lines.push(`    ${v.toFixed(0).padStart(7)} ms  ${((v / Math.max(1, busy)) * 100).toFixed(1).padStart(5)} % of busy  ${k}`);
    const svg = path.join(dir, `flame-${name.replace(/ /g, '-')}.svg`);
    fs.writeFileSync(svg, flameSvg(g.root, `${name}: ${dir}`));
    lines.push(`    flame graph: ${svg}`);
  }
  return lines.join('\n');
}
