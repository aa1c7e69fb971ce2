/**
 * A UDP receiver for RTP tests: binds a loopback port, keeps every datagram with its arrival
 * time, and says what a receiver would hear about it — sequence gaps, timestamp steps, SSRCs,
 * inter-arrival times. Nothing here sends anything anywhere.
 *
 *   const rx = await RtpReceiver.open('udp4');
 *   await post(`/sessions/a/rtp`, { host: rx.host, port: rx.port });
 *   await rx.waitForPackets(100);
 *   cadence(rx.packets)  // { p50, p99, max, mean, count }
 *   rx.close();
 */
import dgram from 'node:dgram';
import fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parseRtpPacket, type RtpPacket } from '../../src/shared/rtp.js';

export interface Received extends RtpPacket {
  /** performance.now() in the test process when the datagram arrived. */
  at: number;
}

export class RtpReceiver {
  readonly packets: Received[] = [];
  /** Datagrams that were not RTP version 2. */
  notRtp = 0;
  private waiters = new Set<() => void>();

  private constructor(
    private readonly socket: dgram.Socket,
    readonly host: string,
    readonly port: number,
  ) {
    socket.on('message', (msg) => {
      const at = performance.now();
      const packet = parseRtpPacket(msg);
      if (!packet) {
        this.notRtp++;
        return;
      }
      // The parsed payload is a view of msg, which node does not reuse: keeping it is safe.
      this.packets.push({ ...packet, at });
      for (const w of this.waiters) w();
    });
  }

  /** Binds an ephemeral port on 127.0.0.1 (udp4) or ::1 (udp6), or on `port` when given. */
  static async open(type: 'udp4' | 'udp6' = 'udp4', port = 0): Promise<RtpReceiver> {
    const host = type === 'udp4' ? '127.0.0.1' : '::1';
    const socket = dgram.createSocket(type);
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, host, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    return new RtpReceiver(socket, host, socket.address().port);
  }

  /** Resolves once `count` packets (in all) have arrived; rejects after `timeoutMs`. */
  waitForPackets(count: number, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.packets.length < count) return false;
        clearTimeout(timer);
        this.waiters.delete(onPacket);
        resolve();
        return true;
      };
      const onPacket = () => void check();
      const timer = setTimeout(() => {
        this.waiters.delete(onPacket);
        reject(new Error(`${this.packets.length} of ${count} RTP packets arrived at ${this.host}:${this.port} within ${timeoutMs} ms`));
      }, timeoutMs);
      if (!check()) this.waiters.add(onPacket);
    });
  }

  close(): void {
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }
}

export interface Cadence {
  count: number;
  p50: number;
  p99: number;
  max: number;
  mean: number;
}

/** Inter-arrival times of consecutive packets, in ms. */
export function cadence(packets: readonly Received[]): Cadence {
  const gaps: number[] = [];
  for (let i = 1; i < packets.length; i++) gaps.push(packets[i]!.at - packets[i - 1]!.at);
  if (gaps.length === 0) return { count: 0, p50: NaN, p99: NaN, max: NaN, mean: NaN };
  const sorted = [...gaps].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
  return {
    count: gaps.length,
    p50: at(0.5),
    p99: at(0.99),
    max: sorted[sorted.length - 1]!,
    mean: (packets[packets.length - 1]!.at - packets[0]!.at) / gaps.length,
  };
}

export function formatCadence(c: Cadence): string {
  const f = (x: number) => x.toFixed(2);
  return `${c.count} intervals: p50 ${f(c.p50)} ms, p99 ${f(c.p99)} ms, max ${f(c.max)} ms, mean ${f(c.mean)} ms`;
}

export interface Continuity {
  /** Places where seq did not go up by exactly 1 (mod 2^16): [index, step]. */
  seqBreaks: [number, number][];
  /** Places where the timestamp did not go up by exactly `samples` (mod 2^32): [index, step]. */
  timestampBreaks: [number, number][];
  ssrcs: number[];
  payloadTypes: number[];
}

/** What a receiver checks of one stream: +1 seq, +`samples` timestamp, one SSRC, one payload type. */
export function continuity(packets: readonly Received[], samples: number): Continuity {
  const seqBreaks: [number, number][] = [];
  const timestampBreaks: [number, number][] = [];
  for (let i = 1; i < packets.length; i++) {
    const seqStep = (packets[i]!.seq - packets[i - 1]!.seq) & 0xffff;
    if (seqStep !== 1) seqBreaks.push([i, seqStep]);
    const tsStep = (packets[i]!.timestamp - packets[i - 1]!.timestamp) >>> 0;
    if (tsStep !== samples) timestampBreaks.push([i, tsStep]);
  }
  return {
    seqBreaks,
    timestampBreaks,
    ssrcs: [...new Set(packets.map((p) => p.ssrc))],
    payloadTypes: [...new Set(packets.map((p) => p.payloadType))],
  };
}

/**
 * UDP sockets (v4 and v6) process `pid` holds now, from /proc (Linux). Worker threads share
 * their process's descriptors, so this counts every thread's sockets.
 */
export function udpSocketsOf(pid: number): number {
  const inodes = new Set<string>();
  for (const file of ['udp', 'udp6']) {
    let table: string;
    try {
      table = fs.readFileSync(`/proc/${pid}/net/${file}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of table.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // sl local rem st tx:rx tr:when retrnsmt uid timeout inode …
      if (fields.length > 9) inodes.add(fields[9]!);
    }
  }
  let count = 0;
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let link: string;
    try {
      link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m && inodes.has(m[1]!)) count++;
  }
  return count;
}

/** Samples of one WAV file's `data` chunk (s16le), with its format. */
export function readWav(file: string): { sampleRate: number; channels: number; pcm: Buffer } {
  const buf = fs.readFileSync(file);
  if (buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE') throw new Error(`${file} is not a WAV file`);
  let sampleRate = 0;
  let channels = 0;
  let bits = 0;
  for (let off = 12; off + 8 <= buf.length; ) {
    const id = buf.toString('ascii', off, off + 4);
    const size = buf.readUInt32LE(off + 4);
    const body = off + 8;
    if (id === 'fmt ') {
      channels = buf.readUInt16LE(body + 2);
      sampleRate = buf.readUInt32LE(body + 4);
      bits = buf.readUInt16LE(body + 14);
    } else if (id === 'data') {
      if (bits !== 16) throw new Error(`${file}: ${bits}-bit samples, expected 16`);
      // A writer killed before it patched the header leaves size 0 or too large: take what is there.
      const end = size === 0 || body + size > buf.length ? buf.length : body + size;
      return { sampleRate, channels, pcm: buf.subarray(body, end) };
    }
    off = body + size + (size & 1);
  }
  throw new Error(`${file} has no data chunk`);
}
