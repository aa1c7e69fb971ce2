/**
 * Requests a second and latency of the gateway's hot HTTP routes, through `chorus start` (the
 * real engine behind the gateway): `GET /health`, `GET /sessions/:id`, and `POST
 * /sessions/:id/pause` on a playing session (a pause goes through to the engine's API, so it
 * exercises both servers' body reading and answers). A closed loop: `connections` keep-alive
 * connections, each sending its next request when the last is answered, for `seconds` per route.
 *
 * Several builds can be compared in one run (`--cli A,B`): they are measured in turn, `rounds`
 * times, so a busy machine disturbs each alike; the table shows each build's median round.
 *
 *   npm run build:scripts && node dist-scripts/scripts/bench/http-routes.js \
 *     [--cli dist/main/cli.js[,OTHER/dist/main/cli.js]] [--seconds 3] [--connections 8] [--rounds 3] [--json FILE]
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Histogram } from '../../src/shared/histogram.js';
import { defineCommand, numberFlag, parseCommandLine } from '../lib/cli.js';
import { spawnRole } from '../lib/procs.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

interface Route {
  name: string;
  method: 'GET' | 'POST';
  path: string;
}

const ROUTES: Route[] = [
  { name: 'GET /health', method: 'GET', path: '/health' },
  { name: 'GET /sessions/:id', method: 'GET', path: '/sessions/bench-http' },
  { name: 'POST /sessions/:id/pause', method: 'POST', path: '/sessions/bench-http/pause' },
];

export interface RouteFigure {
  cli: string;
  route: string;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

const COMMAND = defineCommand({
  name: 'bench-http-routes',
  usage: 'node dist-scripts/scripts/bench/http-routes.js [flags]',
  flags: {
    cli: { type: 'string', value: 'A[,B…]', help: 'built chorus CLIs to compare (dist/main/cli.js)' },
    seconds: { type: 'string', value: 'S', help: 'seconds per route per round (3)' },
    connections: { type: 'string', value: 'N', help: 'concurrent keep-alive connections (8)' },
    rounds: { type: 'string', value: 'K', help: 'rounds over every build (3)' },
    json: { type: 'string', value: 'FILE', help: 'results as JSON (artifacts/bench-http-routes-<time>.json)' },
  },
});

async function main(): Promise<void> {
  const args = parseCommandLine(COMMAND, (v) => ({
    clis: (v.cli ?? 'dist/main/cli.js').split(',').map((c) => path.resolve(c)),
    seconds: numberFlag('seconds', v.seconds ?? '3', 0.5, 600),
    connections: numberFlag('connections', v.connections ?? '8', 1, 256, true),
    rounds: numberFlag('rounds', v.rounds ?? '3', 1, 20, true),
    json: v.json ?? path.join(REPO_ROOT, 'artifacts', `bench-http-routes-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
  }));
  const rounds: RouteFigure[][] = [];
  for (let round = 0; round < args.rounds; round++) {
    for (const cli of args.clis) rounds.push(await measureBuild(cli, args.seconds, args.connections));
  }
  const median: RouteFigure[] = [];
  for (const cli of args.clis) {
    for (const route of ROUTES) {
      const runs = rounds.flat().filter((f) => f.cli === cli && f.route === route.name).sort((a, b) => a.requestsPerSecond - b.requestsPerSecond);
      median.push(runs[Math.floor(runs.length / 2)]!);
    }
  }
  fs.mkdirSync(path.dirname(args.json), { recursive: true });
  fs.writeFileSync(args.json, JSON.stringify({ date: new Date().toISOString(), seconds: args.seconds, connections: args.connections, rounds, median }, null, 2));
  console.log(JSON.stringify(median));
  console.log(`\nGateway HTTP routes, median of ${args.rounds} rounds, ${args.connections} connections, ${args.seconds} s each\n`);
  console.log('| build | route | req/s | p50 ms | p99 ms | errors |\n| --- | --- | ---: | ---: | ---: | ---: |');
  for (const f of median) {
    console.log(`| ${path.relative(process.cwd(), f.cli) || f.cli} | ${f.route} | ${f.requestsPerSecond.toFixed(0)} | ${f.p50Ms.toFixed(2)} | ${f.p99Ms.toFixed(2)} | ${f.errors} |`);
  }
  console.log(`\nJSON: ${args.json}`);
}

async function measureBuild(cli: string, seconds: number, connections: number): Promise<RouteFigure[]> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CHORUS_')));
  const chorus = spawnRole('chorus start', [cli, 'start'], { ...env, CHORUS_PORT: '0' });
  try {
    const base = new URL((await chorus.waitFor(/start ready http=(\S+)/, 30_000))[1]!);
    const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
    const play = await request(agent, base, 'POST', '/sessions/bench-http/play', JSON.stringify({ url: 'tone:440?seconds=600' }));
    if (play.status !== 200) throw new Error(`play: ${play.status}`);
    const figures: RouteFigure[] = [];
    for (const route of ROUTES) {
      await loop(agent, base, route, 0.5, connections);
      figures.push({ cli, ...(await loop(agent, base, route, seconds, connections)) });
    }
    agent.destroy();
    return figures;
  } finally {
    await chorus.stop();
  }
}

async function loop(agent: http.Agent, base: URL, route: Route, seconds: number, connections: number): Promise<Omit<RouteFigure, 'cli'>> {
  const histogram = new Histogram(1000, 0.01);
  let errors = 0;
  const started = performance.now();
  const until = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < until) {
        const sent = performance.now();
        const res = await request(agent, base, route.method, route.path, route.method === 'POST' ? '{}' : undefined);
        histogram.record(performance.now() - sent);
        if (res.status !== 200) errors++;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const p = histogram.percentiles();
  return { route: route.name, requestsPerSecond: p.count / elapsed, p50Ms: p.p50, p99Ms: p.p99, errors };
}

function request(agent: http.Agent, base: URL, method: string, pathname: string, body?: string): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ agent, host: base.hostname, port: base.port, method, path: pathname }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

await main();
