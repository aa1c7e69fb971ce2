/**
 * Discord voice end to end, against the real thing on our side: `chorus engine` and `chorus
 * gateway` from the built CLI (on this machine's Node 20), tones encoded by the engine's ffmpeg
 * and Opus encoder, paced and sent by the gateway's session workers through @discordjs/voice, to
 * the stand-in Discord voice server (test/helpers/discord-voice-server.ts: WSS voice gateway v8,
 * UDP with IP discovery, decryption and Opus decoding). The gateway trusts the stand-in's test CA
 * through NODE_EXTRA_CA_CERTS, as the library dials wss:// only.
 *
 * Every figure a test measures is printed; bounds are what the issue asks, cadence bounds are
 * relative to a run without the fault on the same machine.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FRAME_SAMPLES } from '../../../src/shared/audio.js';
import { channel, dominantFrequency } from '../../helpers/audio-analysis.js';
import { client } from '../../helpers/http.js';
import { startStack, stopStack, type Stack } from '../../helpers/stack.js';
import { TestListener } from '../../helpers/listener.js';
import { VoiceServer, type ReceivedPacket, type VoiceGuild } from '../../helpers/discord-voice-server.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** CHORUS_VOICE_UDP_SILENCE_MS for the fault tests. */
const UDP_SILENCE_MS = 6000;


/** The engine and gateway, the gateway trusting the test voice servers' CA and allowed to reach them. */
function startVoiceStack(caFile: string, env: Record<string, string>): Promise<Stack> {
  return startStack({}, {}, { CHORUS_VOICE_ALLOW: '127.0.0.1', CHORUS_DEBUG_ENDPOINTS: '1', NODE_EXTRA_CA_CERTS: caFile, ...env });
}

let nextGuild = 0;
/** Credentials of a fresh guild: Discord-style ids, a session id and a token. */
function credentials() {
  const n = ++nextGuild;
  return {
    guildId: `81${String(Date.now()).slice(-9)}${n}`,
    channelId: `82${String(Date.now()).slice(-9)}${n}`,
    userId: '830000000000000001',
    sessionId: `sess-${randomUUID()}`,
    token: `tok-${randomUUID()}`,
  };
}
type Credentials = ReturnType<typeof credentials>;

const newId = (what: string) => `v-${what.slice(0, 10)}-${randomUUID().slice(0, 8)}`;

/** Audio packets (not the trailing silence). */
const audio = (packets: readonly ReceivedPacket[]) => packets.filter((p) => !p.silence);

/** Seq +1 and timestamp +960 between consecutive packets of the same voice session. */
function breaks(packets: readonly ReceivedPacket[]): string[] {
  const out: string[] = [];
  for (let i = 1; i < packets.length; i++) {
    const a = packets[i - 1]!;
    const b = packets[i]!;
    if (a.session !== b.session) continue;
    if (((b.seq - a.seq) & 0xffff) !== 1) out.push(`seq ${a.seq}→${b.seq} at ${i}`);
    if (((b.timestamp - a.timestamp) >>> 0) !== FRAME_SAMPLES) out.push(`timestamp ${a.timestamp}→${b.timestamp} at ${i}`);
  }
  return out;
}

function toneOf(packets: readonly ReceivedPacket[]): number {
  const pcm = Buffer.concat(packets.map((p) => p.pcm!));
  return dominantFrequency(channel(pcm));
}

const servers: VoiceServer[] = [];
async function voiceServer(): Promise<VoiceServer> {
  const s = await VoiceServer.start();
  servers.push(s);
  return s;
}

/** Tests shared by both thread modes. */
function voiceSuite(mode: string, env: Record<string, string>) {
  describe(`Discord voice from the session workers (${mode})`, () => {
    let stack: Stack | undefined;
    let api: ReturnType<typeof client>;
    const sessions = new Set<string>();
    const listeners: TestListener[] = [];

    beforeAll(async () => {
      // The stand-in's CA exists once a server has started: the gateway must trust it from its start.
      const first = await voiceServer();
      stack = await startVoiceStack(first.caFile, env);
      api = client(stack.gateway.httpUrl);
    });

    afterEach(async () => {
      for (const l of listeners.splice(0)) l.close();
      for (const id of sessions) {
        await api('POST', `/sessions/${id}/stop`).catch(() => undefined);
        await api('DELETE', `/sessions/${id}/voice`).catch(() => undefined);
      }
      sessions.clear();
      for (const s of servers.splice(1)) await s.stop();
    });

    afterAll(async () => {
      await stopStack(stack);
      for (const s of servers.splice(0)) await s.stop();
    });

    /** A session joined to a new guild on `server`; resolves once the stand-in sent Ready and chorus reports ready. */
    async function join(server: VoiceServer, what: string): Promise<{ id: string; guild: VoiceGuild; creds: Credentials }> {
      const creds = credentials();
      const guild = server.guild(creds);
      const id = newId(what);
      sessions.add(id);
      const put = await api('PUT', `/sessions/${id}/voice`, { ...creds, endpoint: server.endpoint });
      expect(put.status, put.text).toBe(200);
      await guild.waitForEstablished('identify');
      await waitFor(async () => (await api('GET', `/sessions/${id}`)).json.voice?.status === 'ready', 5000);
      return { id, guild, creds };
    }

    async function play(id: string, url: string): Promise<void> {
      const r = await api('POST', `/sessions/${id}/play`, { url });
      expect(r.status, r.text).toBe(200);
    }

    async function state(id: string): Promise<any> {
      return (await api('GET', `/sessions/${id}`)).json;
    }

    it('three guilds, three tones: each stand-in hears its own tone, every frame, in order, speaking first, then five silence frames', async () => {
      const tones = [440, 660, 880];
      const joined = [];
      for (const hz of tones) joined.push({ hz, ...(await join(await voiceServer(), `tone${hz}`)) });
      await Promise.all(joined.map(({ id, hz }) => play(id, `tone:${hz}?seconds=2`)));
      for (const { id, guild } of joined) {
        await waitFor(async () => (await state(id)).session.state === 'finished', 10_000);
        await guild.until(() => guild.packets.filter((p) => p.silence).length >= 5 && guild.speaking.some((s) => s.speaking === 0), 'silence and speaking off', 2000);
      }
      for (const { id, hz, guild } of joined) {
        const body = await state(id);
        const heard = audio(guild.packets);
        const f = toneOf(heard);
        console.log(
          `${mode} ${hz} Hz: ${heard.length} audio packets + ${guild.packets.length - heard.length} silence, worker sent ${body.session.sent}; ` +
            `heard ${f.toFixed(1)} Hz; voice ${JSON.stringify(body.voice)}`,
        );
        expect(guild.violations).toEqual([]);
        // 2 s of tone is exactly 100 frames of 20 ms: the engine encoded them, the worker sent them, the stand-in decrypted and decoded them.
        expect(body.session.sent).toBe(100);
        expect(heard).toHaveLength(100);
        expect(Math.abs(f - hz)).toBeLessThan(3);
        expect(new Set(guild.packets.map((p) => p.ssrc))).toEqual(new Set([guild.ssrc]));
        expect(breaks(guild.packets)).toEqual([]);
        // Speaking on before the first packet; five silence frames after the last; then speaking off.
        expect(guild.speaking[0]!.speaking).not.toBe(0);
        expect(guild.speaking[0]!.at).toBeLessThan(guild.packets[0]!.at);
        expect(guild.packets.slice(-5).every((p) => p.silence)).toBe(true);
        expect(guild.packets.slice(0, -5).every((p) => !p.silence)).toBe(true);
        const off = guild.speaking.find((s) => s.speaking === 0)!;
        expect(off.at).toBeGreaterThan(guild.packets.at(-1)!.at);
        expect(body.voice).toMatchObject({ status: 'ready', encryption: 'aead_aes256_gcm_rtpsize', dave: false, packets: 105, ssrc: guild.ssrc });
        expect(typeof body.voice.pingMs).toBe('number');
      }
    });

    it('pause: five silence frames, then nothing; resume: audio again within 40 ms, nothing lost', async () => {
      const { id, guild } = await join(servers[0]!, 'pause');
      await play(id, 'tone:550?seconds=3');
      await guild.waitForPackets(40);
      expect((await api('POST', `/sessions/${id}/pause`)).status).toBe(200);
      const pausedAt = performance.now();
      await sleep(400);
      const afterPause = guild.packets.filter((p) => p.at > pausedAt);
      const lastAudio = guild.packets.findLastIndex((p) => !p.silence);
      const trailing = guild.packets.slice(lastAudio + 1);
      console.log(`${mode} pause: ${afterPause.length} packets after the pause answered, ${trailing.length} silence after the last audio`);
      expect(trailing).toHaveLength(5);
      expect(trailing.every((p) => p.silence)).toBe(true);
      // Nothing in the last 250 ms: the five went out within 100 ms and then it stopped.
      expect(guild.packets.filter((p) => p.at > pausedAt + 150)).toHaveLength(0);
      expect(guild.speaking.at(-1)!.speaking).toBe(0);
      const before = guild.packets.length;
      const resumeSent = performance.now();
      expect((await api('POST', `/sessions/${id}/resume`)).status).toBe(200);
      const answered = performance.now() - resumeSent;
      await guild.waitForPackets(before + 1);
      const gap = guild.packets[before]!.at - resumeSent;
      console.log(`${mode} resume: first packet ${gap.toFixed(1)} ms after the request was sent (answered after ${answered.toFixed(1)} ms)`);
      expect(gap).toBeLessThan(40);
      expect(guild.speaking.at(-1)!.speaking).not.toBe(0);
      expect(guild.speaking.at(-1)!.at).toBeLessThan(guild.packets[before]!.at);
      await waitFor(async () => (await state(id)).session.state === 'finished', 10_000);
      await guild.until(() => guild.speaking.at(-1)!.speaking === 0, 'speaking off', 2000);
      expect(audio(guild.packets)).toHaveLength(150);
      expect(breaks(guild.packets)).toEqual([]);
      expect(guild.violations).toEqual([]);
    });

    it('a 300 ms block of the main thread leaves the cadence at the stand-in unchanged', async () => {
      const { id, guild } = await join(servers[0]!, 'block');
      await play(id, 'tone:440?seconds=40');
      await guild.waitForPackets(25);
      const pooled = (runs: { at: number }[][]) => {
        const gaps = runs.flatMap((r) => r.slice(1).map((p, i) => p.at - r[i]!.at));
        const sorted = gaps.sort((a, b) => a - b);
        const q = (x: number) => sorted[Math.min(sorted.length - 1, Math.ceil(x * sorted.length) - 1)]!;
        return { count: sorted.length, p50: q(0.5), p99: q(0.99), max: sorted.at(-1)! };
      };
      const f = (c: ReturnType<typeof pooled>) => `${c.count} intervals: p50 ${c.p50.toFixed(2)} ms, p99 ${c.p99.toFixed(2)} ms, max ${c.max.toFixed(2)} ms`;
      // Windows of 2 s, alternately without and with a 300 ms block 700 ms in, so that the load of
      // a shared machine falls on both kinds alike; the intervals of each kind are pooled, four
      // windows each, so that one stray wide gap is not the p99 of either kind on its own. The
      // block keeps a core busy, and this machine has two: in the windows without it another
      // process keeps a core busy as long, so that what differs is only which thread is stuck.
      const other = busyProcess();
      const measure = async () => {
        const intervals = { quiet: [] as { at: number }[][], blocked: [] as { at: number }[][] };
        const wide: string[] = [];
        for (const block of [false, true, false, true, false, true, false, true]) {
          const from = performance.now();
          let blockAt = NaN;
          if (block) {
            await sleep(700);
            blockAt = performance.now();
            expect((await api('POST', '/debug/block?ms=300')).status).toBe(200);
            await sleep(1000);
          } else {
            await sleep(700);
            other.busy(300);
          }
          await sleep(Math.max(0, from + 2000 - performance.now()));
          const packets = guild.packets.filter((p) => p.at > from && p.at <= from + 2000);
          (block ? intervals.blocked : intervals.quiet).push(packets);
          for (let i = 1; i < packets.length; i++) {
            const gap = packets[i]!.at - packets[i - 1]!.at;
            if (gap > 40) wide.push(`${block ? 'blocked' : 'quiet'} ${gap.toFixed(0)} ms ending ${(packets[i]!.at - (block ? blockAt : from)).toFixed(0)} ms after the ${block ? 'block began' : 'window began'}`);
          }
        }
        const quiet = pooled(intervals.quiet);
        const blocked = pooled(intervals.blocked);
        console.log(`${mode} cadence without a block: ${f(quiet)}; with a 300 ms main-thread block: ${f(blocked)}; gaps over 40 ms: ${wide.join('; ') || 'none'}`);
        return { quiet, blocked };
      };
      let { quiet, blocked } = await measure();
      // The other test files share the 2 cores: one measurement in which that load fell more on
      // the blocked windows is taken again, once. A sender that waits on the main thread widens
      // the blocked p99 in both, and leaves a 300 ms hole.
      if (blocked.p99 > quiet.p99 + 2) ({ quiet, blocked } = await measure());
      other.close();
      expect(blocked.count).toBeGreaterThan(390);
      expect(blocked.p99).toBeLessThanOrEqual(quiet.p99 + 2);
      // A sender on the main thread would leave a hole of 300 ms or more.
      expect(blocked.max).toBeLessThan(200);
      expect(breaks(guild.packets)).toEqual([]);
    }, 60_000);
  });
}

voiceSuite('thread per session', {});
voiceSuite('shared threads', { CHORUS_SESSIONS_PER_THREAD: '4' });

describe('Discord voice faults and the voice API', () => {
  let stack: Stack | undefined;
  let api: ReturnType<typeof client>;
  let home: VoiceServer;
  const sessions = new Set<string>();
  const listeners: TestListener[] = [];

  beforeAll(async () => {
    home = await VoiceServer.start();
    // The shortest UDP silence allowed (the library's keep-alives go every 5 s), so that the
    // silence test takes seconds, and every other test here shows a healthy server is not judged.
    stack = await startVoiceStack(home.caFile, { CHORUS_VOICE_UDP_SILENCE_MS: String(UDP_SILENCE_MS) });
    api = client(stack.gateway.httpUrl);
  });

  afterEach(async () => {
    for (const l of listeners.splice(0)) l.close();
    for (const id of sessions) {
      await api('POST', `/sessions/${id}/stop`).catch(() => undefined);
      await api('DELETE', `/sessions/${id}/voice`).catch(() => undefined);
    }
    sessions.clear();
    for (const s of servers.splice(0)) await s.stop();
  });

  afterAll(async () => {
    await stopStack(stack);
    await home?.stop();
  });

  async function join(server: VoiceServer, what: string): Promise<{ id: string; guild: VoiceGuild; creds: Credentials; listener: TestListener }> {
    const creds = credentials();
    const guild = server.guild(creds);
    const id = newId(what);
    sessions.add(id);
    const put = await api('PUT', `/sessions/${id}/voice`, { ...creds, endpoint: server.endpoint });
    expect(put.status, put.text).toBe(200);
    const listener = await TestListener.connect(stack!.gateway.httpUrl, id);
    listeners.push(listener);
    await guild.waitForEstablished('identify');
    await listener.until(() => voiceEvents(listener).some((e) => e.status === 'ready'), 5000, 'voice ready');
    return { id, guild, creds, listener };
  }

  const voiceEvents = (l: TestListener) => l.events.filter((e): e is Extract<typeof e, { type: 'voice' }> => e.type === 'voice');

  async function playAndWait(id: string, url: string, guild: VoiceGuild, packets: number): Promise<void> {
    const r = await api('POST', `/sessions/${id}/play`, { url });
    expect(r.status, r.text).toBe(200);
    await guild.waitForPackets(packets);
  }

  async function finished(id: string): Promise<any> {
    await waitFor(async () => (await api('GET', `/sessions/${id}`)).json.session.state === 'finished', 15_000);
    return (await api('GET', `/sessions/${id}`)).json;
  }

  it('a resumable close mid-track: the connection resumes and no frame is lost', async () => {
    const { id, guild } = await join(home, 'resume');
    await playAndWait(id, 'tone:440?seconds=3', guild, 30);
    const before = guild.connections.length;
    const closedAt = performance.now();
    guild.close(4015, 'voice server crashed');
    const resumed = await guild.waitForEstablished('resume', before);
    const body = await finished(id);
    const gaps = guild.packets.slice(1).map((p, i) => p.at - guild.packets[i]!.at);
    console.log(`resume: reconnected ${(resumed.openedAt - closedAt).toFixed(0)} ms after the close; widest gap between packets ${Math.max(...gaps).toFixed(0)} ms`);
    await guild.until(() => guild.speaking.at(-1)?.speaking === 0, 'speaking off', 2000);
    console.log(`resume: ${audio(guild.packets).length} audio packets, worker sent ${body.session.sent}, voice ${JSON.stringify(body.voice)}`);
    expect(body.voice.resumes).toBe(1);
    expect(body.session.sent).toBe(150);
    expect(audio(guild.packets)).toHaveLength(150);
    expect(new Set(guild.packets.map((p) => p.session))).toEqual(new Set([1]));
    expect(breaks(guild.packets)).toEqual([]);
    expect(guild.violations).toEqual([]);
  });

  it('4014: the session reports voice disconnected and holds its place; a new PUT plays on from there', async () => {
    const { id, guild, creds, listener } = await join(home, 'k4014');
    await playAndWait(id, 'tone:440?seconds=3', guild, 30);
    guild.close(4014, 'disconnected');
    await listener.until(() => voiceEvents(listener).some((e) => e.status === 'disconnected'), 5000, 'voice disconnected');
    const closedAt = performance.now();
    const event = voiceEvents(listener).find((e) => e.status === 'disconnected')!;
    expect(event.closeCode).toBe(4014);
    expect(event.reason).toMatch(/voice disconnected/);
    await waitFor(async () => (await api('GET', `/sessions/${id}`)).json.session.state === 'paused', 2000);
    const held = (await api('GET', `/sessions/${id}`)).json;
    expect(held.session.reason).toMatch(/voice disconnected/);
    expect(held.voice).toMatchObject({ status: 'disconnected', closeCode: 4014 });
    const sentAtHold = held.session.sent;
    await sleep(300);
    expect(guild.packets.filter((p) => p.at > closedAt + 50)).toHaveLength(0);
    expect((await api('GET', `/sessions/${id}`)).json.session.sent).toBe(sentAtHold);

    const put = await api('PUT', `/sessions/${id}/voice`, { ...creds, endpoint: home.endpoint });
    expect(put.status, put.text).toBe(200);
    const body = await finished(id);
    console.log(`4014: held at ${sentAtHold} frames; after the new PUT ${audio(guild.packets).length} audio packets over ${new Set(guild.packets.map((p) => p.session)).size} voice sessions`);
    expect(body.session.sent).toBe(150);
    expect(audio(guild.packets)).toHaveLength(150);
    expect(breaks(guild.packets)).toEqual([]);
    expect(guild.violations).toEqual([]);
  });

  it('4006: listeners are asked to rejoin; the session holds until the bot PUTs its new voice state', async () => {
    const { id, guild, creds, listener } = await join(home, 'k4006');
    await playAndWait(id, 'tone:440?seconds=3', guild, 30);
    guild.close(4006, 'session no longer valid');
    await listener.until(() => voiceEvents(listener).some((e) => e.rejoin === true), 5000, 'a rejoin request');
    const event = voiceEvents(listener).find((e) => e.rejoin === true)!;
    expect(event).toMatchObject({ status: 'disconnected', closeCode: 4006 });
    await waitFor(async () => (await api('GET', `/sessions/${id}`)).json.session.state === 'paused', 2000);
    // The bot rejoins: Discord gives it a new session and token.
    const next = { ...creds, sessionId: `sess-${randomUUID()}`, token: `tok-${randomUUID()}` };
    guild.setCredentials({ sessionId: next.sessionId, token: next.token });
    expect((await api('PUT', `/sessions/${id}/voice`, { ...next, endpoint: home.endpoint })).status).toBe(200);
    const body = await finished(id);
    expect(body.session.sent).toBe(150);
    expect(audio(guild.packets)).toHaveLength(150);
    expect(guild.violations).toEqual([]);
  });

  it('UDP silence from a server that answered keep-alives: a fresh connection and the audio goes on, nothing lost; a server that never answered is not judged', async () => {
    const a = await join(home, 'udpquiet');
    const unanswering = await VoiceServer.start({ echoKeepAlives: false });
    servers.push(unanswering);
    const b = await join(unanswering, 'noecho');
    // The library's first keep-alive goes out as its UDP socket opens; the link judges only a server that answered one.
    await a.guild.until(() => a.guild.keepAlivesEchoed >= 1, 'a keep-alive echoed', 6000);
    const seconds = 12;
    for (const [{ id }, hz] of [[a, 440], [b, 660]] as const) {
      const r = await api('POST', `/sessions/${id}/play`, { url: `tone:${hz}?seconds=${seconds}` });
      expect(r.status, r.text).toBe(200);
    }
    await a.guild.waitForPackets(25);
    a.guild.muteUdp();
    const mutedAt = performance.now();
    const second = await a.guild.waitForEstablished('identify', 1, UDP_SILENCE_MS + 5000);
    const reconnectedAfter = second.openedAt - mutedAt;
    await a.guild.until(() => a.guild.packets.some((p) => p.session === 2), 'audio in the new voice session', 3000);
    const firstNew = a.guild.packets.find((p) => p.session === 2)!;
    const bodyA = await finished(a.id);
    const bodyB = await finished(b.id);
    await a.guild.until(() => a.guild.speaking.at(-1)?.speaking === 0, 'speaking off', 2000);
    const events = voiceEvents(a.listener).map((e) => `${e.status}${e.reason ? ` (${e.reason})` : ''}`);
    const inNew = audio(a.guild.packets.filter((p) => p.session === 2));
    console.log(
      `UDP silence: muted after ${a.guild.keepAlivesEchoed} echoed keep-alives; new Identify ${reconnectedAfter.toFixed(0)} ms after the mute, ` +
        `first packet on it ${(firstNew.at - second.openedAt).toFixed(0)} ms later; ${audio(a.guild.packets).length} audio packets ` +
        `(${inNew.length} in the new voice session); events ${events.join(' → ')}; ` +
        `unanswering server: ${b.guild.keepAlives} keep-alives, ${b.guild.keepAlivesEchoed} echoed, voice ${JSON.stringify(bodyB.voice)}`,
    );
    // Judged after the threshold since the last answer (at most one keep-alive interval before the mute), within a check.
    expect(reconnectedAfter).toBeGreaterThan(UDP_SILENCE_MS - 5000);
    expect(reconnectedAfter).toBeLessThan(UDP_SILENCE_MS + 2500);
    expect(events).toContain(`connecting (no UDP from the voice server for ${UDP_SILENCE_MS / 1000} s: reconnecting)`);
    expect(events.at(-1)).toBe('ready');
    expect(bodyA.voice).toMatchObject({ status: 'ready', connects: 2, resumes: 0 });
    expect(bodyA.session.sent).toBe(seconds * 50);
    expect(audio(a.guild.packets)).toHaveLength(seconds * 50);
    expect(inNew.length).toBeGreaterThan(50);
    expect(Math.abs(toneOf(inNew) - 440)).toBeLessThan(3);
    expect(breaks(a.guild.packets)).toEqual([]);
    expect(a.guild.violations).toEqual([]);
    // Never answered, never judged: the same one connection throughout, every frame.
    expect(b.guild.keepAlives).toBeGreaterThanOrEqual(2);
    expect(b.guild.keepAlivesEchoed).toBe(0);
    expect(bodyB.voice).toMatchObject({ status: 'ready', connects: 1 });
    expect(audio(b.guild.packets)).toHaveLength(seconds * 50);
    expect(new Set(b.guild.packets.map((p) => p.session))).toEqual(new Set([1]));
    expect(b.guild.violations).toEqual([]);
  });

  it('a new endpoint mid-track: the audio moves to the new voice server, nothing lost', async () => {
    const { id, guild, creds } = await join(home, 'move');
    const other = await VoiceServer.start();
    servers.push(other);
    const moved = other.guild(creds);
    await playAndWait(id, 'tone:440?seconds=3', guild, 30);
    const put = await api('PUT', `/sessions/${id}/voice`, { ...creds, endpoint: other.endpoint });
    expect(put.status, put.text).toBe(200);
    const putAt = performance.now();
    await moved.waitForPackets(20);
    const body = await finished(id);
    await moved.until(() => moved.speaking.at(-1)?.speaking === 0, 'speaking off', 2000);
    const first = audio(guild.packets).length;
    const second = audio(moved.packets).length;
    console.log(`move: ${first} audio packets at the first server, ${second} at the second; voice ${JSON.stringify(body.voice)}`);
    expect(guild.packets.filter((p) => p.at > putAt + 50)).toHaveLength(0);
    expect(first + second).toBe(150);
    expect(body.session.sent).toBe(150);
    expect(body.voice).toMatchObject({ status: 'ready', endpoint: other.endpoint });
    expect(Math.abs(toneOf(audio(moved.packets)) - 440)).toBeLessThan(3);
    expect(breaks(moved.packets)).toEqual([]);
    expect(moved.violations).toEqual([]);
  });

  it('a bad voice state is a 400 that says why; an endpoint off CHORUS_VOICE_ALLOW is a 403 and nothing is opened', async () => {
    const creds = credentials();
    const guild = home.guild(creds);
    const id = newId('bad');
    sessions.add(id);
    const good = { ...creds, endpoint: home.endpoint };
    const port = home.endpoint.split(':')[1];
    const bad: [string, unknown][] = [
      ['body not JSON', '{guildId:'],
      ['body an array', '[]'],
      ['guildId missing', { ...good, guildId: undefined }],
      ['token missing', { ...good, token: undefined }],
      ['endpoint missing', { ...good, endpoint: undefined }],
      ['guildId a number', { ...good, guildId: 123 }],
      ['guildId not a snowflake', { ...good, guildId: 'guild-1' }],
      ['sessionId empty', { ...good, sessionId: '' }],
      ['token with a space', { ...good, token: 'a b' }],
      ['endpoint with a scheme', { ...good, endpoint: `wss://${home.endpoint}` }],
      ['endpoint with a path', { ...good, endpoint: `${home.endpoint}/x` }],
      ['endpoint port 0', { ...good, endpoint: '127.0.0.1:0' }],
      ['endpoint port too big', { ...good, endpoint: '127.0.0.1:70000' }],
      ['endpoint empty', { ...good, endpoint: '' }],
      ['snake_case field', { ...good, session_id: creds.sessionId }],
    ];
    for (const [what, body] of bad) {
      const r = await api('PUT', `/sessions/${id}/voice`, body);
      expect(r.status, `${what}: ${r.text}`).toBe(400);
      expect(typeof r.json.error).toBe('string');
    }
    for (const endpoint of [`localhost:${port}`, 'c-fra05.discord.media:443', '[::1]:' + port]) {
      const r = await api('PUT', `/sessions/${id}/voice`, { ...good, endpoint });
      expect(r.status, `${endpoint}: ${r.text}`).toBe(403);
      expect(r.json.error).toMatch(/CHORUS_VOICE_ALLOW/);
    }
    await sleep(300);
    expect(guild.connections).toHaveLength(0);
    // Nothing was created either: no session, no connection.
    expect((await api('GET', `/sessions/${id}`)).status).toBe(404);
    expect((await api('DELETE', `/sessions/${id}/voice`)).status).toBe(404);
    expect((await api('GET', `/sessions/${id}/voice`)).status).toBe(405);
  });

  it('DELETE leaves: the voice connection closes and the session no longer shows voice', async () => {
    const { id, guild } = await join(home, 'leave');
    const del = await api('DELETE', `/sessions/${id}/voice`);
    expect(del.status, del.text).toBe(200);
    await guild.until(() => guild.connections.every((c) => c.closedAt !== undefined), 'connection closed', 3000);
    const body = (await api('GET', `/sessions/${id}`)).json;
    expect(body.voice).toBeUndefined();
    expect(body.session.voice).toBeUndefined();
  });
});

/** A process that keeps one core busy for `ms` each time it is asked (as /debug/block does). */
function busyProcess(): { busy(ms: number): void; close(): void } {
  const code = "process.stdin.on('data', (d) => { const until = performance.now() + Number(String(d)); while (performance.now() < until); });";
  const child = spawn(process.execPath, ['-e', code], { stdio: ['pipe', 'ignore', 'inherit'] });
  return { busy: (ms) => void child.stdin.write(`${ms}\n`), close: () => void child.kill() };
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > until) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(50);
  }
}
