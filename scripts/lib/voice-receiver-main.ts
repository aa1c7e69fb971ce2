/**
 * A receiver process of `npm run bench:voice`: one stand-in Discord voice server
 * (test/helpers/discord-voice-server.ts, Opus decoding off, Discord's 13.75 s heartbeat interval)
 * for a share of the guilds, in a process of its own, so that its event loop is not the bench's
 * and the sender's CPU, read from /proc, is the sender's own.
 *
 *   node voice-receiver-main.js --spec FILE --frames N     (IPC: started with an 'ipc' channel)
 *
 * FILE is JSON: [{ guildId, userId, sessionId, token }]. Messages out: `{ type: 'ready',
 * endpoint, ca }` (ca: the PEM of the test CA its certificate chains to), `{ type: 'done' }`
 * once every guild has N audio packets; in: `{ type: 'report' }`, answered with a
 * ReceiverReport.
 *
 * Lateness, as the load test's listeners count it (scripts/lib/listener-proc.ts): within a
 * guild's voice session, audio packet k ideally arrives at a + 20 ms · k, a the schedule of the
 * most punctual packet; lateness = t_k − 20 ms · k − a ≥ 0, so every delay counts and a gap
 * delays every packet after it.
 */
import fs from 'node:fs';
import { FRAME_MS } from '../../src/shared/audio.js';
import { VoiceServer, type VoiceGuild } from '../../test/helpers/discord-voice-server.js';
import { LatencyCounts, type LatencyCountsJson } from './stats.js';

export interface ReceiverReport {
  type: 'report';
  lateness: LatencyCountsJson;
  /** Inter-arrival of consecutive audio packets of a voice session, ms. */
  interval: LatencyCountsJson;
  /** Audio packets short of N, all guilds. */
  lost: number;
  packets: number;
  /** Fresh Identifies beyond each guild's first (a reconnect), and Resumes. */
  reconnects: number;
  resumes: number;
  violations: string[];
}

/** Discord's heartbeat interval (the stand-in's 1 s default would close a starved client with 4009). */
const HEARTBEAT_MS = 13_750;

function arg(name: string): string {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  if (v === undefined) throw new Error(`voice-receiver: ${name} is required`);
  return v;
}

function report(guilds: VoiceGuild[], frames: number): ReceiverReport {
  const lateness = new LatencyCounts();
  const interval = new LatencyCounts();
  let lost = 0;
  let packets = 0;
  let reconnects = 0;
  let resumes = 0;
  const violations: string[] = [];
  for (const g of guilds) {
    const audio = g.packets.filter((p) => !p.silence);
    packets += audio.length;
    lost += Math.max(0, frames - audio.length);
    reconnects += Math.max(0, g.connections.filter((c) => c.kind === 'identify').length - 1);
    resumes += g.connections.filter((c) => c.kind === 'resume').length;
    for (const v of g.ownViolations.slice(0, 3)) violations.push(`${g.guildId}: ${v.kind}: ${v.message}`);
    for (const session of new Set(audio.map((p) => p.session))) {
      const times = audio.filter((p) => p.session === session).map((p) => p.at);
      let anchor = Infinity;
      for (let k = 0; k < times.length; k++) anchor = Math.min(anchor, times[k]! - FRAME_MS * k);
      for (let k = 0; k < times.length; k++) {
        lateness.record(times[k]! - FRAME_MS * k - anchor);
        if (k > 0) interval.record(times[k]! - times[k - 1]!);
      }
    }
  }
  return { type: 'report', lateness: lateness.toJSON(), interval: interval.toJSON(), lost, packets, reconnects, resumes, violations: violations.slice(0, 20) };
}

async function main(): Promise<void> {
  const specs = JSON.parse(fs.readFileSync(arg('--spec'), 'utf8')) as { guildId: string; userId: string; sessionId: string; token: string }[];
  const frames = Number(arg('--frames'));
  const server = await VoiceServer.start({ decode: false, heartbeatIntervalMs: HEARTBEAT_MS });
  const guilds = specs.map((s) => server.guild(s));
  const send = (m: object) => process.send!(m);
  send({ type: 'ready', endpoint: server.endpoint, ca: fs.readFileSync(server.caFile, 'utf8') });
  // Silence frames come only after a tone, so a guild short of N packets is short of N audio packets.
  const complete = (g: VoiceGuild) => g.packets.length >= frames && g.packets.filter((p) => !p.silence).length >= frames;
  const done = setInterval(() => {
    if (guilds.every(complete)) {
      clearInterval(done);
      send({ type: 'done' });
    }
  }, 250);
  process.on('message', (m: { type?: string }) => {
    if (m.type === 'report') send(report(guilds, frames));
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
