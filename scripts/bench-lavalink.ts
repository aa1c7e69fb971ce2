/**
 * `npm run bench:lavalink [-- --players N[,N…] --seconds S --patches K --per-thread T --source tone|opus --json FILE]`
 *
 * N Lavalink players driven through a real client (shoukaku 4, as a bot drives it, its Discord
 * voice events fed by a fake shard) on a real chorus node (engine: ffmpeg + Opus per player;
 * gateway: a worker per player) to stand-in Discord voice receivers on loopback
 * (test/helpers/discord-voice-server.ts, decoding off, no packet objects kept). Each player plays
 * its own tone, or with `--source opus` an Ogg Opus file of 20 ms packets, which the engine passes
 * through without decoding or encoding as it does YouTube's Opus. Over a window of S seconds once all play (players that failed to start are
 * counted and left out):
 *
 *   cadence p50/p99/max   audio packet inter-arrival at the receivers, ms, all players pooled
 *   lost                  packets of S × 50 a player should have had in the window and did not
 *   sent/nulled/deficit   Lavalink's frameStats per player per minute: frames sent, ticks that
 *                         had no frame (chorus's underruns), 3000 − sent − nulled
 *   cpu/rss per player    the engine (with its ffmpeg children) and the gateway together
 *   patch p50/p99         REST latency of a player PATCH (volume, through shoukaku) under the load:
 *                         K of them, spread over the window, each on another player
 *
 * The receivers and the client run in this process, so their load counts in the machine's.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Shoukaku, type Player } from 'shoukaku';
import { choiceFlag, defineCommand, numberFlag, parseCommandLine } from './lib/cli.js';
import { makeMedia } from './lib/media.js';
import { readProc, readTree, spawnRole, type Spawned } from './lib/procs.js';
import { toneHz } from './lib/tones.js';
import { VoiceServer, type VoiceGuild } from '../test/helpers/discord-voice-server.js';
import { fakeDiscordShard, type ShardGuild } from '../test/helpers/discord-shard.js';
import { figuresTable } from './lib/report.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(HERE, '../..');
const CLI = path.join(REPO_ROOT, 'dist/main/cli.js');
const BOT_ID = '860000000000000001';
const TOKEN = 'bench-lavalink-password';
/** Players joined and started at once; a bot's shards join their guilds in parallel too. */
const JOIN_BATCH = 10;
/** Each player's tone outlasts any ramp-up and window. */
const TONE_SECONDS = 3600;
const SOURCES = ['tone', 'opus'] as const;
/** The Opus file's length beyond the window: ramp-up of the players, and the second before it. */
const OPUS_MARGIN_S = 120;

const COMMAND = defineCommand({
  name: 'bench:lavalink',
  usage: 'npm run bench:lavalink -- [--players N[,N…]] [--seconds S] [--patches K] [--per-thread T] [--source tone|opus] [--json FILE]',
  about: 'N Lavalink players through shoukaku to stand-in Discord voice receivers: cadence, loss, frameStats, CPU and RSS per player, PATCH latency.',
  flags: {
    players: { type: 'string', value: 'N[,N…]', help: 'player counts to measure (20,50)' },
    seconds: { type: 'string', value: 'S', help: 'measured window once all play (30)' },
    patches: { type: 'string', value: 'K', help: 'volume PATCHes spread over the window (20)' },
    'per-thread': { type: 'string', value: 'T', help: "the gateway's CHORUS_SESSIONS_PER_THREAD (1: a worker per player)" },
    source: { type: 'string', value: 'tone|opus', help: "what each player plays: its own tone (encoded by the engine), or an Ogg Opus file, which the engine passes through as YouTube's Opus (tone)" },
    json: { type: 'string', value: 'FILE', help: 'also write the rows as JSON' },
  },
});

function options() {
  return parseCommandLine(COMMAND, (v) => ({
    counts: (v.players ?? '20,50').split(',').map((n) => numberFlag('players', n, 1, 10_000, true)),
    seconds: numberFlag('seconds', v.seconds ?? '30', 5, 3600),
    patches: numberFlag('patches', v.patches ?? '20', 0, 10_000, true),
    perThread: numberFlag('per-thread', v['per-thread'] ?? '1', 1, 1000, true),
    source: choiceFlag('source', v.source ?? 'tone', SOURCES),
    json: v.json,
  }));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function quantile(sorted: number[], q: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

interface Row {
  players: number;
  cadenceP50: number;
  cadenceP99: number;
  cadenceMax: number;
  lost: number;
  /** Lavalink's frameStats, per player per minute, from the sessions' counters over the window. */
  sentPerMin: number;
  nulledPerMin: number;
  deficitPerMin: number;
  cpuPerPlayerPct: number;
  /** The same CPU split: the engine with its live ffmpeg children, and the gateway. */
  engineCpuPerPlayerPct: number;
  gatewayCpuPerPlayerPct: number;
  rssPerPlayerMiB: number;
  patchP50: number;
  patchP99: number;
  patches: number;
  failedPatches: number;
  /** Players whose join or play failed, and players that started but sent nothing within a minute: left out of every figure. */
  failedPlays: number;
  silentPlayers: number;
  /** Seconds from the first join to every player's first packet. */
  setupS: number;
}

interface SessionCounts {
  id: string;
  sent: number;
  underruns: number;
}

async function sessionCounts(gw: string): Promise<Map<string, SessionCounts>> {
  const body = (await (await fetch(`${gw}/sessions`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { sessions: SessionCounts[] };
  return new Map(body.sessions.map((s) => [s.id, s]));
}

async function runOnce(n: number, seconds: number, patches: number, perThread: number, source: (typeof SOURCES)[number]): Promise<Row> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-bench-lavalink-'));
  const opusFile = source === 'opus' ? makeMedia(dir, 'opus', seconds + OPUS_MARGIN_S) : undefined;
  // Discord's heartbeat interval (the stand-in's 1 s default closes a starved client with 4009).
  // No packet objects kept (their GC pauses would count as the node's lateness): the receivers' logs are read instead.
  const server = await VoiceServer.start({ decode: false, keepPackets: false, heartbeatIntervalMs: 13_750 });
  const started: Spawned[] = [];
  let shoukaku: Shoukaku | undefined;
  let closing = false;
  try {
    const env = {
      ...Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith('CHORUS_'))),
      CHORUS_TOKEN: TOKEN,
      CHORUS_SOCKET: path.join(dir, 'engine.sock'),
      CHORUS_MEDIA_ROOT: dir,
      CHORUS_MAX_SESSIONS: String(Math.max(256, n)),
    };
    const engine = spawnRole('engine', [CLI, 'engine'], { ...env, CHORUS_ENGINE_PORT: '0' });
    started.push(engine);
    const engineUrl = (await engine.waitFor(/engine ready http=(\S+)/, 60_000))[1]!;
    const gateway = spawnRole('gateway', [CLI, 'gateway'], {
      ...env,
      NODE_EXTRA_CA_CERTS: server.caFile,
      CHORUS_PORT: '0',
      CHORUS_ENGINE_URL: engineUrl,
      CHORUS_VOICE_ALLOW: '127.0.0.1',
      CHORUS_YTDLP: 'off',
      CHORUS_SESSIONS_PER_THREAD: String(perThread),
    });
    started.push(gateway);
    const gw = (await gateway.waitFor(/gateway ready http=(\S+)/, 60_000))[1]!;

    const creds = new Map<string, ShardGuild>();
    const voiceGuilds: VoiceGuild[] = [];
    const ids: string[] = [];
    for (let i = 0; i < n; i++) {
      const guildId = `7${String(200000000000 + i)}`;
      const c = { sessionId: `bench-session-${i}`, token: `bench-token-${i}` };
      creds.set(guildId, { ...c, endpoint: server.endpoint });
      voiceGuilds.push(server.guild({ guildId, userId: BOT_ID, ...c }));
      ids.push(guildId);
    }
    const { hostname, port } = new URL(gw);
    shoukaku = new Shoukaku(fakeDiscordShard(BOT_ID, creds), [{ name: 'chorus', url: `${hostname}:${port}`, auth: TOKEN }], { reconnectTries: 1, restTimeout: 30 });
    shoukaku.on('error', (_name, err) => {
      if (!closing) process.stderr.write(`shoukaku: ${(err as Error).message}\n`);
    });
    await new Promise<void>((resolve) => shoukaku!.once('ready', () => resolve()));
    const node = shoukaku.nodes.get('chorus')!;

    // Every player, JOIN_BATCH at a time: join, then play its own tone (or the Opus file), longer than any ramp-up and window.
    const setupStart = performance.now();
    const players: Player[] = [];
    const playing: VoiceGuild[] = [];
    let failedPlays = 0;
    for (let i = 0; i < n; i += JOIN_BATCH) {
      const batch = ids.slice(i, i + JOIN_BATCH).map(async (guildId, j) => {
        try {
          const loaded = (await node.rest.resolve(opusFile ?? `tone:${toneHz(i + j)}?seconds=${TONE_SECONDS}`)) as { data: { encoded: string } };
          const player = await shoukaku!.joinVoiceChannel({ guildId, channelId: `8${String(200000000000 + i + j)}`, shardId: 0 });
          await player.playTrack({ track: { encoded: loaded.data.encoded } });
          players.push(player);
          playing.push(voiceGuilds[i + j]!);
        } catch (err) {
          // A node too loaded to start a player is a figure of the run, not the end of it.
          failedPlays++;
          process.stderr.write(`player ${guildId} did not start: ${(err as Error).message}\n`);
        }
      });
      await Promise.all(batch);
    }
    const waitUntil = performance.now() + 60_000;
    while (!playing.every((g) => g.packetCount > 0) && performance.now() < waitUntil) await sleep(100);
    const heard = playing.filter((g) => g.packetCount > 0);
    const setupS = (performance.now() - setupStart) / 1000;
    await sleep(1000);

    const before = await sessionCounts(gw);
    const t0 = performance.now();
    const gatewayCpu0 = readProc(gateway.pid, 0)?.cpuSeconds ?? 0;
    const engineCpu0 = readTree(engine.pid, 0)?.cpuSeconds ?? 0;

    // The PATCHes, spread over the window, each to another player (a volume change replays the track at the new level).
    const latencies: number[] = [];
    let failedPatches = 0;
    for (let k = 0; k < patches; k++) {
      await sleep(Math.max(0, t0 + ((k + 0.5) * seconds * 1000) / patches - performance.now()));
      const start = performance.now();
      try {
        await players[k % players.length]!.setGlobalVolume(k % 2 === 0 ? 60 : 100);
        latencies.push(performance.now() - start);
      } catch (err) {
        failedPatches++;
        process.stderr.write(`PATCH failed: ${(err as Error).message}\n`);
      }
    }
    await sleep(Math.max(0, t0 + seconds * 1000 - performance.now()));
    const elapsed = (performance.now() - t0) / 1000;
    const gatewayCpu = (readProc(gateway.pid, 0)?.cpuSeconds ?? 0) - gatewayCpu0;
    const engineCpu = (readTree(engine.pid, 0)?.cpuSeconds ?? 0) - engineCpu0;
    const rss = (readProc(gateway.pid, 0)?.rssBytes ?? 0) + (readTree(engine.pid, 0)?.rssBytes ?? 0);
    const after = await sessionCounts(gw);

    const gaps: number[] = [];
    let lost = 0;
    for (const g of heard) {
      const window = g.received.flatMap((log) => [...log.audioArrivals()]).filter((at) => at >= t0 && at - t0 <= elapsed * 1000);
      lost += Math.max(0, Math.round(elapsed * 50) - window.length);
      for (let j = 1; j < window.length; j++) gaps.push(window[j]! - window[j - 1]!);
    }
    gaps.sort((a, b) => a - b);
    let sent = 0;
    let nulled = 0;
    for (const [id, a] of after) {
      const b = before.get(id);
      if (!b) continue;
      sent += a.sent - b.sent;
      nulled += a.underruns - b.underruns;
    }
    const perMin = 60 / elapsed / heard.length;
    latencies.sort((a, b) => a - b);
    return {
      players: n,
      cadenceP50: quantile(gaps, 0.5),
      cadenceP99: quantile(gaps, 0.99),
      cadenceMax: gaps.at(-1) ?? NaN,
      lost,
      sentPerMin: sent * perMin,
      nulledPerMin: nulled * perMin,
      deficitPerMin: 3000 - (sent + nulled) * perMin,
      cpuPerPlayerPct: (((gatewayCpu + engineCpu) / elapsed) * 100) / heard.length,
      engineCpuPerPlayerPct: ((engineCpu / elapsed) * 100) / heard.length,
      gatewayCpuPerPlayerPct: ((gatewayCpu / elapsed) * 100) / heard.length,
      rssPerPlayerMiB: rss / 1024 / 1024 / heard.length,
      patchP50: quantile(latencies, 0.5),
      patchP99: quantile(latencies, 0.99),
      patches: latencies.length,
      failedPatches,
      failedPlays,
      silentPlayers: playing.length - heard.length,
      setupS,
    };
  } finally {
    closing = true;
    if (shoukaku) for (const node of shoukaku.nodes.values()) node.disconnect(1000 as never);
    for (const p of started.reverse()) await p.stop(5000).catch(() => undefined);
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}


async function main(): Promise<void> {
  const { counts, seconds, patches, perThread, source, json } = options();
  const rows: Row[] = [];
  for (const n of counts) {
    process.stderr.write(`bench:lavalink ${n} players…\n`);
    rows.push(await runOnce(n, seconds, patches, perThread, source));
    process.stderr.write(`${JSON.stringify(rows.at(-1))}\n`);
  }
  const load = os.loadavg().map((l) => l.toFixed(1)).join(' ');
  const playing = source === 'opus' ? 'an Ogg Opus file each (passed through)' : 'a tone each (encoded)';
  console.log(`\nLavalink players through shoukaku, ${playing}, ${seconds} s window, ${perThread} player(s) per worker thread (node ${process.version}, ${os.cpus().length} cores, load average ${load})`);
  console.log('cadence: audio packet inter-arrival at the receivers, ms; lost: packets of seconds × 50 not received;');
  console.log('sent/nulled/deficit: Lavalink frameStats per player per minute; cpu/rss: engine (with ffmpeg) + gateway, per player;');
  console.log('patch: REST latency of a volume PATCH through shoukaku, ms\n');
  console.log(figuresTable(rows));
  if (json) fs.writeFileSync(json, JSON.stringify({ node: process.version, cpus: os.cpus().length, loadavg: os.loadavg(), seconds, patches, perThread, source, rows }, null, 2));
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
