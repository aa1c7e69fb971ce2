/**
 * `npm run bench:voice [-- --guilds 10,50,100,200,500 --modes thread,shared:64,baseline --seconds 10 --json FILE]`
 *
 * N guilds from the synthetic engine to stand-in Discord voice receivers on loopback
 * (scripts/lib/voice-receiver-main.ts: test/helpers/discord-voice-server.ts in processes of their
 * own, decoding off, every packet checked but only its arrival, seq, timestamp and silence flag
 * kept), in three ways side by side:
 *   thread     chorus, a worker thread per session, voice sent from the worker's clock
 *   shared:k   chorus, k sessions per worker thread
 *   baseline   @discordjs/voice the ordinary way: an AudioPlayer per guild on one main thread,
 *              fed the same frames (scripts/lib/voice-baseline-main.ts)
 * each once as is and once with a 100 ms main-thread block every 2 s (chorus: /debug/block; the
 * baseline blocks its own main thread). At the receivers: lateness p50/p99/max (as the load
 * test's listeners count it: against each guild's own 20 ms schedule), packet inter-arrival
 * p99/max, lost packets (a tone of S seconds is exactly S × 50). Of the sending process: CPU per
 * guild and per packet while every guild plays (not the start of the plays), its main thread's
 * share of it, RSS per guild; of the receivers: their CPU; of the machine: how busy its cores were.
 *
 * --profile DIR runs the senders under `node --cpu-prof` and prints where their time went.
 *
 * Where a tail comes from: steadyP50/P99/max is the lateness of the packets received once every
 * play had been started (start-up excluded, each guild's schedule taken within that window);
 * rcvLoopP99, rcvLoopMax and rcvGcMax are the receivers' own event-loop delay and longest GC pause (a late receiver
 * counts its own delay as the sender's); sendP99/sendMax how late the sending workers' wakes ran
 * against the frames' deadlines (worst session); shifted the guilds still > 5 ms late at their
 * end (a gap that was never caught up: an underrun, a resync); underruns the workers' count.
 * --dump DIR writes every packet's arrival (epoch ms, per guild) to line stalls up across the
 * receivers; --blocks none skips the runs with main-thread blocks; --prebuffer MS sets the
 * gateway's CHORUS_PREBUFFER_MS.
 */
import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writePanelsChart } from './lib/chart.js';
import { choiceFlag, defineCommand, numberFlag, parseCommandLine, UsageError } from './lib/cli.js';
import { readMachineCpu, readProc, readThreadsCpu, spawnRole, type Spawned } from './lib/procs.js';
import { summarizeProfile } from './lib/profile.js';
import { LatencyHistogram } from './lib/stats.js';
import { toneHz, toneUrl } from './lib/tones.js';
import type { ReceiverReport } from './lib/voice-receiver-main.js';
import { figuresTable } from './lib/report.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '../..');
const CLI = path.join(REPO_ROOT, 'dist/main/cli.js');
const SYNTHETIC_MAIN = path.join(HERE, 'lib/synthetic-engine-main.js');
const BASELINE_MAIN = path.join(HERE, 'lib/voice-baseline-main.js');
const RECEIVER_MAIN = path.join(HERE, 'lib/voice-receiver-main.js');
/**
 * A receiver keeps almost nothing per packet, but each one leaves short-lived garbage (the
 * datagram, a decipher): with a 1 MiB young generation it is swept in scavenges of ~1 ms instead
 * of ~3–10 ms with V8's default (measured, 125 guilds per receiver), each well inside the 5 ms bound.
 */
const RECEIVER_NODE_ARGS = ['--max-semi-space-size=1'];
const FRAMES_PER_SECOND = 50;
/** The sender's CPU window: from this long after the last play was started … */
const STEADY_AFTER_MS = 1000;
/** … to this long before the first tone ends; shorter than MIN_WINDOW_MS is no window. */
const STEADY_BEFORE_END_MS = 500;
const MIN_WINDOW_MS = 1000;
/** Play requests the bench has open at once. */
const PLAYS_AT_ONCE = 16;
const BLOCK_EVERY_MS = 2000;
const BLOCK_MS = 100;
/** The bound a mode must hold at the receivers, with nothing lost, to count as carrying N guilds. */
export const VOICE_P99_TARGET_MS = 5;

const COMMAND = defineCommand({
  name: 'bench:voice',
  usage: 'npm run bench:voice -- [--guilds N[,N…]] [--modes M[,M…]] [--seconds S] [--receivers R] [--json FILE] [--chart FILE] [--profile DIR]',
  about: 'N guilds to stand-in Discord voice receivers (processes of their own) on loopback: chorus (thread, shared:k) beside an AudioPlayer-per-guild baseline, with and without main-thread blocks.',
  flags: {
    guilds: { type: 'string', value: 'N[,N…]', help: 'guild counts to measure (10,50,100,200,500)' },
    modes: { type: 'string', value: 'M[,M…]', help: 'thread | shared:<k> | baseline (thread,shared:64,baseline)' },
    'thread-max': { type: 'string', value: 'N', help: 'thread mode only up to this many guilds: a thread each costs ~7 MB and past a few hundred the machine, not the mode, is measured (200)' },
    seconds: { type: 'string', value: 'S', help: 'length of each tone, and of each run (10)' },
    receivers: { type: 'string', value: 'R', help: 'receiver processes (one per 100 guilds, at most 4)' },
    json: { type: 'string', value: 'FILE', help: 'write the rows as JSON (artifacts/bench-voice.json)' },
    chart: { type: 'string', value: 'FILE', help: 'write the chart as SVG (artifacts/bench-voice.svg)' },
    profile: { type: 'string', value: 'DIR', help: 'run the senders under node --cpu-prof, profiles in DIR/<mode>-<N>' },
    dump: { type: 'string', value: 'DIR', help: "write each receiver's packet arrivals (epoch ms per guild) to DIR/<mode>-<N>-receiver-<i>.json" },
    prebuffer: { type: 'string', value: 'MS', help: "chorus: CHORUS_PREBUFFER_MS of the gateway (its default)" },
    blocks: { type: 'string', value: 'B[,B…]', help: 'none | with: runs without and with main-thread blocks (none,with)' },
  },
});

function options() {
  return parseCommandLine(COMMAND, (v) => {
    const guildCounts = (v.guilds ?? '10,50,100,200,500').split(',').map((n) => numberFlag('guilds', n, 1, 10_000, true));
    const modes = (v.modes ?? 'thread,shared:64,baseline').split(',');
    for (const mode of modes) {
      if (!/^(thread|baseline|shared:[1-9]\d*)$/.test(mode)) throw new UsageError(`--modes: thread, shared:<k> or baseline, got ${JSON.stringify(mode)}`);
    }
    const blocks = (v.blocks ?? 'none,with').split(',').map((b) => choiceFlag('blocks', b, ['none', 'with'] as const));
    return {
      blocks: blocks.map((b) => b === 'with'),
      guildCounts,
      modes,
      threadMax: numberFlag('thread-max', v['thread-max'] ?? '200', 1, 10_000, true),
      seconds: numberFlag('seconds', v.seconds ?? '10', 2, 3600),
      receivers: v.receivers === undefined ? undefined : numberFlag('receivers', v.receivers, 1, 64, true),
      json: v.json ?? path.join(REPO_ROOT, 'artifacts/bench-voice.json'),
      chart: v.chart ?? path.join(REPO_ROOT, 'artifacts/bench-voice.svg'),
      profile: v.profile,
      dump: v.dump,
      prebufferMs: v.prebuffer === undefined ? undefined : numberFlag('prebuffer', v.prebuffer, 0, 10_000, true),
    };
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface VoiceRow {
  mode: string;
  guilds: number;
  block: string;
  /** Lateness at the receivers, ms. */
  p50: number;
  p99: number;
  max: number;
  /**
   * Lateness of the packets received once every play had been started (from 1 s after the last),
   * against each guild's schedule within that window, ms: the steady state without the start-up.
   */
  steadyP50: number;
  steadyP99: number;
  steadyMax: number;
  /** Inter-arrival of audio packets at the receivers, ms. */
  gapP99: number;
  gapMax: number;
  lost: number;
  /** Frames the chorus workers had sent by the end (baseline: not counted). */
  sent: number | string;
  /** Fresh voice connections beyond the first, and resumed ones, as the receivers saw them. */
  reconnects: number;
  resumes: number;
  /** UDP datagrams the kernel dropped for a full receive buffer during the run (whole machine). */
  rcvbufErrors: number;
  cpuPerGuildPct: number;
  /** Sender CPU per audio packet received: what a guild costs, whatever share of the cores the sender got. */
  cpuPerPacketUs: number;
  rssPerGuildMiB: number;
  /** Of the sender's CPU, the share its main thread took, %. */
  mainShare: number;
  /** CPU of the receiver processes together, % of one core. */
  receiversCpuPct: number;
  /** The receivers' own event-loop delay (worst receiver's p99 and max) and GC pauses (longest), ms. */
  rcvLoopP99: number;
  rcvLoopMax: number;
  rcvGcMax: number;
  /** At the sending workers: how late a session's wake ran against its frame's deadline (worst session's p99 and max), ms. */
  sendP99: number;
  sendMax: number;
  /** Guilds still more than 5 ms late at their end (a lasting shift), and the workers' underruns. */
  shifted: number;
  underruns: number | string;
  /** Both cores, everything on the machine, % busy. */
  machineBusyPct: number;
  /** p99 ≤ 5 ms and nothing lost. */
  holds: boolean;
}

/** The kernel's count of UDP datagrams dropped for a full socket receive buffer (/proc/net/snmp). */
function udpRcvbufErrors(): number {
  const lines = fs.readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp:'));
  const names = lines[0]!.split(/\s+/);
  const values = lines[1]!.split(/\s+/);
  return Number(values[names.indexOf('RcvbufErrors')]);
}

interface Receiver {
  child: ReturnType<typeof fork>;
  endpoint: string;
  ca: string;
  done: Promise<void>;
  report(): Promise<ReceiverReport>;
  stop(): Promise<void>;
}

/** A receiver process for `guilds`; resolves once its voice server listens. */
async function startReceiver(dir: string, index: number, guilds: object[], frames: number, dump?: string): Promise<Receiver> {
  const spec = path.join(dir, `receiver-${index}.json`);
  fs.writeFileSync(spec, JSON.stringify(guilds));
  const child = fork(RECEIVER_MAIN, ['--spec', spec, '--frames', String(frames), ...(dump ? ['--dump', dump] : [])], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv: [...process.execArgv, ...RECEIVER_NODE_ARGS],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const next = (type: string) =>
    new Promise<any>((resolve, reject) => {
      const onMessage = (m: { type?: string }) => {
        if (m.type !== type) return;
        child.off('message', onMessage);
        resolve(m);
      };
      child.on('message', onMessage);
      void exited.then(() => reject(new Error(`voice receiver ${index} exited before '${type}'`)));
    });
  const done = next('done');
  done.catch(() => undefined);
  const ready = (await next('ready')) as { endpoint: string; ca: string };
  return {
    child,
    endpoint: ready.endpoint,
    ca: ready.ca,
    done,
    report: () => {
      const answer = next('report') as Promise<ReceiverReport>;
      child.send({ type: 'report' });
      return answer;
    },
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function startEngine(dir: string, guilds: number): Promise<{ proc: Spawned; url: string; socket: string }> {
  const socket = path.join(dir, 'engine.sock');
  const proc = spawnRole('synthetic-engine', [SYNTHETIC_MAIN, '--socket', socket, '--prepare', String(guilds)], process.env);
  const m = await proc.waitFor(/ready http=(\S+)/, 120_000);
  return { proc, url: m[1]!, socket };
}

interface RunOptions {
  seconds: number;
  receivers: number;
  profileDir?: string;
  dumpDir?: string;
  prebufferMs?: number;
}

async function runOnce(mode: string, n: number, block: boolean, o: RunOptions): Promise<VoiceRow> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-bench-voice-'));
  const frames = o.seconds * FRAMES_PER_SECOND;
  const creds = Array.from({ length: n }, (_, i) => ({
    guildId: `7${String(100000000000 + i)}`,
    channelId: `8${String(100000000000 + i)}`,
    userId: '900000000000000001',
    sessionId: `bench-session-${i}`,
    token: `bench-token-${i}`,
  }));
  const started: Spawned[] = [];
  const receivers: Receiver[] = [];
  const blockTimers: NodeJS.Timeout[] = [];
  try {
    const share = Math.ceil(n / o.receivers);
    const dumpFile = (r: number) => (o.dumpDir ? path.join(o.dumpDir, `${mode.replace(':', '-')}-${n}${block ? '-blocks' : ''}-receiver-${r}.json`) : undefined);
    if (o.dumpDir) fs.mkdirSync(o.dumpDir, { recursive: true });
    for (let r = 0; r * share < n; r++) receivers.push(await startReceiver(dir, r, creds.slice(r * share, (r + 1) * share), frames, dumpFile(r)));
    // Each receiver made its own test CA: the sender trusts them all.
    const caBundle = path.join(dir, 'voice-ca.pem');
    fs.writeFileSync(caBundle, receivers.map((r) => r.ca).join('\n'));
    const specs = creds.map((c, i) => ({ ...c, id: `bv-${i}`, url: toneUrl(toneHz(i), o.seconds), endpoint: receivers[Math.floor(i / share)]!.endpoint }));
    const engine = await startEngine(dir, n);
    started.push(engine.proc);
    const profile = o.profileDir ? path.join(o.profileDir, `${mode.replace(':', '-')}-${n}${block ? '-blocks' : ''}`) : undefined;
    const nodeArgs = profile ? ['--cpu-prof', '--cpu-prof-dir', profile] : [];
    let sender: Spawned;
    let firstPlayAt = 0;
    let gw = '';
    if (mode === 'baseline') {
      const specFile = path.join(dir, 'guilds.json');
      fs.writeFileSync(specFile, JSON.stringify(specs));
      sender = spawnRole(
        'voice-baseline',
        [BASELINE_MAIN, '--socket', engine.socket, '--engine', engine.url, '--spec', specFile, '--frames', String(frames + 10), ...(block ? ['--block-every', String(BLOCK_EVERY_MS), '--block-ms', String(BLOCK_MS)] : [])],
        { ...process.env, NODE_EXTRA_CA_CERTS: caBundle },
        { nodeArgs },
      );
      started.push(sender);
      await sender.waitFor(/voice-baseline ready/, 300_000);
      firstPlayAt = performance.now();
      await sender.waitFor(/voice-baseline playing/, 120_000);
    } else {
      const k = mode.startsWith('shared:') ? mode.slice(7) : '1';
      sender = spawnRole(
        'gateway',
        [CLI, 'gateway'],
        {
          ...Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('CHORUS_'))),
          NODE_EXTRA_CA_CERTS: caBundle,
          CHORUS_PORT: '0',
          CHORUS_SOCKET: engine.socket,
          CHORUS_ENGINE_URL: engine.url,
          CHORUS_DATA_DIR: path.join(dir, 'data'),
          CHORUS_VOICE_ALLOW: '127.0.0.1',
          CHORUS_SESSIONS_PER_THREAD: k,
          CHORUS_MAX_SESSIONS: String(Math.max(256, n)),
          CHORUS_DEBUG_ENDPOINTS: '1',
          ...(o.prebufferMs !== undefined ? { CHORUS_PREBUFFER_MS: String(o.prebufferMs) } : {}),
        },
        { nodeArgs },
      );
      started.push(sender);
      gw = (await sender.waitFor(/gateway ready http=(\S+)/, 60_000))[1]!;
      for (const s of specs) {
        const { id, url: _url, ...voice } = s;
        const r = await fetch(`${gw}/sessions/${id}/voice`, { method: 'PUT', body: JSON.stringify(voice) });
        if (!r.ok) throw new Error(`PUT voice ${id}: ${r.status} ${await r.text()}`);
      }
      const readyBy = performance.now() + 300_000;
      for (;;) {
        const body = (await (await fetch(`${gw}/sessions`)).json()) as { sessions: { voice?: { status: string } }[] };
        if (body.sessions.filter((s) => s.voice?.status === 'ready').length === n) break;
        if (performance.now() > readyBy) throw new Error(`${mode} ${n}: voice connections not all ready within 300 s`);
        await sleep(200);
      }
      firstPlayAt = performance.now();
      // A few at a time: started one by one, 500 plays take longer than a tone on a busy machine.
      for (let i = 0; i < specs.length; i += PLAYS_AT_ONCE) {
        await Promise.all(
          specs.slice(i, i + PLAYS_AT_ONCE).map(async (s) => {
            const r = await fetch(`${gw}/sessions/${s.id}/play`, { method: 'POST', body: JSON.stringify({ url: s.url }) });
            if (!r.ok) throw new Error(`play ${s.id}: ${r.status} ${await r.text()}`);
          }),
        );
      }
      if (block) {
        blockTimers.push(setInterval(() => void fetch(`${gw}/debug/block?ms=${BLOCK_MS}`, { method: 'POST' }).catch(() => undefined), BLOCK_EVERY_MS));
      }
    }
    const t0 = performance.now();
    const rcvbufBefore = udpRcvbufErrors();
    const machineBefore = readMachineCpu();
    const receiversBefore = receivers.reduce((a, r) => a + (readProc(r.child.pid!, 0)?.cpuSeconds ?? 0), 0);
    for (const r of receivers) r.child.send({ type: 'measure', steadyAfterMs: STEADY_AFTER_MS });
    const allDone = Promise.all(receivers.map((r) => r.done));
    // The sender's CPU is read while every guild plays: after the last play started (and its
    // start-up settled) and before the first tone ends, so that it is the cost of sending.
    const windowFrom = t0 + STEADY_AFTER_MS;
    const windowTo = firstPlayAt + o.seconds * 1000 - STEADY_BEFORE_END_MS;
    let cpu = { total: NaN, main: NaN, seconds: NaN };
    if (windowTo - windowFrom >= MIN_WINDOW_MS) {
      await sleep(windowFrom - performance.now());
      const from = { at: performance.now(), total: readProc(sender.pid, 0)?.cpuSeconds ?? NaN, main: readThreadsCpu(sender.pid)?.main ?? NaN };
      await sleep(windowTo - performance.now());
      const seconds = (performance.now() - from.at) / 1000;
      cpu = { total: (readProc(sender.pid, 0)?.cpuSeconds ?? NaN) - from.total, main: (readThreadsCpu(sender.pid)?.main ?? NaN) - from.main, seconds };
    } else {
      process.stderr.write(`  ${mode} ${n}: the plays took too long to start for a CPU window; raise --seconds\n`);
    }
    // Every guild's tone, or the time it had.
    await Promise.race([allDone, sleep(Math.max(0, t0 + (o.seconds + 10) * 1000 - performance.now()))]);
    const elapsed = (performance.now() - t0) / 1000;
    for (const t of blockTimers.splice(0)) clearInterval(t);
    const after = readProc(sender.pid, 0);
    for (const line of sender.logs.filter((l) => /voice disconnected|reconnecting/.test(l)).slice(0, 3)) process.stderr.write(`  ${sender.name}: ${line}\n`);
    const machineAfter = readMachineCpu();
    const receiversCpu = receivers.reduce((a, r) => a + (readProc(r.child.pid!, 0)?.cpuSeconds ?? 0), 0) - receiversBefore;
    let sent: number | string = '-';
    let underruns: number | string = '-';
    let sendP99 = NaN;
    let sendMax = NaN;
    if (mode !== 'baseline') {
      const body = (await (await fetch(`${gw}/sessions`)).json()) as { sessions: { sent: number; underruns: number }[] };
      sent = body.sessions.reduce((a, s) => a + s.sent, 0);
      underruns = body.sessions.reduce((a, s) => a + s.underruns, 0);
      const send: { p99: number; max: number }[] = [];
      for (let i = 0; i < specs.length; i += PLAYS_AT_ONCE) {
        await Promise.all(
          specs.slice(i, i + PLAYS_AT_ONCE).map(async (s) => {
            const r = (await (await fetch(`${gw}/sessions/${s.id}`)).json()) as { worker?: { sendLatenessMs: { p99: number; max: number } } };
            if (r.worker) send.push(r.worker.sendLatenessMs);
          }),
        );
      }
      sendP99 = Math.max(...send.map((x) => x.p99));
      sendMax = Math.max(...send.map((x) => x.max));
    }
    const lateness = new LatencyHistogram();
    const steady = new LatencyHistogram();
    const interval = new LatencyHistogram();
    let lost = 0;
    let packets = 0;
    let reconnects = 0;
    let resumes = 0;
    const selfs: ReceiverReport['self'][] = [];
    let shifted = 0;
    for (const r of receivers) {
      const rep = await r.report();
      lateness.merge(rep.lateness);
      steady.merge(rep.steady);
      interval.merge(rep.interval);
      lost += rep.lost;
      packets += rep.packets;
      reconnects += rep.reconnects;
      resumes += rep.resumes;
      selfs.push(rep.self);
      process.stderr.write(`  receiver: ${JSON.stringify(rep.self)}\n`);
      shifted += rep.shifted;
      for (const v of rep.violations.slice(0, 3)) process.stderr.write(`  receiver: ${v}\n`);
    }
    const l = lateness.percentiles();
    const g = interval.percentiles();
    const st = steady.percentiles();
    return {
      mode,
      guilds: n,
      block: block ? `${BLOCK_MS} ms / ${BLOCK_EVERY_MS / 1000} s` : 'none',
      p50: l.p50,
      p99: l.p99,
      max: l.max,
      steadyP50: st.p50,
      steadyP99: st.p99,
      steadyMax: st.max,
      gapP99: g.p99,
      gapMax: g.max,
      lost,
      sent,
      reconnects,
      resumes,
      rcvbufErrors: udpRcvbufErrors() - rcvbufBefore,
      cpuPerGuildPct: (100 * cpu.total) / cpu.seconds / n,
      cpuPerPacketUs: (1e6 * cpu.total) / (cpu.seconds * n * FRAMES_PER_SECOND),
      rssPerGuildMiB: after ? after.rssBytes / 1024 / 1024 / n : NaN,
      mainShare: (100 * cpu.main) / cpu.total,
      receiversCpuPct: (receiversCpu / elapsed) * 100,
      rcvLoopP99: Math.max(...selfs.map((x) => x.loopP99)),
      rcvLoopMax: Math.max(...selfs.map((x) => x.loopMax)),
      rcvGcMax: Math.max(...selfs.map((x) => x.gcMaxMs)),
      sendP99,
      sendMax,
      shifted,
      underruns,
      machineBusyPct: (100 * (machineAfter.busy - machineBefore.busy)) / Math.max(1, machineAfter.total - machineBefore.total),
      holds: l.count > 0 && l.p99 <= VOICE_P99_TARGET_MS && lost === 0,
    };
  } finally {
    for (const t of blockTimers) clearInterval(t);
    for (const p of started.reverse()) await p.stop(5000).catch(() => undefined);
    for (const r of receivers) await r.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}


/** Per mode and block: the most guilds that held (p99 ≤ 5 ms, nothing lost) with every smaller N holding too. */
function carried(rows: VoiceRow[]): string[] {
  const out: string[] = [];
  for (const block of [...new Set(rows.map((r) => r.block))]) {
    for (const mode of [...new Set(rows.map((r) => r.mode))]) {
      let most = 0;
      for (const r of rows.filter((x) => x.mode === mode && x.block === block).sort((a, b) => a.guilds - b.guilds)) {
        if (!r.holds) break;
        most = r.guilds;
      }
      out.push(`${mode.padStart(10)}  blocks ${block.padEnd(12)}  carries ${most || 'none of the'} guilds at p99 ≤ ${VOICE_P99_TARGET_MS} ms, nothing lost`);
    }
  }
  return out;
}

function writeJson(file: string, seconds: number, rows: VoiceRow[]): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const load = os.loadavg();
  fs.writeFileSync(file, JSON.stringify({ at: new Date().toISOString(), node: process.version, cpus: os.cpus().length, loadAverage: load, seconds, rows }, null, 2));
}

async function main(): Promise<void> {
  const o = options();
  const rows: VoiceRow[] = [];
  for (const n of o.guildCounts) {
    for (const block of o.blocks) {
      for (const mode of o.modes) {
        if (mode === 'thread' && n > o.threadMax) continue;
        process.stderr.write(`bench:voice ${mode} ${n} guilds${block ? ', main-thread blocks' : ''}…\n`);
        const receivers = o.receivers ?? Math.min(4, Math.ceil(n / 100));
        try {
          rows.push(await runOnce(mode, n, block, { seconds: o.seconds, receivers, profileDir: o.profile, dumpDir: o.dump, prebufferMs: o.prebufferMs }));
          process.stderr.write(`${JSON.stringify(rows.at(-1))}\n`);
          // After every run, so that a long run stopped part way keeps what it measured.
          writeJson(o.json, o.seconds, rows);
        } catch (err) {
          process.stderr.write(`bench:voice ${mode} ${n}: ${(err as Error).message}\n`);
        }
        if (o.profile) {
          const dir = path.join(o.profile, `${mode.replace(':', '-')}-${n}${block ? '-blocks' : ''}`);
          if (fs.existsSync(dir)) process.stderr.write(`${summarizeProfile(dir, 25)}\n`);
        }
      }
    }
  }
  if (rows.length === 0) throw new Error('no run completed');
  const load = os.loadavg().map((v) => v.toFixed(1)).join(' ');
  console.log(`\nDiscord voice: ${o.seconds} s tones to stand-in receivers (separate processes) on loopback (node ${process.version}, ${os.cpus().length} cores, load average now ${load})`);
  console.log('p50/p99/max: lateness at the receivers against each guild\'s 20 ms schedule, ms; gapP99/gapMax: packet inter-arrival, ms;');
  console.log('lost: packets of seconds × 50 not received; reconnects/resumes: fresh and resumed voice connections the receivers saw;');
  console.log('cpu/rss: the sending process (chorus gateway or the baseline): per guild, per packet received, and its main thread\'s share;');
  console.log(`receiversCpuPct: the receiver processes, % of one core; machineBusyPct: both cores, everything; holds: p99 ≤ ${VOICE_P99_TARGET_MS} ms and 0 lost\n`);
  console.log(figuresTable(rows));
  console.log(`\n${carried(rows).join('\n')}`);
  writeJson(o.json, o.seconds, rows);
  writePanelsChart(
    o.chart,
    rows.map((r) => ({ series: r.block === 'none' ? r.mode : `${r.mode} + blocks`, n: r.guilds, values: [r.p99, r.cpuPerPacketUs], bad: r.lost > 0 })),
    `Discord voice: ${o.seconds} s tones to stand-in receivers, ${os.cpus().length} cores (${new Date().toISOString().slice(0, 10)})`,
    'guilds N (log scale)',
    'hollow: packets lost',
    [
      { label: 'receiver p99 lateness, ms (log scale)', target: VOICE_P99_TARGET_MS, floor: 0.1 },
      { label: 'sender CPU per packet, µs (log scale)', floor: 1 },
    ],
  );
  console.log(`\nJSON: ${o.json}\nchart: ${o.chart}`);
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
