/**
 * `npm run bench:voice [-- --guilds 10,50 --modes thread,shared:8,baseline --seconds 10 --json FILE]`
 *
 * N guilds from the synthetic engine to stand-in Discord voice receivers on loopback
 * (test/helpers/discord-voice-server.ts, decoding off), in three ways side by side:
 *   thread     chorus, a worker thread per session, voice sent from the worker's clock
 *   shared:k   chorus, k sessions per worker thread
 *   baseline   @discordjs/voice the ordinary way: an AudioPlayer per guild on one main thread,
 *              fed the same frames (scripts/lib/voice-baseline-main.ts)
 * each once as is and once with a 100 ms main-thread block every 2 s (chorus: /debug/block; the
 * baseline blocks its own main thread). At the receivers: packet inter-arrival p50/p99/max and
 * lost packets (a fixed-length tone has exactly seconds × 50); of the sending process: CPU and
 * RSS per guild. The receivers run in this process, so their load counts in the machine's.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineCommand, numberFlag, parseCommandLine, UsageError } from './lib/cli.js';
import { readProc, spawnRole, type Spawned } from './lib/procs.js';
import { toneHz, toneUrl } from './lib/tones.js';
import { VoiceServer, type VoiceGuild } from '../test/helpers/discord-voice-server.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '../..');
const CLI = path.join(REPO_ROOT, 'dist/main/cli.js');
const SYNTHETIC_MAIN = path.join(HERE, 'lib/synthetic-engine-main.js');
const BASELINE_MAIN = path.join(HERE, 'lib/voice-baseline-main.js');
const BLOCK_EVERY_MS = 2000;
const BLOCK_MS = 100;

const COMMAND = defineCommand({
  name: 'bench:voice',
  usage: 'npm run bench:voice -- [--guilds N[,N…]] [--modes M[,M…]] [--seconds S] [--json FILE]',
  about: 'N guilds to stand-in Discord voice receivers on loopback: chorus (thread, shared:k) beside an AudioPlayer-per-guild baseline, with and without main-thread blocks.',
  flags: {
    guilds: { type: 'string', value: 'N[,N…]', help: 'guild counts to measure (10,50)' },
    modes: { type: 'string', value: 'M[,M…]', help: 'thread | shared:<k> | baseline (thread,shared:8,baseline)' },
    seconds: { type: 'string', value: 'S', help: 'length of each tone, and of each run (10)' },
    json: { type: 'string', value: 'FILE', help: 'also write the rows as JSON' },
  },
});

function options() {
  return parseCommandLine(COMMAND, (v) => {
    const guildCounts = (v.guilds ?? '10,50').split(',').map((n) => numberFlag('guilds', n, 1, 10_000, true));
    const modes = (v.modes ?? 'thread,shared:8,baseline').split(',');
    for (const mode of modes) {
      if (!/^(thread|baseline|shared:[1-9]\d*)$/.test(mode)) throw new UsageError(`--modes: thread, shared:<k> or baseline, got ${JSON.stringify(mode)}`);
    }
    const seconds = numberFlag('seconds', v.seconds ?? '10', 2, 3600);
    return { guildCounts, modes, seconds, json: v.json };
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Row {
  mode: string;
  guilds: number;
  block: string;
  p50: number;
  p99: number;
  max: number;
  lost: number;
  /** Frames the chorus workers had sent by the end (baseline: not counted), and voice disconnects logged. */
  sent: number | string;
  disconnects: number | string;
  /** UDP datagrams the kernel dropped for a full receive buffer during the run (whole machine). */
  rcvbufErrors: number;
  cpuPerGuildPct: number;
  rssPerGuildMiB: number;
}

/** The kernel's count of UDP datagrams dropped for a full socket receive buffer (/proc/net/snmp). */
function udpRcvbufErrors(): number {
  const lines = fs.readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp:'));
  const names = lines[0]!.split(/\s+/);
  const values = lines[1]!.split(/\s+/);
  return Number(values[names.indexOf('RcvbufErrors')]);
}

function quantile(sorted: number[], q: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

/** Inter-arrival of audio packets (silence frames left out), all guilds pooled; lost against `expected` each. */
function measure(guilds: VoiceGuild[], expected: number): { p50: number; p99: number; max: number; lost: number } {
  const gaps: number[] = [];
  let lost = 0;
  for (const g of guilds) {
    const audio = g.packets.filter((p) => !p.silence);
    lost += Math.max(0, expected - audio.length);
    for (let i = 1; i < audio.length; i++) gaps.push(audio[i]!.at - audio[i - 1]!.at);
  }
  gaps.sort((a, b) => a - b);
  return { p50: quantile(gaps, 0.5), p99: quantile(gaps, 0.99), max: gaps.at(-1) ?? NaN, lost };
}

async function startEngine(dir: string, guilds: number): Promise<{ proc: Spawned; url: string; socket: string }> {
  const socket = path.join(dir, 'engine.sock');
  const proc = spawnRole('synthetic-engine', [SYNTHETIC_MAIN, '--socket', socket, '--prepare', String(guilds)], process.env);
  const m = await proc.waitFor(/ready http=(\S+)/, 120_000);
  return { proc, url: m[1]!, socket };
}

async function runOnce(mode: string, n: number, seconds: number, block: boolean): Promise<Row> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-bench-voice-'));
  // Discord's heartbeat interval (the stand-in's 1 s default closes a starved client with 4009).
  const server = await VoiceServer.start({ decode: false, heartbeatIntervalMs: 13_750 });
  const specs = Array.from({ length: n }, (_, i) => {
    const creds = {
      guildId: `7${String(100000000000 + i)}`,
      channelId: `8${String(100000000000 + i)}`,
      userId: '900000000000000001',
      sessionId: `bench-session-${i}`,
      token: `bench-token-${i}`,
    };
    return { ...creds, id: `bv-${i}`, url: toneUrl(toneHz(i), seconds), endpoint: server.endpoint };
  });
  const guilds = specs.map((s) => server.guild(s));
  const started: Spawned[] = [];
  let sender: Spawned | undefined;
  let cpuBefore = 0;
  try {
    const engine = await startEngine(dir, n);
    started.push(engine.proc);
    const blockTimers: NodeJS.Timeout[] = [];
    if (mode === 'baseline') {
      const specFile = path.join(dir, 'guilds.json');
      fs.writeFileSync(specFile, JSON.stringify(specs));
      sender = spawnRole(
        'voice-baseline',
        [BASELINE_MAIN, '--socket', engine.socket, '--engine', engine.url, '--spec', specFile, '--frames', String(seconds * 50 + 10), ...(block ? ['--block-every', String(BLOCK_EVERY_MS), '--block-ms', String(BLOCK_MS)] : [])],
        { ...process.env, NODE_EXTRA_CA_CERTS: server.caFile },
      );
      started.push(sender);
      await sender.waitFor(/voice-baseline ready/, 120_000);
      cpuBefore = readProc(sender.pid, 0)?.cpuSeconds ?? 0;
      await sender.waitFor(/voice-baseline playing/, 120_000);
    } else {
      const k = mode.startsWith('shared:') ? mode.slice(7) : '1';
      sender = spawnRole('gateway', [CLI, 'gateway'], {
        ...Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('CHORUS_'))),
        NODE_EXTRA_CA_CERTS: server.caFile,
        CHORUS_PORT: '0',
        CHORUS_SOCKET: engine.socket,
        CHORUS_ENGINE_URL: engine.url,
        CHORUS_DATA_DIR: path.join(dir, 'data'),
        CHORUS_VOICE_ALLOW: '127.0.0.1',
        CHORUS_SESSIONS_PER_THREAD: k,
        CHORUS_MAX_SESSIONS: String(Math.max(256, n)),
        CHORUS_DEBUG_ENDPOINTS: '1',
      });
      started.push(sender);
      const gw = (await sender.waitFor(/gateway ready http=(\S+)/, 60_000))[1]!;
      for (const s of specs) {
        const { id, url: _url, ...voice } = s;
        const r = await fetch(`${gw}/sessions/${id}/voice`, { method: 'PUT', body: JSON.stringify(voice) });
        if (!r.ok) throw new Error(`PUT voice ${id}: ${r.status} ${await r.text()}`);
      }
      for (;;) {
        const body = (await (await fetch(`${gw}/sessions`)).json()) as { sessions: { voice?: { status: string } }[] };
        if (body.sessions.filter((s) => s.voice?.status === 'ready').length === n) break;
        await sleep(200);
      }
      cpuBefore = readProc(sender.pid, 0)?.cpuSeconds ?? 0;
      for (const s of specs) {
        const r = await fetch(`${gw}/sessions/${s.id}/play`, { method: 'POST', body: JSON.stringify({ url: s.url }) });
        if (!r.ok) throw new Error(`play ${s.id}: ${r.status} ${await r.text()}`);
      }
      if (block) {
        blockTimers.push(setInterval(() => void fetch(`${gw}/debug/block?ms=${BLOCK_MS}`, { method: 'POST' }).catch(() => undefined), BLOCK_EVERY_MS));
      }
    }
    const t0 = performance.now();
    const rcvbufBefore = udpRcvbufErrors();
    // Every guild's tone, then its five silence frames, or the time it had.
    while (performance.now() - t0 < (seconds + 10) * 1000) {
      if (guilds.every((g) => g.packets.filter((p) => !p.silence).length >= seconds * 50)) break;
      await sleep(250);
    }
    const elapsed = (performance.now() - t0) / 1000;
    for (const t of blockTimers) clearInterval(t);
    let sent: number | string = '-';
    let disconnects: number | string = '-';
    if (mode !== 'baseline') {
      const gw = (await sender.waitFor(/gateway ready http=(\S+)/, 1000))[1]!;
      const body = (await (await fetch(`${gw}/sessions`)).json()) as { sessions: { sent: number }[] };
      sent = body.sessions.reduce((a, s) => a + s.sent, 0);
      disconnects = sender.logs.filter((l) => l.includes('voice disconnected')).length;
    }
    const after = readProc(sender.pid, 0);
    const m = measure(guilds, seconds * 50);
    return {
      mode,
      guilds: n,
      block: block ? `${BLOCK_MS} ms / ${BLOCK_EVERY_MS / 1000} s` : 'none',
      ...m,
      sent,
      disconnects,
      rcvbufErrors: udpRcvbufErrors() - rcvbufBefore,
      cpuPerGuildPct: after ? (((after.cpuSeconds - cpuBefore) / elapsed) * 100) / n : NaN,
      rssPerGuildMiB: after ? after.rssBytes / 1024 / 1024 / n : NaN,
    };
  } finally {
    for (const p of started.reverse()) await p.stop(3000).catch(() => undefined);
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function table(rows: Row[]): string {
  const cols = Object.keys(rows[0]!) as (keyof Row)[];
  const cell = (v: string | number) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : v);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padStart(width[i]!)).join('  ');
  return [line(cols), line(width.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => cell(r[c]))))].join('\n');
}

async function main(): Promise<void> {
  const { guildCounts, modes, seconds, json } = options();
  const rows: Row[] = [];
  for (const n of guildCounts) {
    for (const block of [false, true]) {
      for (const mode of modes) {
        process.stderr.write(`bench:voice ${mode} ${n} guilds${block ? ', main-thread blocks' : ''}…\n`);
        rows.push(await runOnce(mode, n, seconds, block));
        process.stderr.write(`${JSON.stringify(rows.at(-1))}\n`);
      }
    }
  }
  console.log(`\nDiscord voice: ${seconds} s tones to stand-in receivers on loopback (node ${process.version}, ${os.cpus().length} cores)`);
  console.log('p50/p99/max: audio packet inter-arrival at the receivers, ms; lost: packets of seconds × 50 not received;');
  console.log('cpu/rss: the sending process (chorus gateway or the baseline), per guild\n');
  console.log(table(rows));
  if (json) fs.writeFileSync(json, JSON.stringify({ node: process.version, cpus: os.cpus().length, seconds, rows }, null, 2));
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
