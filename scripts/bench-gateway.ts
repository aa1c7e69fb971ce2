/**
 * `npm run bench:gateway [-- --json FILE] [-- --only demux,egress,first-frame,boundary,lateness]`: the
 * gateway's figures, each against its comparison in the same run. Prints tables; writes JSON.
 */
import fs from 'node:fs';
import path from 'node:path';
import { benchChorusDemux, benchSeedDemux, type DemuxResult } from './bench/demux.js';
import { benchEgress, type EgressResult } from './bench/egress.js';
import { benchFirstFrame } from './bench/first-frame.js';
import { benchBoundaries } from './bench/boundary.js';
import { defineCommand, parseCommandLine, UsageError } from './lib/cli.js';
import { DEFAULT_LOAD, runOnce, type Mode } from './lib/run.js';
import { figuresTable, runsTable } from './lib/report.js';

const PARTS = ['demux', 'egress', 'first-frame', 'boundary', 'lateness'] as const;

const COMMAND = defineCommand({
  name: 'bench-gateway',
  usage: 'npm run bench:gateway -- [flags]',
  about: "The gateway's figures, each against its comparison in the same run. Prints tables; writes JSON.",
  flags: {
    json: { type: 'string', value: 'FILE', help: 'where the JSON goes (artifacts/bench-gateway.json)' },
    only: { type: 'string', value: 'PART[,PART…]', help: `the parts to run, of ${PARTS.join(', ')} (all)` },
  },
});

function readArgs(): { json: string; only: Set<string> } {
  return parseCommandLine(COMMAND, (v) => {
    const only = (v.only ?? PARTS.join(',')).split(',');
    const unknown = only.filter((p) => !(PARTS as readonly string[]).includes(p));
    if (unknown.length > 0) throw new UsageError(`--only: ${unknown.join(', ')} is not one of ${PARTS.join(', ')}`);
    return { json: v.json ?? 'artifacts/bench-gateway.json', only: new Set(only) };
  });
}


async function main(): Promise<void> {
  const { json, only } = readArgs();
  const out: Record<string, unknown> = { machine: { cpus: (await import('node:os')).cpus().length, node: process.version } };

  if (only.has('demux')) {
    const results: DemuxResult[] = [];
    for (const sessions of [10, 100, 1000]) {
      process.stderr.write(`demux: ${sessions} sessions…\n`);
      results.push(await benchChorusDemux(sessions));
      results.push(await benchSeedDemux(sessions));
    }
    const seedOf = (r: DemuxResult) => results.find((b) => b.reader === 'seed-baseline' && b.sessions === r.sessions)!;
    console.log('\nDemux: frames routed from one Unix socket into per-session buffers (320-byte payloads)');
    console.log('frames/busy s = frames per second of the reading thread\'s own busy time (writer and kernel excluded)\n');
    console.log(
      figuresTable(
        results.map((r) => ({
          reader: r.reader,
          sessions: r.sessions,
          'frames/s': Math.round(r.framesPerSecond),
          'MB/s': r.mbPerSecond,
          'reader busy': r.readerBusy,
          'frames/busy s': Math.round(r.framesPerBusySecond),
          'vs seed': r.framesPerBusySecond / seedOf(r).framesPerBusySecond,
        })),
      ),
    );
    out.demux = results;
  }

  if (only.has('egress')) {
    const results: EgressResult[] = [];
    for (const sessions of [50, 500, 2000]) {
      for (const mode of ['port', 'ring'] as const) {
        process.stderr.write(`egress: ${mode}, ${sessions} sessions on one worker…\n`);
        results.push(await benchEgress(mode, sessions));
      }
    }
    console.log('\nEgress: paced frames from one worker to the main thread (one frame per session per 20 ms)\n');
    console.log(
      figuresTable(
        results.map((r) => ({
          way: r.mode === 'port' ? 'MessagePort, transferred batch' : 'shared Ring + notify',
          sessions: r.sessions,
          frames: r.frames,
          'main µs/frame': r.mainBusyPerFrameUs,
          'p50 ms': r.latencyMs.p50,
          'p99 ms': r.latencyMs.p99,
          'max ms': r.latencyMs.max,
        })),
      ),
    );
    out.egress = results;
  }

  if (only.has('first-frame')) {
    const r = await benchFirstFrame(50);
    console.log('\nPlay → first frame at a WebSocket listener (real engine, tone: source, pre-warmed threads)\n');
    console.log(figuresTable([{ plays: r.plays, 'p50 ms': r.p50Ms, 'p99 ms': r.p99Ms, 'max ms': r.maxMs, 'first (cold) ms': r.coldMs }]));
    out.firstFrame = r;
  }

  if (only.has('boundary')) {
    const results = [await benchBoundaries('queue'), await benchBoundaries('play-on-finished')];
    console.log('\nTrack changes at a WebSocket listener: 10 sessions × 10 boundaries between one-second tones (real engine)');
    console.log('missing/added: frames an item lacked or had over its 50; gap: silence at the listener at the change\n');
    console.log(
      figuresTable(
        results.map((r) => ({
          way: r.way,
          boundaries: r.boundaries,
          'missing p99': r.missingFrames.p99,
          'missing total': r.missingFrames.total,
          'added p99': r.addedFrames.p99,
          'added total': r.addedFrames.total,
          'seq breaks': r.seqBreaks,
          'ts breaks': r.timestampBreaks,
          'gap p50 ms': r.gapMs.p50,
          'gap p99 ms': r.gapMs.p99,
          'gap max ms': r.gapMs.max,
          'in-item gap p99 ms': r.withinItemGapMs.p99,
          underruns: r.underruns,
        })),
      ),
    );
    out.boundary = results;
  }

  if (only.has('lateness')) {
    // The load test's own run (scripts/lib/run.ts): synthetic engine, listeners in their own process.
    const runs = [];
    for (const mode of [{ kind: 'thread' }, { kind: 'shared', k: 64 }] as Mode[]) {
      for (const sessions of [10, 50, 100]) {
        runs.push(
          await runOnce({
            ...DEFAULT_LOAD,
            mode,
            sessions,
            durationS: 10,
            listenerProcs: 1,
            base: process.hrtime.bigint(),
            log: (line) => process.stderr.write(line + '\n'),
            progress: (line) => process.stderr.write(`\r${line}   `),
          }),
        );
      }
    }
    console.log('\nPer-frame lateness at WebSocket listeners (synthetic engine; load test harness)\n');
    console.log(runsTable(runs));
    out.lateness = runs.map((r) => ({ mode: r.mode, sessions: r.sessions, lateness: r.lateness, lost: r.lost.total, misrouted: r.misrouted }));
  }

  fs.mkdirSync(path.dirname(json), { recursive: true });
  fs.writeFileSync(json, JSON.stringify(out, null, 2));
  console.log(`\nJSON: ${json}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
