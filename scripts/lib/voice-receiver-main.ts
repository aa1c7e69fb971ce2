/**
 * A receiver process of `npm run bench:voice`: one stand-in Discord voice server
 * (test/helpers/discord-voice-server.ts, Opus decoding off, Discord's 13.75 s heartbeat interval)
 * for a share of the guilds, in a process of its own, so that its event loop is not the bench's
 * and the sender's CPU, read from /proc, is the sender's own. The stand-in checks every packet as
 * in the tests but keeps no packet objects (`keepPackets: false`): what follows reads its compact
 * per-session logs, so this process's heap stays small and its GC pauses short.
 *
 *   node voice-receiver-main.js --spec FILE --frames N [--dump FILE]   (IPC: started with an 'ipc' channel)
 *
 * FILE is JSON: [{ guildId, userId, sessionId, token }]. Messages out: `{ type: 'ready',
 * endpoint, ca }` (ca: the PEM of the test CA its certificate chains to), `{ type: 'done' }`
 * once every guild has N audio packets; in: `{ type: 'report' }`, answered with a
 * ReceiverReport (and, with --dump, every audio packet's arrival written to FILE first).
 *
 * Lateness, as the load test's listeners count it (scripts/lib/listener-proc.ts): within a
 * guild's voice session, audio packet k ideally arrives at a + 20 ms · k, a the schedule of the
 * most punctual packet; lateness = t_k − 20 ms · k − a ≥ 0, so every delay counts and a gap
 * delays every packet after it.
 */
import fs from 'node:fs';
import { constants, monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks';
import { FRAME_MS } from '../../src/shared/audio.js';
import { VoiceServer, type VoiceGuild } from '../../test/helpers/discord-voice-server.js';
import { LatencyCounts, type LatencyCountsJson } from './stats.js';

export interface ReceiverReport {
  type: 'report';
  lateness: LatencyCountsJson;
  /**
   * Lateness of the packets that arrived in the steady state only (from `steadyAfterMs` after the
   * bench's `measure`, sent once every play had been started), against each session's own
   * schedule within that window: how evenly the guilds are paced once none is starting.
   */
  steady: LatencyCountsJson;
  /** Inter-arrival of consecutive audio packets of a voice session, ms. */
  interval: LatencyCountsJson;
  /** Audio packets short of N, all guilds. */
  lost: number;
  packets: number;
  /** Fresh Identifies beyond each guild's first (a reconnect), and Resumes. */
  reconnects: number;
  resumes: number;
  violations: string[];
  /**
   * Sessions still late at their end (their last 10 packets all more than 5 ms behind the
   * schedule): a shift that stayed, not a stall that was caught up.
   */
  shifted: number;
  /** This process from the bench's `measure` on: how late its own event loop ran, its GC pauses, its CPU. */
  self: ReceiverSelf;
}

export interface ReceiverSelf {
  loopP50: number;
  loopP99: number;
  loopMax: number;
  gcCount: number;
  gcTotalMs: number;
  gcMaxMs: number;
  /** The longest pause of each kind of GC (scavenge, mark-sweep-compact, …), ms. */
  gcMaxByKind: Record<string, number>;
  cpuPct: number;
}

/** Discord's heartbeat interval (the stand-in's 1 s default would close a starved client with 4009). */
const HEARTBEAT_MS = 13_750;
/** A session whose last packets are all later than this is counted as shifted. */
const SHIFTED_MS = 5;

function optionalArg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

/** Every audio packet's arrival (ms since the epoch) per guild, for lining stalls up across processes. */
function dumpArrivals(file: string, guilds: VoiceGuild[]): void {
  const out: Record<string, number[]> = {};
  for (const g of guilds) out[g.guildId] = g.received.flatMap((log) => Array.from(log.audioArrivals(), (at) => performance.timeOrigin + at));
  fs.writeFileSync(file, JSON.stringify(out));
}

function arg(name: string): string {
  const v = optionalArg(name);
  if (v === undefined) throw new Error(`voice-receiver: ${name} is required`);
  return v;
}

/** A GC entry's detail.kind, named: minor is a scavenge of the young generation, major a mark-compact. */
const GC_KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

/** From the bench's `measure` message on: event-loop delay, GC pauses and CPU of this process. */
class SelfWatch {
  private readonly loop = monitorEventLoopDelay({ resolution: 1 });
  private gcCount = 0;
  private gcTotalMs = 0;
  private gcMaxMs = 0;
  private gcMaxByKind: Record<string, number> = {};
  private cpuFrom = process.cpuUsage();
  private from = performance.now();

  constructor() {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        this.gcCount++;
        const kind = GC_KINDS[((e as unknown as { detail?: { kind?: number } }).detail)?.kind ?? 0] ?? 'other';
        this.gcMaxByKind[kind] = Math.max(this.gcMaxByKind[kind] ?? 0, e.duration);
        this.gcTotalMs += e.duration;
        if (e.duration > this.gcMaxMs) this.gcMaxMs = e.duration;
      }
    }).observe({ entryTypes: ['gc'] });
    this.loop.enable();
  }

  start(): void {
    this.loop.reset();
    this.gcCount = 0;
    this.gcTotalMs = 0;
    this.gcMaxMs = 0;
    this.gcMaxByKind = {};
    this.cpuFrom = process.cpuUsage();
    this.from = performance.now();
  }

  read(): ReceiverSelf {
    const cpu = process.cpuUsage(this.cpuFrom);
    const ms = (ns: number) => ns / 1e6;
    return {
      loopP50: ms(this.loop.percentile(50)),
      loopP99: ms(this.loop.percentile(99)),
      loopMax: ms(this.loop.max),
      gcCount: this.gcCount,
      gcTotalMs: this.gcTotalMs,
      gcMaxMs: this.gcMaxMs,
      gcMaxByKind: this.gcMaxByKind,
      cpuPct: (100 * (cpu.user + cpu.system)) / 1000 / (performance.now() - this.from),
    };
  }
}

/**
 * Records the lateness of packets `from`… of one voice session against its schedule within them
 * (anchored on the most punctual one); returns that anchor.
 */
function recordLateness(times: Float64Array, from: number, counts: LatencyCounts): number {
  let anchor = Infinity;
  for (let k = from; k < times.length; k++) anchor = Math.min(anchor, times[k]! - FRAME_MS * k);
  for (let k = from; k < times.length; k++) counts.record(times[k]! - FRAME_MS * k - anchor);
  return anchor;
}

function report(guilds: VoiceGuild[], frames: number, self: ReceiverSelf, steadyFrom: number): ReceiverReport {
  const lateness = new LatencyCounts();
  const steady = new LatencyCounts();
  const interval = new LatencyCounts();
  let lost = 0;
  let packets = 0;
  let reconnects = 0;
  let resumes = 0;
  let shifted = 0;
  const violations: string[] = [];
  for (const g of guilds) {
    const audio = g.audioPacketCount;
    packets += audio;
    lost += Math.max(0, frames - audio);
    reconnects += Math.max(0, g.connections.filter((c) => c.kind === 'identify').length - 1);
    resumes += g.connections.filter((c) => c.kind === 'resume').length;
    for (const v of g.ownViolations.slice(0, 3)) violations.push(`${g.guildId}: ${v.kind}: ${v.message}`);
    for (const log of g.received.filter((l) => l.audio > 0)) {
      const times = log.audioArrivals();
      const anchor = recordLateness(times, 0, lateness);
      for (let k = 1; k < times.length; k++) interval.record(times[k]! - times[k - 1]!);
      const first = times.findIndex((t) => t >= steadyFrom);
      if (first >= 0) recordLateness(times, first, steady);
      let tail = Infinity;
      for (let k = Math.max(0, times.length - 10); k < times.length; k++) tail = Math.min(tail, times[k]! - FRAME_MS * k - anchor);
      if (tail > SHIFTED_MS) shifted++;
    }
  }
  return { type: 'report', lateness: lateness.toJSON(), steady: steady.toJSON(), interval: interval.toJSON(), lost, packets, reconnects, resumes, violations: violations.slice(0, 20), shifted, self };
}

async function main(): Promise<void> {
  const specs = JSON.parse(fs.readFileSync(arg('--spec'), 'utf8')) as { guildId: string; userId: string; sessionId: string; token: string }[];
  const frames = Number(arg('--frames'));
  // Room for the tone and the silence frames after it in each session's log from the start.
  const server = await VoiceServer.start({ decode: false, keepPackets: false, expectedPackets: frames + 16, heartbeatIntervalMs: HEARTBEAT_MS });
  const guilds = specs.map((s) => server.guild(s));
  const send = (m: object) => process.send!(m);
  send({ type: 'ready', endpoint: server.endpoint, ca: fs.readFileSync(server.caFile, 'utf8') });
  const complete = (g: VoiceGuild) => g.audioPacketCount >= frames;
  const done = setInterval(() => {
    if (guilds.every(complete)) {
      clearInterval(done);
      send({ type: 'done' });
    }
  }, 250);
  const watch = new SelfWatch();
  let steadyFrom = Infinity;
  process.on('message', (m: { type?: string; steadyAfterMs?: number }) => {
    if (m.type === 'measure') {
      watch.start();
      steadyFrom = performance.now() + (m.steadyAfterMs ?? 0);
    }
    if (m.type !== 'report') return;
    const dump = optionalArg('--dump');
    if (dump) dumpArrivals(dump, guilds);
    send(report(guilds, frames, watch.read(), steadyFrom));
  });
  process.once('SIGTERM', () => {
    clearInterval(done);
    void server.stop().then(() => process.exit(0));
  });
  process.once('disconnect', () => process.exit(0));
}

main().catch((err: Error) => {
  console.error(`voice-receiver: ${err.stack ?? err.message}`);
  process.exit(1);
});
