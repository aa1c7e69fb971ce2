/**
 * A minimal WebSocket client (RFC 6455) for load listeners: thousands of them share a load
 * generator's core with the gateway they measure, so each frame must cost as little as possible.
 * It reads server frames straight off the TCP socket: a binary message inside one read is handed
 * out in place (buffer, start, end: no copy, no allocation); only a message split across reads
 * is gathered into a scratch buffer. It answers pings, and closes on a close frame.
 *
 * Limits, on purpose: no extensions (the gateway disables permessage-deflate), no fragmented
 * data messages (the gateway sends none), client frames only for text and control.
 */
import crypto from 'node:crypto';
import net from 'node:net';

export interface WsHandlers {
  binary(buf: Buffer, start: number, end: number): void;
  text(text: string): void;
  close(reason: string): void;
}

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const MAX_MESSAGE = 1 << 20;

export class WsClient {
  readonly socket: net.Socket;
  private handshake = true;
  private head = '';
  private key = crypto.randomBytes(16).toString('base64');
  private scratch: Buffer | undefined;
  private scratchUsed = 0;
  private closed = false;
  /** Resolves when the upgrade is done; rejects if it fails. */
  readonly open: Promise<void>;
  private resolveOpen!: () => void;
  private rejectOpen!: (err: Error) => void;

  constructor(host: string, port: number, pathAndQuery: string, private readonly handlers: WsHandlers) {
    this.open = new Promise((resolve, reject) => {
      this.resolveOpen = resolve;
      this.rejectOpen = reject;
    });
    this.socket = net.connect({ host, port });
    this.socket.setNoDelay(true);
    this.socket.on('connect', () => {
      this.socket.write(
        `GET ${pathAndQuery} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${this.key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    this.socket.on('data', (chunk: Buffer) => (this.handshake ? this.onHandshake(chunk) : this.onData(chunk)));
    this.socket.on('error', (err) => this.finish(`socket error: ${err.message}`));
    this.socket.on('close', () => this.finish('socket closed'));
  }

  /** Stops reading (the kernel buffers fill, then the server sees backpressure). */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  sendText(text: string): void {
    this.sendFrame(0x1, Buffer.from(text, 'utf8'));
  }

  close(): void {
    if (this.closed) return;
    this.sendFrame(0x8, Buffer.from([0x03, 0xe8]));
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  private finish(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.rejectOpen(new Error(reason));
    this.handlers.close(reason);
  }

  private onHandshake(chunk: Buffer): void {
    const text = this.head + chunk.toString('latin1');
    const end = text.indexOf('\r\n\r\n');
    if (end < 0) {
      this.head = text;
      return;
    }
    this.handshake = false;
    const lines = text.slice(0, end).split('\r\n');
    if (!/^HTTP\/1\.1 101/.test(lines[0] ?? '')) {
      const body = text.slice(end + 4);
      this.socket.destroy();
      this.finish(`upgrade refused: ${lines[0]} ${body.slice(0, 200)}`);
      return;
    }
    const accept = lines.find((l) => l.toLowerCase().startsWith('sec-websocket-accept:'))?.slice(21).trim();
    const expected = crypto.createHash('sha1').update(this.key + GUID).digest('base64');
    if (accept !== expected) {
      this.socket.destroy();
      this.finish('upgrade answered with a wrong Sec-WebSocket-Accept');
      return;
    }
    this.resolveOpen();
    const rest = Buffer.from(text.slice(end + 4), 'latin1');
    if (rest.length > 0) this.onData(rest);
  }

  private onData(chunk: Buffer): void {
    let buf = chunk;
    let off = 0;
    if (this.scratchUsed > 0) {
      // Finish the pending message first (rare: a message split across reads).
      for (let need = this.pendingNeed(); need > 0; need = this.pendingNeed()) {
        if (off >= chunk.length) return;
        const take = Math.min(need, chunk.length - off);
        this.ensureScratch(this.scratchUsed + take);
        if (this.closed) return;
        chunk.copy(this.scratch!, this.scratchUsed, off, off + take);
        this.scratchUsed += take;
        off += take;
      }
      const whole = this.scratch!.subarray(0, this.scratchUsed);
      this.scratchUsed = 0;
      const used = this.parseOne(whole, 0);
      if (used < 0) return; // cannot happen: pendingNeed said it is whole
      if (off >= chunk.length) return;
      buf = chunk;
    }
    while (off < buf.length) {
      const used = this.parseOne(buf, off);
      if (used < 0) {
        this.ensureScratch(buf.length - off);
        buf.copy(this.scratch!, 0, off);
        this.scratchUsed = buf.length - off;
        return;
      }
      off += used;
    }
  }

  /** Bytes still missing for the message in scratch (0: whole). */
  private pendingNeed(): number {
    const s = this.scratch!;
    const have = this.scratchUsed;
    if (have < 2) return 2 - have;
    const len7 = s[1]! & 0x7f;
    const headerBytes = len7 === 126 ? 4 : len7 === 127 ? 10 : 2;
    if (have < headerBytes) return headerBytes - have;
    const len = len7 === 126 ? s.readUInt16BE(2) : len7 === 127 ? Number(s.readBigUInt64BE(2)) : len7;
    return Math.max(0, headerBytes + len - have);
  }

  private ensureScratch(bytes: number): void {
    if (bytes > MAX_MESSAGE + 14) {
      this.socket.destroy();
      this.finish('message too large');
      return;
    }
    if (!this.scratch || this.scratch.length < bytes) {
      const bigger = Buffer.allocUnsafe(Math.max(bytes, 4096, (this.scratch?.length ?? 0) * 2));
      if (this.scratch && this.scratchUsed > 0) this.scratch.copy(bigger, 0, 0, this.scratchUsed);
      this.scratch = bigger;
    }
  }

  /** Parses one message at `off`; returns bytes used, or -1 if it is not all there. */
  private parseOne(buf: Buffer, off: number): number {
    const avail = buf.length - off;
    if (avail < 2) return -1;
    const b0 = buf[off]!;
    const b1 = buf[off + 1]!;
    const len7 = b1 & 0x7f;
    let header = 2;
    let len = len7;
    if (len7 === 126) {
      if (avail < 4) return -1;
      len = buf.readUInt16BE(off + 2);
      header = 4;
    } else if (len7 === 127) {
      if (avail < 10) return -1;
      len = Number(buf.readBigUInt64BE(off + 2));
      header = 10;
    }
    if (b1 & 0x80) {
      // A server must not mask its frames (RFC 6455 §5.1).
      this.socket.destroy();
      this.finish('the server sent a masked frame');
      return buf.length - off;
    }
    if (avail < header + len) return -1;
    const start = off + header;
    const end = start + len;
    switch (b0 & 0x0f) {
      case 0x2:
        this.handlers.binary(buf, start, end);
        break;
      case 0x1:
        this.handlers.text(buf.toString('utf8', start, end));
        break;
      case 0x9:
        this.sendFrame(0xa, buf.subarray(start, end));
        break;
      case 0x8:
        this.socket.end();
        this.finish('closed by the server');
        break;
      default:
        break;
    }
    return header + len;
  }

  private sendFrame(opcode: number, payload: Buffer): void {
    if (this.socket.destroyed) return;
    const len = payload.length;
    const header = len < 126 ? 2 : 4;
    const out = Buffer.allocUnsafe(header + 4 + len);
    out[0] = 0x80 | opcode;
    if (len < 126) out[1] = 0x80 | len;
    else {
      out[1] = 0x80 | 126;
      out.writeUInt16BE(len, 2);
    }
    const mask = crypto.randomBytes(4);
    mask.copy(out, header);
    for (let i = 0; i < len; i++) out[header + 4 + i] = payload[i]! ^ mask[i & 3]!;
    this.socket.write(out);
  }
}
