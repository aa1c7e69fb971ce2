/**
 * A strict stand-in for a Discord voice server, written from Discord's voice documentation
 * (docs/topics/voice-connections: voice gateway v8, IP discovery, transport encryption): what a
 * voice client (chorus's session worker, through @discordjs/voice) talks to in tests, since Discord
 * itself is out of reach. It checks everything the client sends and records what it heard.
 *
 * One server is one voice host: a WSS voice gateway and one UDP port on 127.0.0.1, serving any
 * number of guilds (each with its own credentials, SSRC and secret key), as a real one does.
 *
 *   const voice = await startDiscordVoiceServer({ guildId, userId, sessionId, token });
 *   // the client process needs NODE_EXTRA_CA_CERTS=voice.caFile (@discordjs/voice dials wss://)
 *   PUT /sessions/x/voice { guildId, userId, sessionId, token, endpoint: voice.endpoint, … }
 *   await voice.waitForPackets(50);
 *   voice.packets[i]  // { at, seq, timestamp, ssrc, marker, nonce, opus, pcm, silence, session }
 *   voice.received    // per voice session, compactly: arrival, seq, timestamp, silence of each packet
 *   voice.speaking    // [{ at, speaking, delay, ssrc, session }]
 *   voice.connections // each WebSocket: { kind: 'identify'|'resume', established, closeCode, … }
 *   voice.close(4015) // resumable: the client should Resume; 4006/4014 end the session
 *   voice.violations  // everything that broke the protocol: tests expect []
 *   await voice.stop();
 *
 * For many guilds on one host: `const server = await VoiceServer.start(options)`, then
 * `server.guild({ guildId, … })` for each, each guild with the same API as above.
 *
 * What it speaks (server side of the v8 voice gateway):
 * - WSS at `wss://127.0.0.1:<port>/?v=8` (any other `v` is refused with close 4020). A test CA and
 *   a certificate for 127.0.0.1/localhost are made once per test process with the openssl CLI;
 *   `caFile` is the CA. Node reads NODE_EXTRA_CA_CERTS only at process start, so the client side
 *   must run in a child process started with it (a worker thread of this process will not do).
 * - Hello (op 8, heartbeat_interval) on connect. Identify (op 0): server_id must name a guild of
 *   this server (else 4011), token and user_id must match (else 4004), session_id must match
 *   (else 4006); malformed → 4002, twice → 4005, anything but Heartbeat/Identify/Resume before it
 *   → 4003, unknown opcode → 4001. Then Ready (op 2: ssrc, ip, port, modes).
 * - Select Protocol (op 1): protocol "udp" (else 4012), mode among those offered (else 4016),
 *   address/port as IP discovery saw them (else a violation). Then Session Description (op 4:
 *   mode, a random 32-byte secret_key, dave_protocol_version 0: this stand-in cannot do MLS, so
 *   DAVE stays off and the client sends transport-encrypted Opus only).
 * - Heartbeat (op 3, `{ t, seq_ack }`) → Heartbeat ACK (op 6, `{ t }`); seq_ack must never pass
 *   the last seq sent nor go back; no heartbeat for 3 intervals → close 4009.
 * - Speaking (op 5): ssrc must be the guild's; each is recorded with its time. The first RTP
 *   packet of a session must come after a non-zero Speaking (within `speakingGraceMs`, since
 *   WebSocket and UDP race on the way in).
 * - Sequence numbers: Clients Connect (op 11, sent after Session Description for `otherUserIds`)
 *   and Client Disconnect (op 13, `clientDisconnect()`) carry `seq`, are kept, and are sent again
 *   after a Resume for whatever the client's seq_ack had not acknowledged.
 * - Resume (op 7: server_id, session_id, token, seq_ack) → Resumed (op 9), after a close with 4015,
 *   a code below 4000, or a dropped connection; after any other close code the session is gone
 *   and Resume gets 4006. A fresh Identify starts a new session (new secret key, `session` + 1).
 * - `close(code)` closes the guild's current connection with that code; `drop()` cuts it without
 *   a close frame (the client sees 1006, which is resumable).
 * UDP (one port for all guilds, told apart by SSRC):
 * - IP discovery: a 74-byte request (type 1, length 70, the guild's SSRC) gets a 74-byte response
 *   (type 2, length 70, SSRC, the sender's address NUL-terminated in 64 bytes, its port, all big
 *   endian). The 8-byte keep-alives @discordjs/voice sends every 5 s are counted and echoed back,
 *   as Discord's servers have done (undocumented; `echoKeepAlives: false` models a server that
 *   does not). `muteUdp()` makes the guild's current session get no UDP answer at all (a voice
 *   server gone quiet); the next Identify's session is answered again.
 * - RTP: version 2, payload type 0x78, the guild's SSRC, from the address/port selected, after
 *   Session Description; the unencrypted header is 12 bytes + CSRCs + the extension preamble
 *   ("rtpsize"), the last 4 bytes are the nonce counter, which must go up. Decrypted with
 *   node:crypto: aead_aes256_gcm_rtpsize (AES-256-GCM, 12-byte nonce = counter then zeros,
 *   AAD = header) and aead_xchacha20_poly1305_rtpsize (24-byte nonce = counter then zeros;
 *   node:crypto has only the IETF ChaCha20-Poly1305, so the XChaCha subkey is derived here with
 *   HChaCha20, draft-irtf-cfrg-xchacha §2.2). Sequence +1 and timestamp +960 per packet within a
 *   session; the Opus is decoded (@discordjs/opus, 48 kHz stereo) unless `decode: false`.
 * What it keeps of the packets that pass: every one's arrival, seq, timestamp and whether it is
 * the silence frame, in typed arrays per voice session (`received`); and, unless
 * `keepPackets: false` (a load run's receivers), each as a ReceivedPacket with its Opus (and PCM)
 * in `packets`. Both modes run the same checks.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { WebSocketServer, type WebSocket } from 'ws';
import { CHANNELS, FRAME_SAMPLES, SAMPLE_RATE } from '../../src/shared/audio.js';

const require = createRequire(import.meta.url);
const { OpusEncoder } = require('@discordjs/opus') as typeof import('@discordjs/opus');

export const AES256_GCM_RTPSIZE = 'aead_aes256_gcm_rtpsize';
export const XCHACHA20_POLY1305_RTPSIZE = 'aead_xchacha20_poly1305_rtpsize';
export type EncryptionMode = typeof AES256_GCM_RTPSIZE | typeof XCHACHA20_POLY1305_RTPSIZE;

/** Voice gateway opcodes (docs: opcodes-and-status-codes#voice). */
export const VoiceOp = {
  Identify: 0,
  SelectProtocol: 1,
  Ready: 2,
  Heartbeat: 3,
  SessionDescription: 4,
  Speaking: 5,
  HeartbeatAck: 6,
  Resume: 7,
  Hello: 8,
  Resumed: 9,
  ClientsConnect: 11,
  ClientDisconnect: 13,
} as const;

/** Voice close codes (docs: opcodes-and-status-codes#voice-voice-close-event-codes). */
export const VoiceClose = {
  UnknownOpcode: 4001,
  FailedToDecode: 4002,
  NotAuthenticated: 4003,
  AuthenticationFailed: 4004,
  AlreadyAuthenticated: 4005,
  SessionNoLongerValid: 4006,
  SessionTimeout: 4009,
  ServerNotFound: 4011,
  UnknownProtocol: 4012,
  Disconnected: 4014,
  VoiceServerCrashed: 4015,
  UnknownEncryptionMode: 4016,
  BadRequest: 4020,
} as const;

/** The Opus frame Discord asks senders to end a transmission with, five times. */
export const OPUS_SILENCE = Buffer.from([0xf8, 0xff, 0xfe]);
/** RTP payload type Discord uses for Opus. */
export const DISCORD_OPUS_PAYLOAD_TYPE = 0x78;
const RTP_HEADER_BYTES = 12;
const NONCE_BYTES = 4;
const TAG_BYTES = 16;
const IP_DISCOVERY_BYTES = 74;
const KEEP_ALIVE_BYTES = 8;
const UDP_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;

export interface GuildCredentials {
  guildId: string;
  userId: string;
  sessionId: string;
  token: string;
  /** The SSRC handed out in Ready; random when not given. */
  ssrc?: number;
  /** Users announced in Clients Connect after Session Description; default one listener. */
  otherUserIds?: string[];
}

export interface VoiceServerOptions {
  /** Modes offered in Ready, in that order; default both rtpsize AEAD modes. */
  modes?: EncryptionMode[];
  /** heartbeat_interval in Hello; default 1000 ms. */
  heartbeatIntervalMs?: number;
  /** Decode every packet's Opus to PCM; default true (a load run may turn it off). */
  decode?: boolean;
  /** How late a Speaking may arrive after the first RTP packet of a session; default 50 ms. */
  speakingGraceMs?: number;
  /** Echo each 8-byte UDP keep-alive back to its sender; default true. */
  echoKeepAlives?: boolean;
  /**
   * Keep every packet as a ReceivedPacket (with its Opus, and PCM when decoding) in `packets`;
   * default true. A load run turns it off: each packet is checked all the same, and `received`
   * alone records it, so the heap does not grow with the run — a growing heap's GC pauses delay
   * this process's reads, and that delay is counted as the sender's lateness.
   */
  keepPackets?: boolean;
  /** Packets per voice session `received` makes room for at once (it grows past them); default 1024. */
  expectedPackets?: number;
}

export interface ReceivedPacket {
  /** performance.now() in this process when the datagram arrived. */
  at: number;
  seq: number;
  timestamp: number;
  ssrc: number;
  marker: boolean;
  /** The transport-encryption nonce counter (last 4 bytes of the datagram). */
  nonce: number;
  /** The decrypted Opus packet. */
  opus: Buffer;
  /** opus decoded to s16le 48 kHz stereo (960 samples), when decoding is on. */
  pcm?: Buffer;
  /** The packet is the Opus silence frame F8 FF FE. */
  silence: boolean;
  /** Which session of this guild (1 = first Identify) it arrived in. */
  session: number;
}

/**
 * The packets of one voice session that passed every check, compactly: entry i is the i-th
 * packet's arrival (performance.now()), RTP sequence number, RTP timestamp and whether it was the
 * Opus silence frame. Typed arrays, grown by doubling, so a long run keeps no object per packet.
 */
export class PacketLog {
  count = 0;
  /** Of `count`, how many were the silence frame. */
  silent = 0;
  private arrivals: Float64Array;
  private seqs: Uint16Array;
  private timestamps: Uint32Array;
  private silences: Uint8Array;

  constructor(
    /** Which session of its guild (1 = first Identify). */
    readonly session: number,
    capacity: number,
  ) {
    this.arrivals = new Float64Array(capacity);
    this.seqs = new Uint16Array(capacity);
    this.timestamps = new Uint32Array(capacity);
    this.silences = new Uint8Array(capacity);
  }

  /** Packets other than the silence frame. */
  get audio(): number {
    return this.count - this.silent;
  }

  push(at: number, seq: number, timestamp: number, silence: boolean): void {
    if (this.count === this.arrivals.length) this.grow();
    const i = this.count++;
    this.arrivals[i] = at;
    this.seqs[i] = seq;
    this.timestamps[i] = timestamp;
    this.silences[i] = silence ? 1 : 0;
    if (silence) this.silent++;
  }

  at(i: number): number {
    return this.arrivals[i]!;
  }

  seq(i: number): number {
    return this.seqs[i]!;
  }

  timestamp(i: number): number {
    return this.timestamps[i]!;
  }

  silence(i: number): boolean {
    return this.silences[i] === 1;
  }

  /** Arrival of each packet that was not the silence frame, in order. */
  audioArrivals(): Float64Array {
    const out = new Float64Array(this.audio);
    for (let i = 0, j = 0; i < this.count; i++) if (this.silences[i] === 0) out[j++] = this.arrivals[i]!;
    return out;
  }

  private grow(): void {
    const size = Math.max(64, 2 * this.arrivals.length);
    const widen = <T extends Float64Array | Uint16Array | Uint32Array | Uint8Array>(from: T, to: T): T => {
      to.set(from);
      return to;
    };
    this.arrivals = widen(this.arrivals, new Float64Array(size));
    this.seqs = widen(this.seqs, new Uint16Array(size));
    this.timestamps = widen(this.timestamps, new Uint32Array(size));
    this.silences = widen(this.silences, new Uint8Array(size));
  }
}

export interface SpeakingEvent {
  at: number;
  speaking: number;
  delay: unknown;
  ssrc: unknown;
  session: number;
}

export interface Violation {
  at: number;
  /** Short machine-readable kind, e.g. 'identify', 'rtp-header', 'decrypt', 'continuity'. */
  kind: string;
  message: string;
  guildId?: string;
}

/** One WebSocket connection of a guild, as the server saw it. */
export interface ConnectionRecord {
  openedAt: number;
  /** How it began: 'identify' (a new session) or 'resume'. */
  kind?: 'identify' | 'resume';
  /** Identify's max_dave_protocol_version (@discordjs/voice with @snazzah/davey offers 1). */
  maxDaveProtocolVersion?: unknown;
  /** Resume's seq_ack. */
  seqAck?: number;
  /** Ready (identify) or Resumed (resume) was sent. */
  established: boolean;
  closedAt?: number;
  closeCode?: number;
  /** Who closed it: the server (a check failed, or a test's close()/drop()) or the client. */
  closedBy?: 'server' | 'client';
  session: number;
}

/** One voice session of a guild: from an Identify until the next one; a Resume continues it. */
export interface VoiceSession {
  /** 1 for the guild's first Identify, then +1 per Identify. */
  number: number;
  secretKey?: Buffer;
  /** The mode Select Protocol chose. */
  mode?: EncryptionMode;
  /** Where IP discovery saw the client's UDP socket. */
  discovered?: { address: string; port: number };
  /** What Select Protocol named: RTP must come from there. */
  selected?: { address: string; port: number };
  /** Numbered server messages, for re-delivery on resume. */
  sent: { seq: number; message: string }[];
  /** The last seq sent. */
  seq: number;
  /** The highest seq_ack the client has heartbeated (or resumed with); -1 before any. */
  lastSeqAck: number;
  resumable: boolean;
  lastNonce?: number;
  /** Its packets that passed the checks (the last of them is what continuity is checked against). */
  received: PacketLog;
  speakingOn: boolean;
  speakingOnAt?: number;
  speakingCheckPending: boolean;
  /** muteUdp(): nothing on UDP is answered for this session. */
  udpMuted: boolean;
  decoder?: InstanceType<typeof OpusEncoder>;
}

interface Connection {
  ws: WebSocket;
  record: ConnectionRecord;
  guild?: VoiceGuild;
  heartbeatTimer?: NodeJS.Timeout;
}

/** What one guild's voice connection did on a VoiceServer. */
export class VoiceGuild {
  /** Every packet that passed the checks, as an object; empty when the server keeps no packets. */
  readonly packets: ReceivedPacket[] = [];
  /** One log per voice session (per Identify), in order: kept whatever keepPackets says. */
  readonly received: PacketLog[] = [];
  readonly speaking: SpeakingEvent[] = [];
  readonly connections: ConnectionRecord[] = [];
  /** Violations that belong to this guild; `violations` adds the server's unattributed ones. */
  readonly ownViolations: Violation[] = [];
  /** 8-byte UDP keep-alives received, and how many of them were echoed. */
  keepAlives = 0;
  keepAlivesEchoed = 0;
  readonly ssrc: number;
  readonly otherUserIds: string[];
  private credentials: { userId: string; sessionId: string; token: string };
  /** The session now on (or last on) the wire; undefined before the first Identify. */
  session?: VoiceSession;
  current?: Connection;
  private readonly waiters = new Set<() => void>();

  constructor(
    readonly server: VoiceServer,
    readonly guildId: string,
    creds: GuildCredentials,
  ) {
    this.credentials = { userId: creds.userId, sessionId: creds.sessionId, token: creds.token };
    this.ssrc = creds.ssrc ?? crypto.randomInt(1, 2 ** 31);
    this.otherUserIds = creds.otherUserIds ?? ['100000000000000001'];
  }

  get endpoint(): string {
    return this.server.endpoint;
  }

  get caFile(): string {
    return this.server.caFile;
  }

  /** This guild's violations and the server's unattributed ones, oldest first. */
  get violations(): Violation[] {
    return [...this.ownViolations, ...this.server.violations.filter((v) => v.guildId === undefined)].sort((a, b) => a.at - b.at);
  }

  /** Identify/Resume must carry these from now on (a bot's new VOICE_SERVER_UPDATE brings a new token). */
  setCredentials(next: Partial<Pick<GuildCredentials, 'userId' | 'sessionId' | 'token'>>): void {
    this.credentials = { ...this.credentials, ...next };
  }

  matches(field: 'userId' | 'sessionId' | 'token', value: unknown): boolean {
    return value === this.credentials[field];
  }

  /** Closes the guild's current connection with `code`; 4015 and codes below 4000 leave it resumable. */
  close(code: number, reason = ''): void {
    const conn = this.current;
    if (!conn) throw new Error(`guild ${this.guildId} has no voice connection to close`);
    this.server.closeConnection(conn, code, reason);
  }

  /** Cuts the current connection without a close frame (the client sees 1006: resumable). */
  drop(): void {
    const conn = this.current;
    if (!conn) throw new Error(`guild ${this.guildId} has no voice connection to drop`);
    this.server.dropConnection(conn);
  }

  /** Sends Client Disconnect (op 13, numbered) for `userId`: re-sent after a resume if unacknowledged. */
  clientDisconnect(userId: string): void {
    this.server.sendNumbered(this, { op: VoiceOp.ClientDisconnect, d: { user_id: userId } });
  }

  /** From now on the current session gets no UDP answer (no keep-alive echo, no IP discovery reply). */
  muteUdp(): void {
    if (!this.session) throw new Error(`guild ${this.guildId} has no session to mute`);
    this.session.udpMuted = true;
  }

  /** Packets that passed the checks, over every session. */
  get packetCount(): number {
    let n = 0;
    for (const log of this.received) n += log.count;
    return n;
  }

  /** Of them, those that were not the silence frame. */
  get audioPacketCount(): number {
    let n = 0;
    for (const log of this.received) n += log.audio;
    return n;
  }

  /** s16le stereo PCM of packets [from, to) concatenated (decoding must be on). */
  pcm(from = 0, to = this.packets.length): Buffer {
    const parts = this.packets.slice(from, to).map((p) => {
      if (!p.pcm) throw new Error('packets were not decoded: start the server with decode: true');
      return p.pcm;
    });
    return Buffer.concat(parts);
  }

  /** Resolves once `check()` holds, re-checked on everything this guild records. */
  until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const test = () => {
        if (!check()) return false;
        clearTimeout(timer);
        this.waiters.delete(onEvent);
        resolve();
        return true;
      };
      const onEvent = () => void test();
      const timer = setTimeout(() => {
        this.waiters.delete(onEvent);
        const seen = `${this.packetCount} packets, ${this.connections.length} connections, violations: ${JSON.stringify(this.violations)}`;
        reject(new Error(`guild ${this.guildId}: not ${what} within ${timeoutMs} ms (${seen})`));
      }, timeoutMs);
      if (!test()) this.waiters.add(onEvent);
    });
  }

  waitForPackets(count: number, timeoutMs = 10_000): Promise<void> {
    return this.until(() => this.packetCount >= count, `${count} packets received`, timeoutMs);
  }

  /** Waits for a connection that got Ready (identify) or Resumed (resume), counting from `after`. */
  waitForEstablished(kind: 'identify' | 'resume', after = 0, timeoutMs = 10_000): Promise<ConnectionRecord> {
    const find = () => this.connections.slice(after).find((c) => c.kind === kind && c.established);
    return this.until(() => find() !== undefined, `${kind} established`, timeoutMs).then(() => find()!);
  }

  async stop(): Promise<void> {
    await this.server.stop();
  }

  /** Called by the server whenever it records something for this guild. */
  notify(): void {
    for (const w of this.waiters) w();
  }
}

interface TestTls {
  caFile: string;
  key: Buffer;
  cert: Buffer;
}

let tls: TestTls | undefined;

/** Removes the TLS directories of test processes that are gone (killed before their exit hook ran). */
function removeStaleTlsDirs(): void {
  for (const name of fs.readdirSync(os.tmpdir())) {
    const pid = Number(/^chorus-voice-tls-(\d+)-/.exec(name)?.[1]);
    if (!pid || pid === process.pid) continue;
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') fs.rmSync(path.join(os.tmpdir(), name), { recursive: true, force: true });
    }
  }
}

/**
 * A test CA and a certificate it signed for 127.0.0.1 and localhost, made once per process, so
 * that a client started with one stand-in's caFile trusts every later stand-in of this process.
 * Only the CA certificate stays on disk (the keys are kept in memory); the directory goes at exit.
 */
function testTls(): TestTls {
  if (tls) return tls;
  removeStaleTlsDirs();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `chorus-voice-tls-${process.pid}-`));
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  const p = (name: string) => path.join(dir, name);
  const openssl = (args: string[]) => {
    try {
      execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
      if (e.code === 'ENOENT') throw new Error('the voice stand-in needs the openssl CLI for its test certificate (apt-get install openssl)');
      throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString() ?? e.message}`);
    }
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '2', '-subj', '/CN=chorus test voice CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  openssl(['req', ...ec, '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=localhost']);
  fs.writeFileSync(p('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  openssl(['x509', '-req', '-in', p('server.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial',
    '-out', p('server.pem'), '-days', '2', '-extfile', p('server.ext')]);
  tls = { caFile: p('ca.pem'), key: fs.readFileSync(p('server.key')), cert: fs.readFileSync(p('server.pem')) };
  for (const name of fs.readdirSync(dir)) if (name !== 'ca.pem') fs.rmSync(p(name));
  return tls;
}

/** One stand-in voice host: a WSS voice gateway and a UDP port on 127.0.0.1. */
export class VoiceServer {
  /** Every violation on this server, attributed to a guild where one is known. */
  readonly violations: Violation[] = [];
  readonly modes: EncryptionMode[];
  readonly heartbeatIntervalMs: number;
  readonly decode: boolean;
  readonly speakingGraceMs: number;
  readonly echoKeepAlives: boolean;
  readonly keepPackets: boolean;
  readonly expectedPackets: number;
  /** How long a Heartbeat ACK waits before it goes out (a voice gateway this far away); default 0. */
  heartbeatAckDelayMs = 0;
  private readonly guilds = new Map<string, VoiceGuild>();
  private readonly bySsrc = new Map<number, VoiceGuild>();
  private readonly open = new Set<Connection>();
  private stopped = false;

  private constructor(
    private readonly https: https.Server,
    private readonly wss: WebSocketServer,
    private readonly udp: dgram.Socket,
    readonly caFile: string,
    options: VoiceServerOptions,
  ) {
    this.modes = options.modes ?? [AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE];
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? 1000;
    this.decode = options.decode ?? true;
    this.speakingGraceMs = options.speakingGraceMs ?? 50;
    this.echoKeepAlives = options.echoKeepAlives ?? true;
    this.keepPackets = options.keepPackets ?? true;
    this.expectedPackets = options.expectedPackets ?? 1024;
    wss.on('connection', (ws, req) => this.onConnection(ws, req.url ?? ''));
    udp.on('message', (msg, rinfo) => this.onDatagram(msg, rinfo));
  }

  static async start(options: VoiceServerOptions = {}): Promise<VoiceServer> {
    for (const mode of options.modes ?? []) {
      if (mode !== AES256_GCM_RTPSIZE && mode !== XCHACHA20_POLY1305_RTPSIZE) throw new Error(`the stand-in cannot offer ${mode}`);
    }
    const { key, cert, caFile } = testTls();
    const server = https.createServer({ key, cert });
    const wss = new WebSocketServer({ server });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    // Many guilds send here at once: a deep receive queue rides out a stall of this process's event
    // loop, so a burst is not lost here and blamed on the sender. The kernel grants twice what is
    // asked, up to twice net.core.rmem_max; a voice datagram takes ~830 bytes of it on loopback, so
    // with rmem_max at 4 MiB, 8 MiB holds ~10k datagrams: 1.6 s of 125 guilds.
    const udp = dgram.createSocket({ type: 'udp4', recvBufferSize: UDP_RECEIVE_BUFFER_BYTES });
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(0, '127.0.0.1', () => resolve());
    });
    return new VoiceServer(server, wss, udp, caFile, options);
  }

  /** host:port of the voice gateway, as VOICE_SERVER_UPDATE's `endpoint` gives it. */
  get endpoint(): string {
    return `127.0.0.1:${(this.https.address() as AddressInfo).port}`;
  }

  get udpPort(): number {
    return this.udp.address().port;
  }

  /** The UDP receive buffer the kernel granted (asked: 4 MiB). */
  get udpReceiveBufferBytes(): number {
    return this.udp.getRecvBufferSize();
  }

  /** Expects a guild's voice connection with these credentials. */
  guild(creds: GuildCredentials): VoiceGuild {
    if (this.guilds.has(creds.guildId)) throw new Error(`guild ${creds.guildId} is already on this server`);
    const guild = new VoiceGuild(this, creds.guildId, creds);
    if (this.bySsrc.has(guild.ssrc)) throw new Error(`ssrc ${guild.ssrc} is taken`);
    this.guilds.set(creds.guildId, guild);
    this.bySsrc.set(guild.ssrc, guild);
    return guild;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const conn of this.open) {
      clearTimeout(conn.heartbeatTimer);
      conn.ws.terminate();
    }
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    this.https.closeAllConnections();
    await new Promise<void>((resolve) => this.https.close(() => resolve()));
    await new Promise<void>((resolve) => this.udp.close(() => resolve()));
  }

  private violation(kind: string, message: string, guild?: VoiceGuild): void {
    const v: Violation = { at: performance.now(), kind, message, guildId: guild?.guildId };
    this.violations.push(v);
    if (guild) {
      guild.ownViolations.push(v);
      guild.notify();
    } else {
      for (const g of this.guilds.values()) g.notify();
    }
  }

  // ---- WebSocket: the voice gateway ----

  private onConnection(ws: WebSocket, url: string): void {
    const conn: Connection = { ws, record: { openedAt: performance.now(), established: false, session: 0 } };
    this.open.add(conn);
    ws.on('close', (code) => {
      this.open.delete(conn);
      clearTimeout(conn.heartbeatTimer);
      const rec = conn.record;
      if (rec.closedAt === undefined) {
        rec.closedAt = performance.now();
        rec.closeCode = code;
        rec.closedBy = 'client';
        // A client that lost its connection may resume the session on a new one.
        if (conn.guild?.current === conn && conn.guild.session) conn.guild.session.resumable = true;
      }
      conn.guild?.notify();
    });
    ws.on('error', () => {
      // A reset connection: 'close' follows and records it.
    });
    const version = new URL(url, 'wss://stand-in').searchParams.get('v');
    if (version !== '8') {
      this.violation('gateway-version', `voice gateway asked for v=${version ?? '(none)'}; this server speaks v8 only`);
      this.closeConnection(conn, VoiceClose.BadRequest, 'v=8 required');
      return;
    }
    ws.on('message', (data, isBinary) => this.onMessage(conn, data as Buffer, isBinary));
    this.send(conn, { op: VoiceOp.Hello, d: { heartbeat_interval: this.heartbeatIntervalMs } });
    this.armHeartbeatTimeout(conn);
  }

  private armHeartbeatTimeout(conn: Connection): void {
    clearTimeout(conn.heartbeatTimer);
    conn.heartbeatTimer = setTimeout(() => {
      this.violation('heartbeat', `no heartbeat for ${3 * this.heartbeatIntervalMs} ms (interval ${this.heartbeatIntervalMs} ms)`, conn.guild);
      this.closeConnection(conn, VoiceClose.SessionTimeout, 'session timeout');
    }, 3 * this.heartbeatIntervalMs);
  }

  private send(conn: Connection, payload: object): void {
    if (conn.ws.readyState === conn.ws.OPEN) conn.ws.send(JSON.stringify(payload));
  }

  /** Sends a numbered message to the guild's current connection and keeps it for re-delivery. */
  sendNumbered(guild: VoiceGuild, payload: { op: number; d: unknown }): void {
    const session = guild.session;
    if (!session) throw new Error(`guild ${guild.guildId} has no session`);
    session.seq += 1;
    const message = JSON.stringify({ ...payload, seq: session.seq });
    session.sent.push({ seq: session.seq, message });
    const conn = guild.current;
    if (conn?.record.established && conn.ws.readyState === conn.ws.OPEN) conn.ws.send(message);
  }

  closeConnection(conn: Connection, code: number, reason: string): void {
    const rec = conn.record;
    if (rec.closedAt === undefined) {
      rec.closedAt = performance.now();
      rec.closeCode = code;
      rec.closedBy = 'server';
    }
    clearTimeout(conn.heartbeatTimer);
    const session = conn.guild?.session;
    if (session && conn.guild?.current === conn) session.resumable = code === VoiceClose.VoiceServerCrashed || code < 4000;
    conn.ws.close(code, reason);
    conn.guild?.notify();
  }

  dropConnection(conn: Connection): void {
    const rec = conn.record;
    rec.closedAt = performance.now();
    rec.closeCode = 1006;
    rec.closedBy = 'server';
    clearTimeout(conn.heartbeatTimer);
    if (conn.guild?.session) conn.guild.session.resumable = true;
    conn.ws.terminate();
    conn.guild?.notify();
  }

  private onMessage(conn: Connection, data: Buffer, isBinary: boolean): void {
    if (conn.record.closedAt !== undefined) return;
    if (isBinary) {
      // Binary messages are DAVE's MLS opcodes; with dave_protocol_version 0 the client has none to send.
      this.violation('dave', `binary message (opcode ${data[0]}) although dave_protocol_version is 0`, conn.guild);
      return;
    }
    let msg: { op?: unknown; d?: unknown };
    try {
      msg = JSON.parse(data.toString('utf8'));
    } catch {
      this.violation('decode', `text message that is not JSON: ${data.toString('utf8').slice(0, 80)}`, conn.guild);
      this.closeConnection(conn, VoiceClose.FailedToDecode, 'not JSON');
      return;
    }
    if (typeof msg !== 'object' || msg === null || typeof msg.op !== 'number') {
      this.violation('decode', `message without a numeric op: ${data.toString('utf8').slice(0, 80)}`, conn.guild);
      this.closeConnection(conn, VoiceClose.FailedToDecode, 'no op');
      return;
    }
    const d = (typeof msg.d === 'object' && msg.d !== null ? msg.d : {}) as Record<string, unknown>;
    switch (msg.op) {
      case VoiceOp.Heartbeat:
        return this.onHeartbeat(conn, msg.d);
      case VoiceOp.Identify:
        return this.onIdentify(conn, d);
      case VoiceOp.Resume:
        return this.onResume(conn, d);
      case VoiceOp.SelectProtocol:
      case VoiceOp.Speaking:
        if (!conn.guild || !conn.record.established) {
          this.violation('not-authenticated', `op ${msg.op} before Identify/Resume`, conn.guild);
          this.closeConnection(conn, VoiceClose.NotAuthenticated, 'not authenticated');
          return;
        }
        if (msg.op === VoiceOp.SelectProtocol) return this.onSelectProtocol(conn, conn.guild, d);
        return this.onSpeaking(conn.guild, d);
      default:
        this.violation('opcode', `unknown or server-only opcode ${msg.op}`, conn.guild);
        this.closeConnection(conn, VoiceClose.UnknownOpcode, 'unknown opcode');
    }
  }

  private onHeartbeat(conn: Connection, d: unknown): void {
    const guild = conn.guild;
    const body = (typeof d === 'object' && d !== null ? d : {}) as { t?: unknown; seq_ack?: unknown };
    if (typeof body.t !== 'number') {
      this.violation('heartbeat', `v8 heartbeat must be { t, seq_ack }, got ${JSON.stringify(d)}`, guild);
    }
    const session = guild?.session;
    if (session && conn.record.established) {
      const sent = session.seq;
      if (body.seq_ack === undefined) {
        if (session.lastSeqAck > 0) this.violation('seq_ack', `heartbeat without seq_ack after acknowledging ${session.lastSeqAck}`, guild);
      } else if (typeof body.seq_ack !== 'number' || !Number.isInteger(body.seq_ack)) {
        this.violation('seq_ack', `seq_ack ${JSON.stringify(body.seq_ack)} is not an integer`, guild);
      } else if (body.seq_ack > sent) {
        this.violation('seq_ack', `seq_ack ${body.seq_ack} is past the last seq sent (${sent})`, guild);
      } else if (body.seq_ack < session.lastSeqAck) {
        this.violation('seq_ack', `seq_ack went back from ${session.lastSeqAck} to ${body.seq_ack}`, guild);
      } else {
        session.lastSeqAck = body.seq_ack;
      }
    }
    const ack = () => this.send(conn, { op: VoiceOp.HeartbeatAck, d: { t: body.t } });
    if (this.heartbeatAckDelayMs > 0) setTimeout(ack, this.heartbeatAckDelayMs);
    else ack();
    this.armHeartbeatTimeout(conn);
    guild?.notify();
  }

  /** Looks up the guild a payload's server_id names; closes with 4011 when there is none. */
  private guildOf(conn: Connection, serverId: unknown): VoiceGuild | undefined {
    const guild = typeof serverId === 'string' ? this.guilds.get(serverId) : undefined;
    if (!guild) {
      this.violation('server_id', `server_id ${JSON.stringify(serverId)} is no guild of this server`);
      this.closeConnection(conn, VoiceClose.ServerNotFound, 'server not found');
    }
    return guild;
  }

  private onIdentify(conn: Connection, d: Record<string, unknown>): void {
    if (conn.record.kind) {
      this.violation('identify', 'a second Identify/Resume on one connection', conn.guild);
      this.closeConnection(conn, VoiceClose.AlreadyAuthenticated, 'already authenticated');
      return;
    }
    const fields = ['server_id', 'user_id', 'session_id', 'token'] as const;
    const bad = fields.filter((f) => typeof d[f] !== 'string' || d[f] === '');
    if (bad.length > 0 || (d.max_dave_protocol_version !== undefined && typeof d.max_dave_protocol_version !== 'number')) {
      this.violation('identify', `malformed Identify (${bad.join(', ') || 'max_dave_protocol_version'}): ${JSON.stringify(d)}`);
      this.closeConnection(conn, VoiceClose.FailedToDecode, 'malformed identify');
      return;
    }
    const guild = this.guildOf(conn, d.server_id);
    if (!guild) return;
    conn.guild = guild;
    conn.record.kind = 'identify';
    conn.record.maxDaveProtocolVersion = d.max_dave_protocol_version;
    guild.connections.push(conn.record);
    if (!guild.matches('token', d.token) || !guild.matches('userId', d.user_id)) {
      this.violation('identify', `Identify with a wrong ${guild.matches('token', d.token) ? 'user_id' : 'token'}`, guild);
      this.closeConnection(conn, VoiceClose.AuthenticationFailed, 'authentication failed');
      return;
    }
    if (!guild.matches('sessionId', d.session_id)) {
      this.violation('identify', `Identify with a wrong session_id ${JSON.stringify(d.session_id)}`, guild);
      this.closeConnection(conn, VoiceClose.SessionNoLongerValid, 'session no longer valid');
      return;
    }
    if (guild.current && guild.current !== conn && guild.current.record.closedAt === undefined) {
      this.closeConnection(guild.current, VoiceClose.SessionNoLongerValid, 'replaced by a new Identify');
    }
    const number = (guild.session?.number ?? 0) + 1;
    const received = new PacketLog(number, this.expectedPackets);
    guild.received.push(received);
    guild.session = { number, sent: [], seq: 0, lastSeqAck: -1, resumable: false, speakingOn: false, speakingCheckPending: false, udpMuted: false, received };
    guild.current = conn;
    conn.record.session = number;
    conn.record.established = true;
    this.send(conn, { op: VoiceOp.Ready, d: { ssrc: guild.ssrc, ip: '127.0.0.1', port: this.udpPort, modes: this.modes } });
    guild.notify();
  }

  private onResume(conn: Connection, d: Record<string, unknown>): void {
    if (conn.record.kind) {
      this.violation('resume', 'a second Identify/Resume on one connection', conn.guild);
      this.closeConnection(conn, VoiceClose.AlreadyAuthenticated, 'already authenticated');
      return;
    }
    const bad = (['server_id', 'session_id', 'token'] as const).filter((f) => typeof d[f] !== 'string');
    if (bad.length > 0 || (d.seq_ack !== undefined && !Number.isInteger(d.seq_ack))) {
      this.violation('resume', `malformed Resume (${bad.join(', ') || 'seq_ack'}): ${JSON.stringify(d)}`);
      this.closeConnection(conn, VoiceClose.FailedToDecode, 'malformed resume');
      return;
    }
    const guild = this.guildOf(conn, d.server_id);
    if (!guild) return;
    conn.guild = guild;
    conn.record.kind = 'resume';
    const seqAck = (d.seq_ack as number | undefined) ?? -1;
    conn.record.seqAck = seqAck;
    guild.connections.push(conn.record);
    const session = guild.session;
    if (!guild.matches('token', d.token)) {
      this.violation('resume', 'Resume with a wrong token', guild);
      this.closeConnection(conn, VoiceClose.AuthenticationFailed, 'authentication failed');
      return;
    }
    if (!session || !session.resumable || !guild.matches('sessionId', d.session_id)) {
      // Not a violation: a client may try; the documented answer is a close, then a fresh Identify.
      this.closeConnection(conn, VoiceClose.SessionNoLongerValid, 'session no longer valid');
      return;
    }
    if (seqAck > session.seq) {
      this.violation('seq_ack', `Resume seq_ack ${seqAck} is past the last seq sent (${session.seq})`, guild);
    }
    session.resumable = false;
    session.lastSeqAck = Math.max(session.lastSeqAck, Math.min(seqAck, session.seq));
    guild.current = conn;
    conn.record.session = session.number;
    conn.record.established = true;
    this.send(conn, { op: VoiceOp.Resumed, d: null });
    for (const m of session.sent) if (m.seq > seqAck) conn.ws.send(m.message);
    guild.notify();
  }

  private onSelectProtocol(conn: Connection, guild: VoiceGuild, d: Record<string, unknown>): void {
    const session = guild.session!;
    if (conn.record.kind !== 'identify') {
      this.violation('select-protocol', 'Select Protocol on a resumed connection', guild);
    }
    const data = (typeof d.data === 'object' && d.data !== null ? d.data : {}) as Record<string, unknown>;
    if (d.protocol !== 'udp') {
      this.violation('select-protocol', `protocol ${JSON.stringify(d.protocol)}, expected "udp"`, guild);
      this.closeConnection(conn, VoiceClose.UnknownProtocol, 'unknown protocol');
      return;
    }
    if (!this.modes.includes(data.mode as EncryptionMode)) {
      this.violation('select-protocol', `mode ${JSON.stringify(data.mode)} was not offered (${this.modes.join(', ')})`, guild);
      this.closeConnection(conn, VoiceClose.UnknownEncryptionMode, 'unknown encryption mode');
      return;
    }
    const port = data.port;
    if (typeof data.address !== 'string' || typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      this.violation('select-protocol', `address/port malformed: ${JSON.stringify(data)}`, guild);
      this.closeConnection(conn, VoiceClose.FailedToDecode, 'malformed select protocol');
      return;
    }
    const seen = session.discovered;
    if (!seen) {
      this.violation('select-protocol', 'Select Protocol before IP discovery', guild);
    } else if (seen.address !== data.address || seen.port !== port) {
      this.violation('select-protocol', `selected ${data.address}:${port} but IP discovery saw ${seen.address}:${seen.port}`, guild);
    }
    session.selected = { address: data.address, port };
    session.mode = data.mode as EncryptionMode;
    session.secretKey = crypto.randomBytes(32);
    this.send(conn, {
      op: VoiceOp.SessionDescription,
      d: { mode: session.mode, secret_key: [...session.secretKey], dave_protocol_version: 0 },
    });
    if (guild.otherUserIds.length > 0) this.sendNumbered(guild, { op: VoiceOp.ClientsConnect, d: { user_ids: guild.otherUserIds } });
    guild.notify();
  }

  private onSpeaking(guild: VoiceGuild, d: Record<string, unknown>): void {
    const session = guild.session!;
    const speaking = d.speaking;
    if (typeof speaking !== 'number' || !Number.isInteger(speaking) || speaking < 0 || speaking > 7) {
      this.violation('speaking', `speaking must be a bitmask 0..7, got ${JSON.stringify(speaking)}`, guild);
      return;
    }
    if (d.ssrc !== guild.ssrc) this.violation('speaking', `Speaking with ssrc ${JSON.stringify(d.ssrc)}, assigned ${guild.ssrc}`, guild);
    if (d.delay !== 0) this.violation('speaking', `Speaking delay ${JSON.stringify(d.delay)}: bots send 0`, guild);
    const at = performance.now();
    guild.speaking.push({ at, speaking, delay: d.delay, ssrc: d.ssrc, session: session.number });
    if (speaking !== 0 && !session.speakingOn) {
      session.speakingOn = true;
      session.speakingOnAt ??= at;
    }
    if (speaking === 0) session.speakingOn = false;
    guild.notify();
  }

  // ---- UDP: IP discovery and RTP ----

  private onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const at = performance.now();
    if (msg.length === KEEP_ALIVE_BYTES) {
      const guild = this.guildFromAddress(rinfo);
      if (guild) {
        guild.keepAlives++;
        if (this.echoKeepAlives && !guild.session?.udpMuted) {
          this.udp.send(msg, rinfo.port, rinfo.address);
          guild.keepAlivesEchoed++;
        }
        guild.notify();
      }
      return;
    }
    if (msg.length === IP_DISCOVERY_BYTES && msg.readUInt16BE(0) === 1) return this.onDiscovery(msg, rinfo);
    if (msg.length >= RTP_HEADER_BYTES && msg[0]! >> 6 === 2) return this.onRtp(msg, rinfo, at);
    this.violation('udp', `${msg.length}-byte datagram from ${rinfo.address}:${rinfo.port} is neither IP discovery, keep-alive nor RTP`);
  }

  private guildFromAddress(rinfo: dgram.RemoteInfo): VoiceGuild | undefined {
    for (const g of this.guilds.values()) {
      const s = g.session;
      const known = s?.selected ?? s?.discovered;
      if (known && known.address === rinfo.address && known.port === rinfo.port) return g;
    }
    return undefined;
  }

  private onDiscovery(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const length = msg.readUInt16BE(2);
    const ssrc = msg.readUInt32BE(4);
    const guild = this.bySsrc.get(ssrc);
    if (length !== 70) this.violation('ip-discovery', `request length field ${length}, expected 70`, guild);
    if (!guild || !guild.session || !guild.current?.record.established) {
      this.violation('ip-discovery', `request for ssrc ${ssrc}, which no ready session holds`, guild);
      return;
    }
    guild.session.discovered = { address: rinfo.address, port: rinfo.port };
    if (guild.session.udpMuted) return;
    const res = Buffer.alloc(IP_DISCOVERY_BYTES);
    res.writeUInt16BE(2, 0);
    res.writeUInt16BE(70, 2);
    res.writeUInt32BE(ssrc, 4);
    res.write(rinfo.address, 8, 63, 'utf8');
    res.writeUInt16BE(rinfo.port, 72);
    this.udp.send(res, rinfo.port, rinfo.address);
    guild.notify();
  }

  private onRtp(msg: Buffer, rinfo: dgram.RemoteInfo, at: number): void {
    const ssrc = msg.readUInt32BE(8);
    const guild = this.bySsrc.get(ssrc);
    if (!guild) {
      this.violation('rtp-header', `RTP with ssrc ${ssrc}, which this server never assigned`);
      return;
    }
    const session = guild.session;
    if (!session?.secretKey || !session.mode || !session.selected) {
      this.violation('rtp-order', 'RTP before Session Description', guild);
      return;
    }
    if (rinfo.address !== session.selected.address || rinfo.port !== session.selected.port) {
      this.violation('rtp-source', `RTP from ${rinfo.address}:${rinfo.port}, selected ${session.selected.address}:${session.selected.port}`, guild);
    }
    const padding = (msg[0]! & 0x20) !== 0;
    const extension = (msg[0]! & 0x10) !== 0;
    const csrcCount = msg[0]! & 0x0f;
    const marker = (msg[1]! & 0x80) !== 0;
    const payloadType = msg[1]! & 0x7f;
    const seq = msg.readUInt16BE(2);
    const timestamp = msg.readUInt32BE(4);
    if (payloadType !== DISCORD_OPUS_PAYLOAD_TYPE) this.violation('rtp-header', `payload type ${payloadType}, expected 0x78`, guild);
    if (padding) this.violation('rtp-header', 'RTP padding bit set', guild);
    // rtpsize: CSRCs and the extension's 4-byte preamble stay in the clear; its body is encrypted.
    const headerBytes = RTP_HEADER_BYTES + 4 * csrcCount + (extension ? 4 : 0);
    if (msg.length < headerBytes + TAG_BYTES + NONCE_BYTES) {
      this.violation('rtp-length', `${msg.length}-byte RTP packet is too short for its header, tag and nonce`, guild);
      return;
    }
    const nonce = msg.readUInt32BE(msg.length - NONCE_BYTES);
    let plain: Buffer;
    try {
      plain = openPacket(session.mode, session.secretKey, msg, headerBytes);
    } catch {
      this.violation('decrypt', `packet seq ${seq} nonce ${nonce} did not decrypt with ${session.mode}`, guild);
      return;
    }
    if (session.lastNonce !== undefined && !(nonce > session.lastNonce || (session.lastNonce === 0xffffffff && nonce === 0))) {
      this.violation('nonce', `nonce ${nonce} after ${session.lastNonce}: a nonce must never repeat`, guild);
    }
    session.lastNonce = nonce;
    let opus = plain;
    if (extension) {
      const words = msg.readUInt16BE(headerBytes - 2);
      opus = plain.subarray(4 * words);
    }
    if (session.speakingOnAt === undefined && !session.speakingCheckPending) {
      session.speakingCheckPending = true;
      setTimeout(() => {
        if (session.speakingOnAt === undefined || session.speakingOnAt > at + this.speakingGraceMs) {
          this.violation('speaking', `RTP at ${at.toFixed(1)} ms before any Speaking (docs: send Speaking before voice data)`, guild);
        }
      }, this.speakingGraceMs).unref();
    }
    const log = session.received;
    if (log.count > 0) {
      const lastSeq = log.seq(log.count - 1);
      const seqStep = (seq - lastSeq) & 0xffff;
      const tsStep = (timestamp - log.timestamp(log.count - 1)) >>> 0;
      if (seqStep !== 1 || tsStep !== FRAME_SAMPLES) {
        this.violation('continuity', `seq ${lastSeq}→${seq}, timestamp +${tsStep} (expected +1, +${FRAME_SAMPLES})`, guild);
      }
    }
    let pcm: Buffer | undefined;
    if (this.decode) {
      session.decoder ??= new OpusEncoder(SAMPLE_RATE, CHANNELS);
      try {
        pcm = session.decoder.decode(opus);
      } catch (err) {
        this.violation('opus', `packet seq ${seq} is not decodable Opus: ${(err as Error).message}`, guild);
      }
    }
    const silence = opus.equals(OPUS_SILENCE);
    log.push(at, seq, timestamp, silence);
    if (this.keepPackets) guild.packets.push({ at, seq, timestamp, ssrc, marker, nonce, opus, pcm, silence, session: session.number });
    guild.notify();
  }
}

/**
 * The nonce of the packet being opened: its 4-byte counter, then zeros. createDecipheriv copies
 * its IV, so one buffer of each size serves every packet.
 */
const gcmIv = Buffer.alloc(12);
const xchachaNonce = Buffer.alloc(24);

/**
 * Opens an rtpsize packet: the header's first `headerBytes` are the AAD, then ciphertext, 16-byte
 * tag, 4-byte nonce counter. Throws when the tag does not verify.
 */
function openPacket(mode: EncryptionMode, key: Buffer, msg: Buffer, headerBytes: number): Buffer {
  const aad = msg.subarray(0, headerBytes);
  const tagAt = msg.length - NONCE_BYTES - TAG_BYTES;
  const ciphertext = msg.subarray(headerBytes, tagAt);
  const tag = msg.subarray(tagAt, msg.length - NONCE_BYTES);
  if (mode === AES256_GCM_RTPSIZE) {
    msg.copy(gcmIv, 0, msg.length - NONCE_BYTES);
    const decipher = crypto.createDecipheriv('aes-256-gcm', key, gcmIv, { authTagLength: TAG_BYTES });
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    return updateAndVerify(decipher, ciphertext);
  }
  msg.copy(xchachaNonce, 0, msg.length - NONCE_BYTES);
  return xchacha20Poly1305Open(key, xchachaNonce, aad, ciphertext, tag);
}

/**
 * update, then final, which verifies the tag (and throws if it does not). These AEADs give all
 * the plaintext from update and nothing from final, so nothing is concatenated per packet.
 */
function updateAndVerify(decipher: crypto.DecipherGCM | crypto.DecipherChaCha20Poly1305, ciphertext: Buffer): Buffer {
  const plain = decipher.update(ciphertext);
  const rest = decipher.final();
  return rest.length === 0 ? plain : Buffer.concat([plain, rest]);
}

/**
 * XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha §2.3): ChaCha20-Poly1305 (RFC 8439, in node:crypto)
 * under the subkey HChaCha20(key, nonce[0..16]) with the nonce 0x00000000 ‖ nonce[16..24].
 */
export function xchacha20Poly1305Open(key: Buffer, nonce: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer): Buffer {
  const subkey = hchacha20(key, nonce.subarray(0, 16));
  const iv = Buffer.concat([Buffer.alloc(4), nonce.subarray(16, 24)]);
  const decipher = crypto.createDecipheriv('chacha20-poly1305', subkey, iv, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad, { plaintextLength: ciphertext.length });
  decipher.setAuthTag(tag);
  return updateAndVerify(decipher, ciphertext);
}

/** HChaCha20 (draft-irtf-cfrg-xchacha §2.2): 20 ChaCha rounds over key and 16-byte nonce, words 0–3 and 12–15 out. */
export function hchacha20(key: Uint8Array, nonce16: Uint8Array): Buffer {
  if (key.length !== 32 || nonce16.length !== 16) throw new Error('hchacha20 needs a 32-byte key and a 16-byte nonce');
  const k = Buffer.from(key);
  const n = Buffer.from(nonce16);
  const s = new Uint32Array(16);
  s[0] = 0x61707865;
  s[1] = 0x3320646e;
  s[2] = 0x79622d32;
  s[3] = 0x6b206574;
  for (let i = 0; i < 8; i++) s[4 + i] = k.readUInt32LE(4 * i);
  for (let i = 0; i < 4; i++) s[12 + i] = n.readUInt32LE(4 * i);
  const rotl = (v: number, c: number) => ((v << c) | (v >>> (32 - c))) >>> 0;
  const quarter = (a: number, b: number, c: number, d: number) => {
    s[a] = (s[a]! + s[b]!) >>> 0;
    s[d] = rotl(s[d]! ^ s[a]!, 16);
    s[c] = (s[c]! + s[d]!) >>> 0;
    s[b] = rotl(s[b]! ^ s[c]!, 12);
    s[a] = (s[a]! + s[b]!) >>> 0;
    s[d] = rotl(s[d]! ^ s[a]!, 8);
    s[c] = (s[c]! + s[d]!) >>> 0;
    s[b] = rotl(s[b]! ^ s[c]!, 7);
  };
  for (let round = 0; round < 10; round++) {
    quarter(0, 4, 8, 12);
    quarter(1, 5, 9, 13);
    quarter(2, 6, 10, 14);
    quarter(3, 7, 11, 15);
    quarter(0, 5, 10, 15);
    quarter(1, 6, 11, 12);
    quarter(2, 7, 8, 13);
    quarter(3, 4, 9, 14);
  }
  const out = Buffer.alloc(32);
  for (let i = 0; i < 4; i++) {
    out.writeUInt32LE(s[i]!, 4 * i);
    out.writeUInt32LE(s[12 + i]!, 16 + 4 * i);
  }
  return out;
}

/** A voice server with one guild on it: the usual test set-up. `stop()` stops the server. */
export async function startDiscordVoiceServer(creds: GuildCredentials, options: VoiceServerOptions = {}): Promise<VoiceGuild> {
  const server = await VoiceServer.start(options);
  return server.guild(creds);
}
