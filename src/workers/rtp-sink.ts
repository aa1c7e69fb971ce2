/**
 * RTP senders of one session, owned by its worker thread so their cadence never depends on the
 * gateway's main thread. One UDP socket connected to each target (and one unconnected per
 * session and address family for the packets before that connect completes); one RTP stream per
 * target: its own SSRC and random seq and timestamp offsets (RFC 3550 §5.1), added to the
 * session's own frame seq and 48 kHz media timestamp. Those advance only when a frame is sent,
 * so the stream is continuous across pause/resume; and since the gateway hands a target's stream
 * back when the session's next track gets a new worker slot, across tracks too.
 */
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { FRAME_MS } from '../shared/audio.js';
import { RTP_HEADER_BYTES, writeRtpHeader } from '../shared/rtp.js';
import type { PlayerHandOff, RtpSinkInfo, RtpStream, RtpTarget } from '../shared/worker-messages.js';

/**
 * A packet sent more than this long after the previous one starts a talkspurt: the marker bit
 * tells the receiver it may re-anchor its playout there (RFC 3550 §5.1), e.g. after a pause,
 * whose timestamps run on without a jump.
 */
const TALKSPURT_GAP_MS = 3 * FRAME_MS;

/**
 * The socket type for a target's address (an IP address: the gateway checks it). Not
 * net.isIPv6, whose first call costs a fresh thread ~8 ms: a session that moves to a new
 * thread would be that much late with its next frame.
 */
function family(host: string): 'udp4' | 'udp6' {
  return host.includes(':') ? 'udp6' : 'udp4';
}

export function newRtpStream(): RtpStream {
  return { ssrc: randomInt(1, 0xffffffff), seqOffset: randomInt(0, 0x10000), timestampOffset: randomInt(0, 0xffffffff) };
}

class RtpSink {
  packets = 0;
  lastSentAt = -Infinity;
  /**
   * A socket connected to the target, once its connect completes: a send on it skips the
   * address lookup (and its nextTick) that every send to an address costs.
   */
  private connected: dgram.Socket | undefined;
  private readonly own: dgram.Socket;

  constructor(
    readonly host: string,
    readonly port: number,
    public stream: RtpStream,
    /** The session's unconnected socket, for the packets before the connect completes. */
    private readonly fallback: () => dgram.Socket,
    onError: (err: Error) => void,
  ) {
    this.own = dgram.createSocket(family(host));
    this.own.on('error', onError);
    this.own.connect(port, host, () => {
      this.connected = this.own;
    });
  }

  get isConnected(): boolean {
    return this.connected !== undefined;
  }

  send(payload: Uint8Array, seq: number, timestamp: number, now: number): void {
    // The payload is a view of a buffer the player reuses, and dgram may send later: copy it.
    const packet = Buffer.allocUnsafe(RTP_HEADER_BYTES + payload.length);
    writeRtpHeader(
      packet,
      (seq + this.stream.seqOffset) & 0xffff,
      (timestamp + this.stream.timestampOffset) >>> 0,
      this.stream.ssrc,
      now - this.lastSentAt > TALKSPURT_GAP_MS,
    );
    packet.set(payload, RTP_HEADER_BYTES);
    if (this.connected) this.connected.send(packet);
    else this.fallback().send(packet, this.port, this.host);
    this.lastSentAt = now;
    this.packets++;
  }

  close(): void {
    this.connected = undefined;
    this.own.close();
  }

  info(): RtpSinkInfo {
    return { host: this.host, port: this.port, ssrc: this.stream.ssrc, packets: this.packets, stream: { ...this.stream } };
  }
}

export class RtpSinks {
  private readonly sinks: RtpSink[] = [];
  private readonly sockets = new Map<'udp4' | 'udp6', dgram.Socket>();

  constructor(
    private readonly onError: (err: Error) => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get count(): number {
    return this.sinks.length;
  }

  /** Every target's own socket has connected (so no send needs the event loop). */
  get connected(): boolean {
    // Asked every wake of a sleeping thread: a plain loop, no callback.
    for (const sink of this.sinks) if (!sink.isConnected) return false;
    return true;
  }

  /** Adds a target (with its stream, if it has one already); adding one twice changes nothing. */
  add(target: RtpTarget): RtpSinkInfo {
    return this.sinkFor(target).info();
  }

  remove(target: RtpTarget): boolean {
    const i = this.sinks.findIndex((s) => s.host === target.host && s.port === target.port);
    if (i < 0) return false;
    this.sinks.splice(i, 1)[0]!.close();
    return true;
  }

  /** Sends one frame to every target: `seq` and `timestamp` are the session's own for this frame. */
  send(payload: Uint8Array, seq: number, timestamp: number): void {
    if (this.sinks.length === 0) return;
    const now = this.now();
    for (const sink of this.sinks) sink.send(payload, seq, timestamp, now);
  }

  info(): RtpSinkInfo[] {
    return this.sinks.map((s) => s.info());
  }

  /**
   * A target as another thread's player left it (a hand-off): its stream, and when it last sent
   * (on this clock), so its next packet is no talkspurt. Added if it is not here already.
   */
  adopt(target: RtpTarget, stream: RtpStream, lastSentAt: number): void {
    const sink = this.sinkFor(target);
    sink.stream = { ...stream };
    sink.lastSentAt = lastSentAt;
  }

  /** The targets with their streams, and when each last sent (plus `origin`: ms since the epoch), for another thread. */
  handOff(origin: number): PlayerHandOff['rtp'] {
    return this.sinks.map((s) => ({ target: { host: s.host, port: s.port }, stream: { ...s.stream }, lastSentAt: origin + s.lastSentAt }));
  }

  close(): void {
    for (const sink of this.sinks.splice(0)) sink.close();
    for (const socket of this.sockets.values()) socket.close();
    this.sockets.clear();
  }

  /** The sink of `target`, made (with its stream, if it has one already) if there is none. */
  private sinkFor(target: RtpTarget): RtpSink {
    const existing = this.sinks.find((s) => s.host === target.host && s.port === target.port);
    if (existing) return existing;
    const stream = target.stream ? { ...target.stream } : newRtpStream();
    const sink = new RtpSink(target.host, target.port, stream, () => this.socket(family(target.host)), this.onError);
    this.sinks.push(sink);
    return sink;
  }

  private socket(type: 'udp4' | 'udp6'): dgram.Socket {
    let socket = this.sockets.get(type);
    if (!socket) {
      socket = dgram.createSocket(type);
      // A send can fail (no route, a receiver gone that the kernel heard of): the stream goes on.
      socket.on('error', this.onError);
      this.sockets.set(type, socket);
    }
    return socket;
  }
}
