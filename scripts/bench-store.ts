/**
 * `npm run bench:store`: what the session store's write-behind costs the gateway's main thread.
 * For N sessions whose positions all moved (every session playing: the usual flush), and for N
 * sessions unchanged (all paused), the time of one flush (SessionStore.sync), over 40 flushes each.
 * Prints a table; writes JSON.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SessionStore, type StoredSession } from '../src/main/gateway/store.js';
import { defineCommand, parseCommandLine } from './lib/cli.js';
import { table } from './lib/report.js';

const FLUSHES = 40;

const COMMAND = defineCommand({
  name: 'bench-store',
  usage: 'npm run bench:store -- [flags]',
  about: "Time of one write-behind flush of the gateway's session store, by session count. Prints a table; writes JSON.",
  flags: {
    json: { type: 'string', value: 'FILE', help: 'where the JSON goes (artifacts/bench-store.json)' },
    sessions: { type: 'string', value: 'N[,N…]', help: 'session counts (256,2000)' },
  },
});

const opts = parseCommandLine(COMMAND, (v) => ({
  json: v.json ?? 'artifacts/bench-store.json',
  sessions: (v.sessions ?? '256,2000').split(',').map(Number),
}));

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-bench-store-'));
const results: { sessions: number; movedP50Ms: number; movedMaxMs: number; unchangedMs: number }[] = [];
try {
  const store = SessionStore.open(dir);
  for (const n of opts.sessions) {
    const rows: StoredSession[] = Array.from({ length: n }, (_, i) => ({ id: `s${i}`, track: { url: `tone:${100 + i}?seconds=600`, format: 'opus' }, positionFrames: 0, paused: false }));
    store.sync(rows);
    const moved: number[] = [];
    for (let k = 1; k <= FLUSHES; k++) {
      for (const row of rows) row.positionFrames = k * 12;
      const t0 = performance.now();
      store.sync(rows);
      moved.push(performance.now() - t0);
    }
    moved.sort((a, b) => a - b);
    const unchanged: number[] = [];
    for (let k = 0; k < FLUSHES; k++) {
      const t0 = performance.now();
      store.sync(rows);
      unchanged.push(performance.now() - t0);
    }
    unchanged.sort((a, b) => a - b);
    results.push({ sessions: n, movedP50Ms: round(moved[FLUSHES / 2]!), movedMaxMs: round(moved[FLUSHES - 1]!), unchangedMs: round(unchanged[FLUSHES / 2]!) });
    store.sync([]);
  }
  store.close();
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}

process.stdout.write(
  table(results.map((r) => ({ sessions: String(r.sessions), 'flush, all moved p50 ms': String(r.movedP50Ms), 'max ms': String(r.movedMaxMs), 'flush, none moved p50 ms': String(r.unchangedMs) }))) + '\n',
);
fs.mkdirSync(path.dirname(opts.json), { recursive: true });
fs.writeFileSync(opts.json, JSON.stringify({ date: new Date().toISOString(), node: process.version, flushes: FLUSHES, results }, null, 2));
process.stdout.write(`JSON: ${opts.json}\n`);

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}
