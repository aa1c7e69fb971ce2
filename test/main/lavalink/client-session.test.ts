/**
 * A Lavalink client session against a real gateway and engine (built CLI), spoken by hand over
 * the WebSocket and REST, players delivering to the stand-in Discord voice server: ready,
 * playerUpdate, players on chorus sessions, events in Lavalink's order, resuming.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { chorusSessionId } from '../../../src/main/lavalink/player.js';
import { encodeTrack } from '../../../src/main/lavalink/track-codec.js';
import { resolveFfmpeg } from '../../../src/shared/ffmpeg.js';
import { startChorus, tempDir, type ChorusProcess } from '../../helpers/chorus-process.js';
import { VoiceServer, type ReceivedPacket, type VoiceGuild } from '../../helpers/discord-voice-server.js';
import { channel, dominantFrequency } from '../../helpers/audio-analysis.js';

const TOKEN = 'lavalink-session-password-42';
const USER_ID = '830000000000000001';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rms = (x: Float64Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / Math.max(1, x.length));

/**
 * The first packet `g` received after `since` that `heard` matches (waiting up to 3 s for it),
 * once the 500 ms after it have arrived too; undefined if none came.
 */
async function firstHeard(g: VoiceGuild, since: number, heard: (pcm: Buffer) => boolean) {
  for (let waited = 0; waited < 3000; waited += 50) {
    const first = g.packets.find((p) => p.at >= since && !p.silence && heard(p.pcm!));
    if (first) {
      await sleep(Math.max(0, first.at + 550 - performance.now()));
      return first;
    }
    await sleep(50);
  }
  return undefined;
}

/** The largest time between two packets that follow each other (ms), and whether their RTP sequence numbers run on unbroken. */
function cadence(packets: readonly ReceivedPacket[]): { maxGapMs: number; unbroken: boolean } {
  let maxGapMs = 0;
  let unbroken = true;
  for (let i = 1; i < packets.length; i++) {
    maxGapMs = Math.max(maxGapMs, packets[i]!.at - packets[i - 1]!.at);
    if (((packets[i]!.seq - packets[i - 1]!.seq) & 0xffff) !== 1) unbroken = false;
  }
  return { maxGapMs, unbroken };
}

/** The level of a packet, RMS of its samples. */
const packetRms = (pcm: Buffer) => {
  let sum = 0;
  for (let i = 0; i < pcm.length; i += 2) sum += pcm.readInt16LE(i) ** 2;
  return Math.sqrt(sum / (pcm.length / 2));
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The underruns of a Lavalink player's chorus session so far (Lavalink's frameStats `nulled`). */
async function underruns(clientSessionId: string, guildId: string): Promise<number> {
  const id = chorusSessionId(clientSessionId, guildId);
  const summary = await fetch(`${gateway.httpUrl}/sessions/${id}`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((r) => r.json());
  return summary.underruns as number;
}

/**
 * A change of sound leaves no gap: the packets from just before the PATCH to 500 ms after the
 * first changed one run on with sequence numbers unbroken and no silence; and no audio time went
 * missing (less than a frame's): each packet's arrival less
 * 20 ms per sequence number since the last before the PATCH is, in the median, the same after
 * the change as before it (a gap of k frames shifts every later packet by k × 20 ms). Prints
 * the figures.
 *
 * `waited`: the worker counted an underrun meanwhile, so the new play came after its cut (a
 * machine so loaded that ffmpeg took longer than the splice's lead to start): the worker then
 * waits for it, as the old path did, and only a bounded wait is required.
 */
function expectNoGap(g: VoiceGuild, asked: number, first: ReceivedPacket, what: string, waited: boolean): void {
  const before = cadence(g.packets.filter((p) => p.at >= asked - 1000 && p.at < asked));
  const lastBefore = g.packets.filter((p) => p.at < asked).at(-1)!;
  const across = g.packets.filter((p) => p.at >= lastBefore.at && p.at < first.at + 500);
  const change = cadence(across);
  const offset = (p: ReceivedPacket) => p.at - 20 * ((p.seq - lastBefore.seq) << 16 >> 16);
  const missingMs = median(across.filter((p) => p.at >= first.at).map(offset)) - median(g.packets.filter((p) => p.at >= asked - 300 && p.at <= lastBefore.at).map(offset));
  console.log(`${what}: ${missingMs.toFixed(0)} ms of audio time missing; largest time between packets ${change.maxGapMs.toFixed(0)} ms across the change, ${before.maxGapMs.toFixed(0)} ms in the second before; sequence ${change.unbroken ? 'unbroken' : 'BROKEN'}${waited ? '; the new play came after its cut (underrun)' : ''}`);
  expect(change.unbroken).toBe(true);
  expect(across.some((p) => p.silence)).toBe(false);
  if (waited) {
    expect(missingMs).toBeLessThan(CHANGE_HEARD_MS);
    return;
  }
  // The largest time between packets is printed, not held: the receiver in this process stalls
  // with the machine. Less than a frame's time missing: the old path (flush, prebuffer) lost 25–70 ms here, by load.
  expect(missingMs).toBeLessThan(15);
}

/**
 * Bound on the time from a PATCH's answer to the first packet with its change. The target is
 * 200 ms, which the printed figure and bench:lavalink measure; on this shared machine ffmpeg's
 * start alone has taken 500 ms, so the test holds a bound the load cannot break: far under
 * the ring's 3 s that plain gain at the engine would take to drain.
 */
const CHANGE_HEARD_MS = 1000;

let dir: string;
let engine: ChorusProcess;
let gateway: ChorusProcess;
let voice: VoiceServer;

async function rest(method: string, url: string, body?: unknown) {
  const res = await fetch(gateway.httpUrl + url, {
    method,
    headers: { authorization: TOKEN, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, text };
}

/** A bot's Lavalink connection: every message it got, in order. */
class Client {
  readonly messages: any[] = [];
  private waiters = new Set<() => void>();
  ws!: WebSocket;
  /** The headers of the WebSocket's upgrade answer. */
  upgrade: Record<string, string | string[] | undefined> = {};

  static async connect(sessionId?: string): Promise<Client> {
    const c = new Client();
    c.ws = new WebSocket(gateway.httpUrl.replace('http', 'ws') + '/v4/websocket', {
      headers: { Authorization: TOKEN, 'User-Id': USER_ID, 'Client-Name': 'chorus-test/1.0', ...(sessionId ? { 'Session-Id': sessionId } : {}) },
    });
    c.ws.on('upgrade', (res) => (c.upgrade = res.headers));
    c.ws.on('message', (data) => {
      c.messages.push(JSON.parse(data.toString()));
      for (const w of c.waiters) w();
    });
    await c.until((m) => m.op === 'ready', 'ready');
    return c;
  }

  get sessionId(): string {
    return this.messages[0].sessionId;
  }

  events(guildId: string): string[] {
    return this.messages.filter((m) => m.op === 'event' && m.guildId === guildId).map((m) => (m.type === 'TrackEndEvent' ? `TrackEndEvent:${m.reason}` : m.type));
  }

  until(match: (m: any) => boolean, what: string, timeoutMs = 10_000): Promise<any> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.messages.find(match);
        if (!found) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(found);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`no ${what} within ${timeoutMs} ms; got ${JSON.stringify(this.messages.map((m) => m.type ?? m.op))}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  close(): Promise<void> {
    return new Promise((r) => {
      this.ws.once('close', () => r());
      this.ws.close();
    });
  }
}

let nextGuild = 0;
function guild(): { guildId: string; channelId: string; sessionId: string; token: string; g: VoiceGuild } {
  const n = ++nextGuild;
  const creds = { guildId: `91${String(Date.now()).slice(-9)}${n}`, channelId: `92${String(Date.now()).slice(-9)}${n}`, userId: USER_ID, sessionId: `s-${randomUUID()}`, token: `t-${randomUUID()}` };
  return { ...creds, g: voice.guild(creds) };
}

const trackOf = async (identifier: string) => (await rest('GET', `/v4/loadtracks?identifier=${encodeURIComponent(identifier)}`)).body.data;

/** A client whose new player plays a 30 s 440 Hz tone into a guild of the stand-in, 60 packets heard. */
async function playingTone(): Promise<{ client: Client; guildId: string; base: string; g: VoiceGuild }> {
  const client = await Client.connect();
  const { guildId, channelId, sessionId, token, g } = guild();
  const base = `/v4/sessions/${client.sessionId}/players/${guildId}`;
  await rest('PATCH', base, { voice: { token, endpoint: voice.endpoint, sessionId, channelId }, track: { identifier: 'tone:440?seconds=30' } });
  await g.waitForPackets(60);
  return { client, guildId, base, g };
}

/** The mean level of the packets `g` heard from the 20th on: a tone's full level before any change. */
const fullLevel = (g: VoiceGuild) => g.packets.slice(20).reduce((sum, p) => sum + packetRms(p.pcm!), 0) / (g.packets.length - 20);

beforeAll(async () => {
  voice = await VoiceServer.start();
  dir = tempDir('chorus-lavalink-ws-');
  execFileSync(resolveFfmpeg().path, ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'sine=frequency=550:duration=1', '-metadata', 'title=Short', path.join(dir, 'short.mp3')]);
  const common = { CHORUS_TOKEN: TOKEN, CHORUS_SOCKET: path.join(dir, 'engine.sock'), CHORUS_MEDIA_ROOT: dir };
  engine = await startChorus('engine', { ...common, CHORUS_ENGINE_PORT: '0' });
  gateway = await startChorus('gateway', {
    ...common,
    CHORUS_PORT: '0',
    CHORUS_ENGINE_URL: engine.httpUrl,
    CHORUS_VOICE_ALLOW: '127.0.0.1',
    CHORUS_LAVALINK_UPDATE_S: '1',
    NODE_EXTRA_CA_CERTS: voice.caFile,
  });
}, 30_000);

afterAll(async () => {
  await Promise.allSettled([gateway?.stop(), engine?.stop()]);
  await voice?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('Lavalink client session', () => {
  it('refuses a WebSocket without the password or a User-Id', async () => {
    const refused = (headers: Record<string, string>) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(gateway.httpUrl.replace('http', 'ws') + '/v4/websocket', { headers });
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () => resolve(101));
      });
    expect(await refused({ 'User-Id': USER_ID })).toBe(401);
    expect(await refused({ Authorization: TOKEN })).toBe(400);
  });

  it('plays a tone to the guild\'s voice server: events in order, pause, seek, stop, destroy', async () => {
    const client = await Client.connect();
    expect(client.messages[0]).toEqual({ op: 'ready', resumed: false, sessionId: expect.stringMatching(/^[a-z0-9]{16}$/) });
    // Stats at once, as Lavalink sends them, so a client can pick a node; no frameStats before a minute of play.
    const stats = await client.until((m) => m.op === 'stats', 'stats');
    expect(stats).toMatchObject({ players: expect.any(Number), playingPlayers: expect.any(Number), cpu: { cores: expect.any(Number) }, frameStats: null });
    const { guildId, channelId, sessionId, token, g } = guild();
    const base = `/v4/sessions/${client.sessionId}/players/${guildId}`;
    const tone = await trackOf('tone:440?seconds=30');
    const patched = await rest('PATCH', base, { voice: { token, endpoint: voice.endpoint, sessionId, channelId }, track: { encoded: tone.encoded, userData: { requester: 'me' } } });
    expect(patched.status, patched.text).toBe(200);
    expect(patched.body).toMatchObject({ guildId, paused: false, volume: 100, track: { encoded: tone.encoded, userData: { requester: 'me' } }, voice: { token, sessionId, channelId } });
    await g.waitForPackets(50);
    const update = await client.until((m) => m.op === 'playerUpdate' && m.guildId === guildId && m.state.connected && m.state.position > 0, 'playerUpdate');
    expect(update.state).toEqual({ time: expect.any(Number), position: expect.any(Number), connected: true, ping: expect.any(Number) });
    expect((await rest('GET', `/v4/sessions/${client.sessionId}/players`)).body.map((p: any) => p.guildId)).toEqual([guildId]);
    // The player is a chorus session, under the 24-byte id rule.
    const id = chorusSessionId(client.sessionId, guildId);
    expect(id).toHaveLength(24);
    const chorus = await fetch(`${gateway.httpUrl}/sessions/${id}`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((r) => r.json());
    expect(chorus.session).toMatchObject({ state: 'playing', url: 'tone:440?seconds=30' });

    // Pause: the voice server hears nothing after the trailing silence.
    expect((await rest('PATCH', base, { paused: true })).body.paused).toBe(true);
    await sleep(300);
    const heldAt = g.packets.length;
    await sleep(300);
    expect(g.packets.length).toBe(heldAt);
    expect((await rest('PATCH', base, { paused: false })).body.paused).toBe(false);
    await g.waitForPackets(heldAt + 10);

    // Seek: the position jumps there.
    const seeked = await rest('PATCH', base, { position: 20_000 });
    expect(seeked.status).toBe(200);
    expect(seeked.body.state.position).toBeGreaterThanOrEqual(20_000);
    expect(seeked.body.state.position).toBeLessThan(21_000);

    // Replace, then stop, then destroy.
    const other = await trackOf('tone:660?seconds=30');
    expect((await rest('PATCH', `${base}?noReplace=true`, { track: { encoded: other.encoded } })).body.track.encoded).toBe(tone.encoded);
    expect((await rest('PATCH', base, { track: { encoded: other.encoded } })).body.track.encoded).toBe(other.encoded);
    expect((await rest('PATCH', base, { track: { encoded: null } })).body.track).toBeNull();
    const destroyed = await rest('DELETE', base);
    expect(destroyed.status).toBe(204);
    expect((await rest('GET', base)).status).toBe(404);
    expect(client.events(guildId)).toEqual(['TrackStartEvent', 'TrackEndEvent:replaced', 'TrackStartEvent', 'TrackEndEvent:stopped']);
    const end = client.messages.find((m) => m.type === 'TrackEndEvent' && m.reason === 'replaced');
    expect(end.track.userData).toEqual({ requester: 'me' });
    expect(g.violations).toEqual([]);
    await client.close();
  });

  it('a track that ends says finished; one whose source fails says exception, then loadFailed', async () => {
    const client = await Client.connect();
    const { guildId, channelId, sessionId, token } = guild();
    const base = `/v4/sessions/${client.sessionId}/players/${guildId}`;
    await rest('PATCH', base, { voice: { token, endpoint: voice.endpoint, sessionId, channelId }, track: { identifier: 'tone:500?seconds=1' } });
    await client.until((m) => m.type === 'TrackEndEvent', 'TrackEndEvent');
    expect(client.events(guildId)).toEqual(['TrackStartEvent', 'TrackEndEvent:finished']);
    // A local file from the media root, by identifier: played to its end too.
    const local = await rest('PATCH', base, { track: { identifier: 'short.mp3' } });
    expect(local.body.track.info).toMatchObject({ title: 'Short', sourceName: 'local' });
    await client.until((m) => m.type === 'TrackEndEvent' && m.track.info.title === 'Short', 'the file\'s TrackEndEvent');
    expect(client.events(guildId)).toEqual(['TrackStartEvent', 'TrackEndEvent:finished', 'TrackStartEvent', 'TrackEndEvent:finished']);
    // A track encoded elsewhere, for a file this node does not have.
    const info = { title: 'x', author: 'y', length: 1000, identifier: 'no-such-file.mp3', isStream: false, uri: 'no-such-file.mp3', artworkUrl: null, isrc: null, sourceName: 'local', position: 0 };
    const encoded = encodeTrack({ version: 3, info, sourceData: Buffer.alloc(0) });
    expect((await rest('PATCH', base, { track: { encoded } })).status).toBe(200);
    await client.until((m) => m.type === 'TrackEndEvent' && m.reason === 'loadFailed', 'loadFailed');
    expect(client.events(guildId).slice(4)).toEqual(['TrackStartEvent', 'TrackExceptionEvent', 'TrackEndEvent:loadFailed']);
    const bad = await rest('PATCH', base, { track: { identifier: 'ytsearch:x' } });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ status: 400, error: 'Bad Request', path: base });
    const unsupported = await rest('PATCH', base, { filters: { karaoke: { level: 1 } } });
    expect(unsupported.status).toBe(400);
    expect(unsupported.body.message).toMatch(/"karaoke" is not supported/);
    const outOfRange = await rest('PATCH', base, { filters: { timescale: { speed: 0 } } });
    expect(outOfRange.status).toBe(400);
    expect(outOfRange.body.message).toMatch(/filters\.timescale\.speed/);
    await client.close();
  });

  it("playerUpdate's ping is the voice gateway's heartbeat round trip", async () => {
    const client = await Client.connect();
    const { guildId, channelId, sessionId, token } = guild();
    voice.heartbeatAckDelayMs = 150;
    try {
      await rest('PATCH', `/v4/sessions/${client.sessionId}/players/${guildId}`, { voice: { token, endpoint: voice.endpoint, sessionId, channelId } });
      const update = await client.until((m) => m.op === 'playerUpdate' && m.guildId === guildId && m.state.connected && m.state.ping > 0, 'a measured ping');
      expect(update.state.ping).toBeGreaterThanOrEqual(150);
      expect(update.state.ping).toBeLessThan(1000);
    } finally {
      voice.heartbeatAckDelayMs = 0;
    }
    await rest('DELETE', `/v4/sessions/${client.sessionId}/players/${guildId}`);
    await client.close();
  });

  it("the Discord voice gateway's close reaches the client as WebSocketClosedEvent", async () => {
    const client = await Client.connect();
    const { guildId, channelId, sessionId, token, g } = guild();
    await rest('PATCH', `/v4/sessions/${client.sessionId}/players/${guildId}`, { voice: { token, endpoint: voice.endpoint, sessionId, channelId } });
    await client.until((m) => m.op === 'playerUpdate' && m.guildId === guildId && m.state.connected, 'connected');
    g.close(4014);
    const closed = await client.until((m) => m.type === 'WebSocketClosedEvent', 'WebSocketClosedEvent');
    expect(closed).toMatchObject({ op: 'event', guildId, code: 4014, byRemote: true, reason: expect.any(String) });
    await rest('DELETE', `/v4/sessions/${client.sessionId}/players/${guildId}`);
    await client.close();
  });

  it('volume and the volume filter change the level at once with no gap, dropping what was encoded at the old level', async () => {
    const { client, guildId, base, g } = await playingTone();
    const rms = packetRms;
    const level = (from: number, to: number) => {
      const heard = g.packets.filter((p) => !p.silence && p.at >= from && p.at < to);
      return { n: heard.length, rms: heard.reduce((s, p) => s + rms(p.pcm!), 0) / heard.length };
    };
    const full = level(g.packets[20]!.at, performance.now());
    const change = async (body: unknown, expected: number) => {
      const nulled = await underruns(client.sessionId, guildId);
      const asked = performance.now();
      const r = await rest('PATCH', base, body);
      const answered = performance.now();
      expect(r.status, r.text).toBe(200);
      // The first packet at the new level, and when it came.
      const first = await firstHeard(g, answered, (pcm) => Math.abs(rms(pcm) / full.rms - expected) < 0.1);
      const delay = first ? first.at - answered : Infinity;
      const after = first ? level(first.at, first.at + 500) : { n: 0, rms: 0 };
      console.log(`level ${JSON.stringify(body)}: ${(after.rms / full.rms).toFixed(3)} of full over the ${after.n} packets of the 500 ms from the first at it, ${delay.toFixed(0)} ms after the PATCH answer`);
      // What was encoded at the old level is dropped: from the first packet at the new level on, nothing at the old one.
      expect(delay).toBeLessThan(CHANGE_HEARD_MS);
      expect(after.n).toBeGreaterThan(20);
      expect(Math.abs(after.rms / full.rms - expected)).toBeLessThan(0.1);
      const later = g.packets.filter((p) => p.at >= first!.at && p.at < first!.at + 500 && !p.silence);
      expect(later.every((p) => Math.abs(rms(p.pcm!) / full.rms - expected) < 0.1)).toBe(true);
      expectNoGap(g, asked, first!, `level ${JSON.stringify(body)}`, (await underruns(client.sessionId, guildId)) > nulled);
      return r.body;
    };
    expect((await change({ volume: 30 }, 0.3)).volume).toBe(30);
    expect((await change({ filters: { volume: 2 } }, 0.6)).filters).toEqual({ volume: 2 });
    expect((await change({ filters: {} }, 0.3)).filters).toEqual({});
    const over = await rest('PATCH', base, { volume: 1001 });
    expect(over.status).toBe(400);
    expect(g.violations).toEqual([]);
    await rest('DELETE', base);
    await client.close();
  });

  it('a volume slider: changes in quick succession each splice in, with no gap, ending at the last level', async () => {
    const { client, guildId, base, g } = await playingTone();
    const full = fullLevel(g);
    const nulled = await underruns(client.sessionId, guildId);
    const asked = performance.now();
    for (const volume of [80, 60, 40, 20]) expect((await rest('PATCH', base, { volume })).status).toBe(200);
    const answered = performance.now();
    const first = await firstHeard(g, answered - 1000, (pcm) => Math.abs(packetRms(pcm) / full - 0.2) < 0.05);
    expect(first).toBeDefined();
    console.log(`slider 100 → 20 in 4 PATCHes over ${(answered - asked).toFixed(0)} ms: level 0.2 heard ${(first!.at - answered).toFixed(0)} ms after the last answer`);
    expect(first!.at - answered).toBeLessThan(CHANGE_HEARD_MS);
    const after = g.packets.filter((p) => p.at >= first!.at && p.at < first!.at + 500);
    expect(after.length).toBeGreaterThan(20);
    expect(after.every((p) => Math.abs(packetRms(p.pcm!) / full - 0.2) < 0.05)).toBe(true);
    expectNoGap(g, asked, first!, 'slider', (await underruns(client.sessionId, guildId)) > nulled);
    await rest('DELETE', base);
    await client.close();
  });

  it('a slider dragged faster than a change takes: every PATCH is answered, the changes that came meanwhile become one, the last level is heard', async () => {
    const { client, guildId, base, g } = await playingTone();
    const full = fullLevel(g);
    // Twelve steps 10 ms apart, none waiting for its answer: over twice CHORUS_PLAY_RATE's burst of 5.
    const steps = [95, 90, 85, 80, 75, 70, 65, 60, 55, 50, 45, 40];
    const answers = [];
    for (const volume of steps) {
      answers.push(rest('PATCH', base, { volume }));
      await sleep(10);
    }
    expect((await Promise.all(answers)).map((r) => r.status)).toEqual(steps.map(() => 200));
    const answered = performance.now();
    expect((await rest('GET', base)).body.volume).toBe(40);
    const first = await firstHeard(g, answered - 1000, (pcm) => Math.abs(packetRms(pcm) / full - 0.4) < 0.04);
    expect(first).toBeDefined();
    const after = g.packets.filter((p) => p.at >= first!.at && p.at < first!.at + 500);
    expect(after.every((p) => Math.abs(packetRms(p.pcm!) / full - 0.4) < 0.04)).toBe(true);
    await rest('DELETE', base);
    await client.close();
  });

  it('a pause during a splice holds it: resume plays on at the new level, the old level never after it, the position unmoved while paused', async () => {
    const { client, guildId, base, g } = await playingTone();
    const full = fullLevel(g);
    const at = (pcm: Buffer, level: number) => Math.abs(packetRms(pcm) / full - level) < 0.1;
    expect((await rest('PATCH', base, { volume: 30 })).status).toBe(200);
    // At once: the worker is still playing the frames before the splice's cut.
    expect((await rest('PATCH', base, { paused: true })).status).toBe(200);
    await sleep(300);
    const pausedAt = (await rest('GET', base)).body.track.info.position;
    const heardWhilePaused = g.packets.length;
    await sleep(300);
    expect(g.packets.length).toBe(heardWhilePaused);
    expect((await rest('GET', base)).body.track.info.position).toBe(pausedAt);
    const resumed = performance.now();
    expect((await rest('PATCH', base, { paused: false })).status).toBe(200);
    await sleep(1000);
    // After the pause's silence the decoder fades the audio in over a few packets: the old
    // frames up to the splice's cut play first, then the new level, never the old one after it.
    const audio = g.packets.filter((p) => p.at >= resumed && !p.silence);
    const levels = audio.map((p) => packetRms(p.pcm!) / full);
    const oldFrames = levels.findLastIndex((l) => l > 0.6) + 1;
    console.log(`pause during a splice: ${oldFrames} packets of the old level's frames after the resume, then the new level: ${levels.slice(0, oldFrames + 6).map((l) => l.toFixed(2)).join(' ')} …`);
    expect(oldFrames).toBeLessThanOrEqual(8);
    expect(levels.length - oldFrames).toBeGreaterThan(40);
    expect(levels.slice(oldFrames + 3).every((l) => Math.abs(l - 0.3) < 0.1)).toBe(true);
    const first = audio[oldFrames + 3]!;
    // Sequence numbers run on across the pause (its silence frames included).
    const around = g.packets.filter((p) => p.at >= resumed - 2000 && p.at < first!.at + 500);
    expect(cadence(around).unbroken).toBe(true);
    const position = (await rest('GET', base)).body.track.info.position;
    expect(position).toBeGreaterThan(pausedAt);
    expect(position).toBeLessThan(pausedAt + (performance.now() - resumed) + 200);
    expect(g.violations).toEqual([]);
    await rest('DELETE', base);
    await client.close();
  });

  it('filters act at once after the PATCH: channelMix empties the right channel, timescale doubles the pitch', async () => {
    const { client, guildId, base, g } = await playingTone();
    const full = rms(channel(g.packets.at(-1)!.pcm!, 2, 0));
    const effect = async (filters: unknown, heard: (pcm: Buffer) => boolean) => {
      const r = await rest('PATCH', base, { filters });
      const answered = performance.now();
      expect(r.status, r.text).toBe(200);
      expect(r.body.filters).toEqual(filters);
      const first = await firstHeard(g, answered, heard);
      const delay = first ? first.at - answered : Infinity;
      // From the first changed packet on, every packet of the next 500 ms has the effect.
      const later = g.packets.filter((p) => first && p.at >= first.at && p.at < first.at + 500 && !p.silence);
      console.log(`filters ${JSON.stringify(filters)}: first packet with the effect ${delay.toFixed(0)} ms after the PATCH answer; ${later.filter((p) => heard(p.pcm!)).length}/${later.length} of the next 500 ms with it`);
      expect(delay).toBeLessThan(CHANGE_HEARD_MS);
      expect(later.length).toBeGreaterThan(20);
      expect(later.every((p) => heard(p.pcm!))).toBe(true);
    };
    await effect({ channelMix: { leftToLeft: 1, leftToRight: 0, rightToLeft: 0, rightToRight: 0 } }, (pcm) => rms(channel(pcm, 2, 1)) < 0.02 * full && rms(channel(pcm, 2, 0)) > 0.8 * full);
    await effect({ timescale: { rate: 2 } }, (pcm) => Math.abs(dominantFrequency(channel(pcm, 2, 0), 48_000, 200, 1200) - 880) < 30);
    // The position runs at the timescale's rate: two track seconds a second.
    const p1 = (await rest('GET', base)).body.track.info.position;
    await sleep(1000);
    const p2 = (await rest('GET', base)).body.track.info.position;
    expect(p2 - p1).toBeGreaterThan(1500);
    expect(g.violations).toEqual([]);
    await rest('DELETE', base);
    await client.close();
  });

  it('resuming: a dropped client leaves the player playing; it comes back resumed and gets the events it missed', async () => {
    const client = await Client.connect();
    const { guildId, channelId, sessionId, token, g } = guild();
    expect((await rest('PATCH', `/v4/sessions/${client.sessionId}`, { resuming: true, timeout: 20 })).body).toEqual({ resuming: true, timeout: 20 });
    await rest('PATCH', `/v4/sessions/${client.sessionId}/players/${guildId}`, { voice: { token, endpoint: voice.endpoint, sessionId, channelId }, track: { identifier: 'tone:700?seconds=2' } });
    await g.waitForPackets(10);
    const id = client.sessionId;
    client.ws.terminate();
    // Away for longer than the track: it plays to its end meanwhile.
    await sleep(2500);
    const audio = g.packets.filter((p) => !p.silence).length;
    expect(audio).toBe(100);
    const back = await Client.connect(id);
    expect(back.messages[0]).toEqual({ op: 'ready', resumed: true, sessionId: id });
    // Clients (shoukaku among them) read whether they resumed from the upgrade's header, before ready.
    expect(back.upgrade).toMatchObject({ 'session-resumed': 'true', 'lavalink-api-version': '4' });
    await back.until((m) => m.type === 'TrackEndEvent', 'missed TrackEndEvent');
    expect(back.events(guildId)).toEqual(['TrackEndEvent:finished']);
    // A session id nobody resumes is a new session.
    const fresh = await Client.connect('nosuchsession123');
    expect(fresh.messages[0].resumed).toBe(false);
    expect(fresh.upgrade['session-resumed']).toBe('false');
    // A client back before its old socket's close reached chorus takes the session over.
    const oldClosed = new Promise<number>((r) => back.ws.once('close', (code) => r(code)));
    const again = await Client.connect(id);
    expect(again.messages[0]).toEqual({ op: 'ready', resumed: true, sessionId: id });
    expect(await oldClosed).toBe(1000);
    expect(fresh.sessionId).not.toBe('nosuchsession123');
    expect((await rest('PATCH', `/v4/sessions/${id}`, { resuming: false })).status).toBe(200);
    await Promise.all([again.close(), fresh.close()]);
    // Without resuming, closing ends the players: the session is gone (once the server has seen the close).
    let status = 0;
    for (let i = 0; i < 40 && status !== 404; i++) {
      status = (await rest('GET', `/v4/sessions/${id}/players`)).status;
      if (status !== 404) await sleep(50);
    }
    expect(status).toBe(404);
  });
});
