/**
 * RTP senders of one session, owned by its worker thread so their cadence never depends on the
 * gateway's main thread. One UDP socket per session (per address family); one SSRC, sequence
 * and timestamp offset per target, sequence and timestamp continuous across pause/resume.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import { RTP_HEADER_BYTES, writeRtpHeader } from '../shared/rtp.js';
import type { RtpSinkInfo, RtpTarget } from '../shared/worker-messages.js';

class RtpSink {
  readonly ssrc = randomInt(1, 0xffffffff);
  private seq = randomInt(0, 0x10000);
  private readonly timestampOffset = randomInt(0, 0xffffffff);
  packets = 0;

  constructor(
    readonly host: string,
    readonly port: number,
    private readonly socket: dgram.Socket,
  ) {}

  send(payload: Uint8Array, timestamp: number): void {
    const packet = Buffer.allocUnsafe(RTP_HEADER_BYTES + payload.length);
    writeRtpHeader(packet, this.seq, (timestamp + this.timestampOffset) >>> 0, this.ssrc);
    packet.set(payload, RTP_HEADER_BYTES);
    this.socket.send(packet, this.port, this.host);
    this.seq = (this.seq + 1) & 0xffff;
    this.packets++;
  }

  info(): RtpSinkInfo {
    return { host: this.host, port: this.port, ssrc: this.ssrc, packets: this.packets };
  }
}

export class RtpSinks {
  private readonly sinks: RtpSink[] = [];
  private readonly sockets = new Map<'udp4' | 'udp6', dgram.Socket>();

  constructor(private readonly onError: (err: Error) => void) {}

  get count(): number {
    return this.sinks.length;
  }

  add(target: RtpTarget): RtpSinkInfo {
    const existing = this.sinks.find((s) => s.host === target.host && s.port === target.port);
    if (existing) return existing.info();
    const sink = new RtpSink(target.host, target.port, this.socket(net.isIPv6(target.host) ? 'udp6' : 'udp4'));
    this.sinks.push(sink);
    return sink.info();
  }

  remove(target: RtpTarget): boolean {
    const i = this.sinks.findIndex((s) => s.host === target.host && s.port === target.port);
    if (i < 0) return false;
    this.sinks.splice(i, 1);
    return true;
  }

  send(payload: Uint8Array, timestamp: number): void {
    for (const sink of this.sinks) sink.send(payload, timestamp);
  }

  info(): RtpSinkInfo[] {
    return this.sinks.map((s) => s.info());
  }

  close(): void {
    this.sinks.length = 0;
    for (const socket of this.sockets.values()) socket.close();
    this.sockets.clear();
  }

  private socket(type: 'udp4' | 'udp6'): dgram.Socket {
    let socket = this.sockets.get(type);
    if (!socket) {
      socket = dgram.createSocket(type);
      // A receiver that goes away makes the kernel report ICMP errors: count them, keep sending.
      socket.on('error', this.onError);
      this.sockets.set(type, socket);
    }
    return socket;
  }
}
