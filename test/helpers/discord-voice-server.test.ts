/**
 * The stand-in Discord voice server (discord-voice-server.ts), proved against the real client it
 * stands in for: @discordjs/voice 0.19 in a child process on this machine's Node (20, below the
 * library's declared >= 22.12), trusting the stand-in's test CA through NODE_EXTRA_CA_CERTS. And
 * its own strictness, against a raw client that breaks the protocol on purpose.
 */
import { fork, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { channel, dominantFrequency } from './audio-analysis.js';
import {
  AES256_GCM_RTPSIZE,
  OPUS_SILENCE,
  VoiceClose,
  VoiceOp,
  VoiceServer,
  XCHACHA20_POLY1305_RTPSIZE,
  hchacha20,
  startDiscordVoiceServer,
  xchacha20Poly1305Open,
  type EncryptionMode,
  type GuildCredentials,
  type PacketLog,
  type VoiceGuild,
  type VoiceServerOptions,
} from './discord-voice-server.js';

const CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'discord-voice-client.mjs');

const CREDS: GuildCredentials = {
  guildId: '200000000000000001',
  userId: '300000000000000001',
  sessionId: 'session-abc',
  token: 'token-abc',
};
const CHANNEL_ID = '400000000000000001';

interface ClientEvent {
  event: string;
  [key: string]: unknown;
}

/** The @discordjs/voice client process (discord-voice-client.mjs) and what it has reported. */
class VoiceClient {
  readonly events: ClientEvent[] = [];
  private readonly waiters = new Set<() => void>();
  readonly stderr: string[] = [];

  constructor(readonly child: ChildProcess) {
    child.on('message', (msg: ClientEvent) => {
      this.events.push(msg);
      for (const w of this.waiters) w();
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (text: string) => this.stderr.push(text));
  }

  static start(caFile: string): VoiceClient {
    const child = fork(CLIENT, [], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: caFile },
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    return new VoiceClient(child);
  }

  send(msg: object): void {
    this.child.send(msg);
  }

  join(voice: VoiceGuild, creds: GuildCredentials = CREDS): void {
    this.send({ cmd: 'join', ...creds, channelId: CHANNEL_ID, endpoint: voice.endpoint });
  }

  /** The first event (past or future) that `match` accepts, counting from index `from`. */
  waitFor(match: (e: ClientEvent) => boolean, what: string, from = 0, timeoutMs = 10_000): Promise<ClientEvent> {
    return new Promise((resolve, reject) => {
      const find = () => this.events.slice(from).find(match);
      const check = () => {
        const e = find();
        if (!e) return false;
        clearTimeout(timer);
        this.waiters.delete(onEvent);
        resolve(e);
        return true;
      };
      const onEvent = () => void check();
      const timer = setTimeout(() => {
        this.waiters.delete(onEvent);
        reject(new Error(`client: no ${what} within ${timeoutMs} ms; events ${JSON.stringify(this.events.map((e) => e.event === 'hello' ? 'hello' : e))} stderr ${this.stderr.join('')}`));
      }, timeoutMs);
      if (!check()) this.waiters.add(onEvent);
    });
  }

  // A child process that loads the library, opus and davey can take seconds to boot on a loaded machine.
  waitForStatus(status: string, from = 0, timeoutMs = 20_000): Promise<ClientEvent> {
    return this.waitFor((e) => e.event === 'state' && e.status === status, `state ${status}`, from, timeoutMs);
  }

  /** Error events the library emitted (connection 'error'), as messages. */
  errors(): string[] {
    return this.events.filter((e) => e.event === 'error').map((e) => e.message as string);
  }

  statuses(): string[] {
    return this.events.filter((e) => e.event === 'state').map((e) => e.status as string);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    if (this.child.connected) this.send({ cmd: 'destroy' });
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  }
}

let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});

async function standIn(options: VoiceServerOptions = {}): Promise<VoiceGuild> {
  const voice = await startDiscordVoiceServer(CREDS, options);
  cleanups.push(() => voice.stop());
  return voice;
}

function client(voice: VoiceGuild): VoiceClient {
  const c = VoiceClient.start(voice.caFile);
  cleanups.push(() => c.stop());
  return c;
}

/** A log's entries as objects, to compare with ReceivedPackets. */
function entries(log: PacketLog): { at: number; seq: number; timestamp: number; silence: boolean }[] {
  return Array.from({ length: log.count }, (_, i) => ({ at: log.at(i), seq: log.seq(i), timestamp: log.timestamp(i), silence: log.silence(i) }));
}

/** Joins and waits for Ready on both sides. */
async function connected(voice: VoiceGuild): Promise<VoiceClient> {
  const c = client(voice);
  c.join(voice);
  await c.waitForStatus('ready');
  return c;
}

async function played(c: VoiceClient, hz: number, frames: number, from = 0): Promise<{ sent: boolean[]; opus: Buffer[] }> {
  const e = await c.waitFor((x) => x.event === 'played', 'played', from, frames * 20 + 10_000);
  return { sent: e.sent as boolean[], opus: (e.opus as string[]).map((b) => Buffer.from(b, 'base64')) };
}

describe('@discordjs/voice 0.19 on this Node against the stand-in', { timeout: 60_000 }, () => {
  it('loads (with @snazzah/davey), identifies, discovers its IP, selects a protocol and reaches Ready', async () => {
    const voice = await standIn();
    const c = await connected(voice);
    const hello = await c.waitFor((e) => e.event === 'hello', 'hello');
    expect(hello.node).toBe(process.version);
    expect(hello.voiceVersion).toMatch(/^0\.19\./);
    expect(hello.voiceEngines).toEqual({ node: '>=22.12.0' });
    // davey's native module works here: it made an MLS key package, and the library offered DAVE.
    expect(hello.daveProtocolVersion).toBe(1);
    expect(hello.daveKeyPackageBytes as number).toBeGreaterThan(0);
    const [conn] = voice.connections;
    expect(conn).toMatchObject({ kind: 'identify', established: true, maxDaveProtocolVersion: 1, session: 1 });
    expect(voice.session?.mode).toBe(AES256_GCM_RTPSIZE);
    expect(voice.session?.discovered).toEqual(voice.session?.selected);
    // The library heartbeats with seq_ack: it acknowledges the numbered Clients Connect (seq 1).
    await voice.until(() => voice.session?.lastSeqAck === 1, 'seq_ack 1 heartbeated');
    await voice.until(() => voice.keepAlives >= 1, 'a UDP keep-alive');
    expect(voice.violations).toEqual([]);
    expect(c.errors()).toEqual([]);
  });
});

describe('audio from @discordjs/voice through the stand-in', { timeout: 60_000 }, () => {
  for (const mode of [AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE] as const) {
    it(`playOpusPacket of a 440 Hz tone arrives decrypted (${mode}), in order, after Speaking, and decodes to 440 Hz`, async () => {
      const voice = await standIn({ modes: [mode] });
      const c = await connected(voice);
      expect(voice.session?.mode).toBe(mode);
      c.send({ cmd: 'play', hz: 440, frames: 100 });
      const { sent, opus } = await played(c, 440, 100);
      expect(sent.filter((s) => !s)).toEqual([]);
      await voice.waitForPackets(opus.length);
      await voice.until(() => voice.speaking.at(-1)?.speaking === 0, 'speaking off');

      // Exactly what was sent, byte for byte, from the SSRC handed out, seq +1 and timestamp +960.
      expect(voice.packets.map((p) => p.opus)).toEqual(opus);
      expect(new Set(voice.packets.map((p) => p.ssrc))).toEqual(new Set([voice.ssrc]));
      expect(voice.packets.slice(100).every((p) => p.silence && p.opus.equals(OPUS_SILENCE))).toBe(true);
      expect(voice.packets.slice(0, 100).some((p) => p.silence)).toBe(false);
      for (let i = 1; i < voice.packets.length; i++) {
        expect((voice.packets[i]!.seq - voice.packets[i - 1]!.seq) & 0xffff).toBe(1);
        expect((voice.packets[i]!.timestamp - voice.packets[i - 1]!.timestamp) >>> 0).toBe(960);
        expect(voice.packets[i]!.nonce).toBeGreaterThan(voice.packets[i - 1]!.nonce);
      }
      // Speaking on came first; the stand-in's own check (within its grace) found nothing either.
      expect(voice.speaking[0]).toMatchObject({ speaking: 1, ssrc: voice.ssrc, delay: 0 });
      expect(voice.speaking[0]!.at).toBeLessThanOrEqual(voice.packets[0]!.at + voice.server.speakingGraceMs);
      // The decoded audio is the tone (skipping the encoder's first frames).
      const heard = dominantFrequency(channel(voice.pcm(5, 100)));
      expect(Math.abs(heard - 440)).toBeLessThan(2);
      expect(voice.violations).toEqual([]);
      expect(c.errors()).toEqual([]);
    });
  }

  it('an AudioPlayer (the ordinary way, on its own 20 ms clock) plays the tone through too, then silence', async () => {
    const voice = await standIn();
    const c = await connected(voice);
    c.send({ cmd: 'player', hz: 440, frames: 50 });
    const { opus } = await played(c, 440, 50);
    await voice.until(() => voice.speaking.at(-1)?.speaking === 0, 'speaking off');
    await voice.waitForPackets(54);
    expect(voice.packets.slice(0, 50).map((p) => p.opus)).toEqual(opus);
    // 0.19.2 prepares five padding frames but goes idle before dispatching the fifth: four arrive.
    const padding = voice.packets.slice(50);
    expect(padding.length).toBeGreaterThanOrEqual(4);
    expect(padding.length).toBeLessThanOrEqual(5);
    expect(padding.every((p) => p.silence)).toBe(true);
    expect(Math.abs(dominantFrequency(channel(voice.pcm(5, 50))) - 440)).toBeLessThan(2);
    expect(voice.violations).toEqual([]);
    expect(c.errors()).toEqual([]);
  });

  for (const keepPackets of [true, false]) {
    it(`logs a real sender's packets per session (arrival, seq, timestamp, silence)${keepPackets ? ' exactly as its packet objects have them' : ' with keepPackets: false, keeping no packet objects'}`, async () => {
      // A small first capacity: the log grows past it.
      const voice = await standIn({ keepPackets, expectedPackets: 16 });
      const c = await connected(voice);
      c.send({ cmd: 'play', hz: 440, frames: 100 });
      const { sent } = await played(c, 440, 100);
      expect(sent.filter((s) => !s)).toEqual([]);
      await voice.waitForPackets(105);
      expect(voice.received).toHaveLength(1);
      const log = voice.received[0]!;
      expect([log.session, log.count, log.audio, log.silent]).toEqual([1, 105, 100, 5]);
      expect([voice.packetCount, voice.audioPacketCount]).toEqual([105, 100]);
      const logged = entries(log);
      if (keepPackets) {
        expect(logged).toEqual(voice.packets.map(({ at, seq, timestamp, silence }) => ({ at, seq, timestamp, silence })));
      } else {
        expect(voice.packets).toEqual([]);
      }
      expect(logged.map((e) => e.silence)).toEqual([...Array<boolean>(100).fill(false), ...Array<boolean>(5).fill(true)]);
      for (let i = 1; i < logged.length; i++) {
        expect((logged[i]!.seq - logged[i - 1]!.seq) & 0xffff).toBe(1);
        expect((logged[i]!.timestamp - logged[i - 1]!.timestamp) >>> 0).toBe(960);
        expect(logged[i]!.at).toBeGreaterThanOrEqual(logged[i - 1]!.at);
      }
      expect(Array.from(log.audioArrivals())).toEqual(logged.slice(0, 100).map((e) => e.at));
      expect(voice.violations).toEqual([]);
      expect(c.errors()).toEqual([]);
    });
  }

  it('serves two guilds on one host apart: each hears only its own tone, from its own SSRC', async () => {
    const server = await VoiceServer.start();
    cleanups.push(() => server.stop());
    const guilds = [
      { creds: { ...CREDS, guildId: '200000000000000011', token: 'token-a' }, hz: 330 },
      { creds: { ...CREDS, guildId: '200000000000000012', token: 'token-b', sessionId: 'session-b' }, hz: 880 },
    ].map(({ creds, hz }) => ({ creds, hz, voice: server.guild(creds) }));
    await Promise.all(
      guilds.map(async ({ creds, hz, voice }) => {
        const c = client(voice);
        c.join(voice, creds);
        await c.waitForStatus('ready');
        c.send({ cmd: 'play', hz, frames: 60 });
        await played(c, hz, 60);
        await voice.waitForPackets(65);
      }),
    );
    expect(guilds[0]!.voice.ssrc).not.toBe(guilds[1]!.voice.ssrc);
    for (const { hz, voice } of guilds) {
      expect(voice.packets).toHaveLength(65);
      expect(new Set(voice.packets.map((p) => p.ssrc))).toEqual(new Set([voice.ssrc]));
      expect(Math.abs(dominantFrequency(channel(voice.pcm(5, 60))) - hz)).toBeLessThan(2);
    }
    expect(server.violations).toEqual([]);
  });

  const cuts: [string, (voice: VoiceGuild) => void, number][] = [
    ['a 4015 close', (voice) => voice.close(VoiceClose.VoiceServerCrashed, 'test: resumable close'), 4015],
    ['a dropped connection (no close frame)', (voice) => voice.drop(), 1006],
  ];
  for (const [what, cut, code] of cuts) {
    it(`resumes after ${what} mid-tone: same session, seq continuous, missed numbered messages re-sent`, async () => {
      const voice = await standIn();
      const c = await connected(voice);
      const otherUser = voice.otherUserIds[0]!;
      c.send({ cmd: 'play', hz: 523, frames: 200 });
      await voice.waitForPackets(50);
      cut(voice);
      // Sent while the client is away: seq 2 must reach it after the resume (it acknowledged 1).
      voice.clientDisconnect(otherUser);
      const resumed = await voice.waitForEstablished('resume', 1);
      expect(resumed.seqAck).toBe(1);
      expect(voice.connections[0]).toMatchObject({ kind: 'identify', closeCode: code, closedBy: 'server' });
      const { sent } = await played(c, 523, 200);
      const dispatched = sent.filter(Boolean).length;
      await voice.waitForPackets(dispatched);
      await voice.until(() => voice.session!.lastSeqAck === 2, 'seq_ack 2 after re-delivery');

      // Every packet the library dispatched arrived, in one session, with no break in seq/timestamp.
      expect(voice.packets).toHaveLength(dispatched);
      expect(new Set(voice.packets.map((p) => p.session))).toEqual(new Set([1]));
      expect(voice.packets.at(-1)!.at).toBeGreaterThan(resumed.openedAt);
      // The library speaks again after a resume, and never went back to signalling.
      expect(voice.speaking.filter((s) => s.speaking === 1).length).toBeGreaterThanOrEqual(2);
      expect(c.statuses()).not.toContain('signalling');
      expect(c.statuses()).not.toContain('disconnected');
      expect(voice.violations).toEqual([]);
      expect(c.errors()).toEqual([]);
    });
  }

  it('a 4014 close leaves the connection disconnected with that code, and it does not come back', async () => {
    const voice = await standIn();
    const c = await connected(voice);
    voice.close(VoiceClose.Disconnected, 'test: kicked');
    const state = await c.waitForStatus('disconnected');
    expect(state).toMatchObject({ reason: 0, closeCode: 4014 });
    await new Promise((r) => setTimeout(r, 1500));
    expect(voice.connections).toHaveLength(1);
    expect(c.events.filter((e) => e.event === 'payload')).toHaveLength(1); // only the join
    expect(voice.violations).toEqual([]);
    expect(c.errors()).toEqual([]);
  });

  it('a 4006 close makes the library ask the bot to rejoin; a new VOICE_SERVER_UPDATE starts a new session', async () => {
    const voice = await standIn();
    const c = await connected(voice);
    const before = c.events.length;
    voice.close(VoiceClose.SessionNoLongerValid, 'test: session gone');
    const rejoin = await c.waitFor((e) => e.event === 'payload', 'rejoin payload', before);
    expect(rejoin.payload).toMatchObject({ op: 4, d: { guild_id: CREDS.guildId, channel_id: CHANNEL_ID } });
    voice.setCredentials({ token: 'token-2' });
    const mark = c.events.length;
    c.send({ cmd: 'server-update', token: 'token-2', endpoint: voice.endpoint });
    await c.waitForStatus('ready', mark);
    expect(voice.connections[1]).toMatchObject({ kind: 'identify', established: true, session: 2 });
    c.send({ cmd: 'play', hz: 660, frames: 20 });
    await played(c, 660, 20, mark);
    await voice.waitForPackets(25);
    expect(new Set(voice.packets.map((p) => p.session))).toEqual(new Set([2]));
    expect(voice.received.map((log) => [log.session, log.count])).toEqual([[1, 0], [2, 25]]);
    expect(voice.violations).toEqual([]);
    expect(c.errors()).toEqual([]);
  });
});

/** A hand-driven gateway connection from this process (which can pass the CA directly). */
class RawGateway {
  readonly messages: { op: number; d: any; seq?: number }[] = [];
  readonly closed: Promise<number>;
  private readonly waiters = new Set<() => void>();

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      this.messages.push(JSON.parse(String(data)));
      for (const w of this.waiters) w();
    });
    this.closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
  }

  static async open(voice: VoiceGuild, query = '?v=8'): Promise<RawGateway> {
    const ws = new WebSocket(`wss://${voice.endpoint}/${query}`, { ca: fs.readFileSync(voice.caFile) });
    const gw = new RawGateway(ws);
    cleanups.push(() => ws.terminate());
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return gw;
  }

  send(op: number, d: unknown): void {
    this.ws.send(JSON.stringify({ op, d }));
  }

  next(op: number, timeoutMs = 5000): Promise<{ op: number; d: any; seq?: number }> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = this.messages.find((x) => x.op === op);
        if (!m) return false;
        clearTimeout(timer);
        this.waiters.delete(onMessage);
        resolve(m);
        return true;
      };
      const onMessage = () => void check();
      const timer = setTimeout(() => reject(new Error(`no op ${op} within ${timeoutMs} ms: ${JSON.stringify(this.messages)}`)), timeoutMs);
      if (!check()) this.waiters.add(onMessage);
    });
  }

  identify(overrides: Partial<Record<'server_id' | 'user_id' | 'session_id' | 'token', string>> = {}): void {
    this.send(VoiceOp.Identify, {
      server_id: CREDS.guildId,
      user_id: CREDS.userId,
      session_id: CREDS.sessionId,
      token: CREDS.token,
      max_dave_protocol_version: 0,
      ...overrides,
    });
  }
}

describe('the stand-in is strict', () => {
  const refusals: [string, (gw: RawGateway) => void, number, string, string?][] = [
    ['a wrong token', (gw) => gw.identify({ token: 'nope' }), VoiceClose.AuthenticationFailed, 'identify'],
    ['a wrong user_id', (gw) => gw.identify({ user_id: '1' }), VoiceClose.AuthenticationFailed, 'identify'],
    ['a wrong session_id', (gw) => gw.identify({ session_id: 'old' }), VoiceClose.SessionNoLongerValid, 'identify'],
    ['an unknown server_id', (gw) => gw.identify({ server_id: '1' }), VoiceClose.ServerNotFound, 'server_id'],
    ['a malformed Identify', (gw) => gw.send(VoiceOp.Identify, { server_id: CREDS.guildId }), VoiceClose.FailedToDecode, 'identify'],
    ['Speaking before Identify', (gw) => gw.send(VoiceOp.Speaking, { speaking: 1, delay: 0, ssrc: 1 }), VoiceClose.NotAuthenticated, 'not-authenticated'],
    ['an unknown opcode', (gw) => gw.send(42, {}), VoiceClose.UnknownOpcode, 'opcode'],
    ['a gateway version other than 8', () => undefined, VoiceClose.BadRequest, 'gateway-version', '?v=4'],
  ];
  for (const [what, act, code, kind, query] of refusals) {
    it(`closes with ${code} on ${what}, and records it`, async () => {
      const voice = await standIn();
      const gw = await RawGateway.open(voice, query);
      act(gw);
      expect(await gw.closed).toBe(code);
      expect(voice.violations.map((v) => v.kind)).toEqual([kind]);
    });
  }

  it('closes with 4016 on a mode it did not offer and 4012 on a protocol other than udp', async () => {
    const voice = await standIn({ modes: [AES256_GCM_RTPSIZE] });
    for (const [d, code] of [
      [{ protocol: 'udp', data: { address: '127.0.0.1', port: 9, mode: XCHACHA20_POLY1305_RTPSIZE } }, VoiceClose.UnknownEncryptionMode],
      [{ protocol: 'webrtc', data: { address: '127.0.0.1', port: 9, mode: AES256_GCM_RTPSIZE } }, VoiceClose.UnknownProtocol],
    ] as const) {
      const gw = await RawGateway.open(voice);
      gw.identify();
      expect((await gw.next(VoiceOp.Ready)).d.modes).toEqual([AES256_GCM_RTPSIZE]);
      gw.send(VoiceOp.SelectProtocol, d);
      expect(await gw.closed).toBe(code);
    }
    expect(voice.violations.map((v) => v.kind)).toEqual(['select-protocol', 'select-protocol']);
  });

  for (const keepPackets of [true, false]) {
    it(`answers IP discovery; flags audio before Speaking, a foreign key, a tampered packet, a reused nonce, a wrong payload type and a bad seq_ack (keepPackets: ${keepPackets})`, async () => {
      // This hand-driven client sends one heartbeat only: a long interval keeps the stand-in from timing it out.
      const voice = await standIn({ modes: [AES256_GCM_RTPSIZE], heartbeatIntervalMs: 10_000, keepPackets });
      const gw = await RawGateway.open(voice);
      expect((await gw.next(VoiceOp.Hello)).d.heartbeat_interval).toBe(10_000);
      gw.identify();
      const ready = (await gw.next(VoiceOp.Ready)).d;
      expect(ready).toMatchObject({ ssrc: voice.ssrc, ip: '127.0.0.1', modes: [AES256_GCM_RTPSIZE] });

      const udp = dgram.createSocket('udp4');
      cleanups.push(() => {
        udp.close();
      });
      await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', () => resolve()));
      const replied = new Promise<Buffer>((resolve) => udp.once('message', resolve));
      const request = Buffer.alloc(74);
      request.writeUInt16BE(1, 0);
      request.writeUInt16BE(70, 2);
      request.writeUInt32BE(ready.ssrc, 4);
      udp.send(request, ready.port, ready.ip);
      const reply = await replied;
      expect(reply.length).toBe(74);
      expect([reply.readUInt16BE(0), reply.readUInt16BE(2), reply.readUInt32BE(4)]).toEqual([2, 70, ready.ssrc]);
      expect(reply.subarray(8, reply.indexOf(0, 8)).toString()).toBe('127.0.0.1');
      expect(reply.readUInt16BE(72)).toBe(udp.address().port);

      gw.send(VoiceOp.SelectProtocol, { protocol: 'udp', data: { address: '127.0.0.1', port: udp.address().port, mode: AES256_GCM_RTPSIZE } });
      const description = (await gw.next(VoiceOp.SessionDescription)).d;
      expect(description).toMatchObject({ mode: AES256_GCM_RTPSIZE, dave_protocol_version: 0 });
      expect(description.secret_key).toHaveLength(32);
      expect(await gw.next(VoiceOp.ClientsConnect)).toMatchObject({ seq: 1, d: { user_ids: voice.otherUserIds } });
      const key = Buffer.from(description.secret_key);

      // An RTP packet sealed the documented way: AES-256-GCM, AAD = the 12-byte header, nonce counter appended.
      const rtp = (seq: number, nonce: number, k = key, payloadType = 0x78) => {
        const header = Buffer.alloc(12);
        header[0] = 0x80;
        header[1] = payloadType;
        header.writeUInt16BE(seq, 2);
        header.writeUInt32BE(seq * 960, 4);
        header.writeUInt32BE(ready.ssrc, 8);
        const iv = Buffer.alloc(12);
        iv.writeUInt32BE(nonce, 0);
        const cipher = crypto.createCipheriv('aes-256-gcm', k, iv);
        cipher.setAAD(header);
        const sealed = Buffer.concat([cipher.update(OPUS_SILENCE), cipher.final(), cipher.getAuthTag()]);
        return Buffer.concat([header, sealed, iv.subarray(0, 4)]);
      };
      const kinds = () => voice.violations.map((v) => v.kind);
      udp.send(rtp(1, 1), ready.port, ready.ip);
      await voice.until(() => kinds().includes('speaking'), 'audio before Speaking flagged');
      expect(voice.packetCount).toBe(1);

      gw.send(VoiceOp.Speaking, { speaking: 1, delay: 0, ssrc: ready.ssrc });
      await voice.until(() => voice.speaking.length === 1, 'Speaking recorded');
      udp.send(rtp(2, 2, crypto.randomBytes(32)), ready.port, ready.ip);
      await voice.until(() => kinds().includes('decrypt'), 'a foreign key flagged');
      // Sealed with the right key, then one bit of its Opus flipped on the way: the tag no longer verifies.
      const tampered = rtp(2, 2);
      tampered[12] = tampered[12]! ^ 1;
      udp.send(tampered, ready.port, ready.ip);
      await voice.until(() => kinds().filter((k) => k === 'decrypt').length === 2, 'a tampered packet flagged');
      udp.send(rtp(2, 1), ready.port, ready.ip);
      await voice.until(() => kinds().includes('nonce'), 'a reused nonce flagged');
      udp.send(rtp(3, 3, key, 111), ready.port, ready.ip);
      await voice.until(() => kinds().includes('rtp-header'), 'payload type 111 flagged');
      // What decrypted is logged (flagged or not); what did not, is not.
      expect(entries(voice.received[0]!).map((e) => e.seq)).toEqual([1, 2, 3]);
      expect(voice.packets.map((p) => p.seq)).toEqual(keepPackets ? [1, 2, 3] : []);

      gw.send(VoiceOp.Heartbeat, { t: 7, seq_ack: 5 });
      expect((await gw.next(VoiceOp.HeartbeatAck)).d).toEqual({ t: 7 });
      await voice.until(() => kinds().includes('seq_ack'), 'seq_ack past the last seq flagged');
      expect(kinds()).toEqual(['speaking', 'decrypt', 'decrypt', 'nonce', 'rtp-header', 'seq_ack']);
    });
  }

  it('echoes UDP keep-alives until muteUdp(), then answers nothing on UDP for that session', async () => {
    const voice = await standIn({ heartbeatIntervalMs: 10_000 });
    const gw = await RawGateway.open(voice);
    gw.identify();
    const ready = (await gw.next(VoiceOp.Ready)).d;
    const udp = dgram.createSocket('udp4');
    cleanups.push(() => {
      udp.close();
    });
    await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', () => resolve()));
    const answers: Buffer[] = [];
    udp.on('message', (m) => answers.push(m));
    const discovery = Buffer.alloc(74);
    discovery.writeUInt16BE(1, 0);
    discovery.writeUInt16BE(70, 2);
    discovery.writeUInt32BE(ready.ssrc, 4);
    const keepAlive = Buffer.from([7, 0, 0, 0, 0, 0, 0, 0]);
    const settle = () => new Promise((r) => setTimeout(r, 200));
    udp.send(discovery, ready.port, ready.ip);
    await settle();
    udp.send(keepAlive, ready.port, ready.ip);
    await settle();
    expect(answers.map((a) => a.length)).toEqual([74, 8]);
    expect(answers[1]).toEqual(keepAlive);

    voice.muteUdp();
    udp.send(keepAlive, ready.port, ready.ip);
    udp.send(discovery, ready.port, ready.ip);
    await settle();
    expect(answers).toHaveLength(2);
    expect([voice.keepAlives, voice.keepAlivesEchoed]).toEqual([2, 1]);
    expect(voice.violations).toEqual([]);
  });

  it('refuses a Resume after a 4014 close with 4006, and accepts one after 4015', async () => {
    const voice = await standIn();
    const first = await RawGateway.open(voice);
    first.identify();
    await first.next(VoiceOp.Ready);
    voice.close(VoiceClose.VoiceServerCrashed);
    expect(await first.closed).toBe(4015);
    const resume = { server_id: CREDS.guildId, session_id: CREDS.sessionId, token: CREDS.token, seq_ack: -1 };
    const second = await RawGateway.open(voice);
    second.send(VoiceOp.Resume, resume);
    expect((await second.next(VoiceOp.Resumed)).d).toBeNull();
    voice.close(VoiceClose.Disconnected);
    expect(await second.closed).toBe(4014);
    const third = await RawGateway.open(voice);
    third.send(VoiceOp.Resume, resume);
    expect(await third.closed).toBe(VoiceClose.SessionNoLongerValid);
    expect(voice.connections.map((c) => [c.kind, c.closeCode])).toEqual([['identify', 4015], ['resume', 4014], ['resume', 4006]]);
  });
});

describe('XChaCha20-Poly1305 from node:crypto and HChaCha20', () => {
  it('derives the HChaCha20 subkey of draft-irtf-cfrg-xchacha §2.2.1', () => {
    const key = Buffer.from([...Array(32).keys()]);
    const nonce = Buffer.from('000000090000004a0000000031415927', 'hex');
    expect(hchacha20(key, nonce).toString('hex')).toBe('82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc');
  });

  it('opens what an independent XChaCha20-Poly1305 (@noble/ciphers) sealed, and refuses it tampered', async () => {
    const { xchacha20poly1305 } = (await import('@noble/ciphers/chacha.js')) as typeof import('@noble/ciphers/chacha.js');
    for (let i = 0; i < 20; i++) {
      const key = crypto.randomBytes(32);
      const nonce = crypto.randomBytes(24);
      const aad = crypto.randomBytes(12);
      const plain = crypto.randomBytes(1 + i * 37);
      const sealed = Buffer.from(xchacha20poly1305(key, nonce, aad).encrypt(plain));
      const ct = sealed.subarray(0, sealed.length - 16);
      const tag = sealed.subarray(sealed.length - 16);
      expect(xchacha20Poly1305Open(key, nonce, aad, ct, tag)).toEqual(plain);
      const bad = Buffer.from(ct);
      bad[0] = bad[0]! ^ 1;
      expect(() => xchacha20Poly1305Open(key, nonce, aad, bad, tag)).toThrow();
    }
  });
});
