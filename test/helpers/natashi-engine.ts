/**
 * natashi (thewind121212/natashi), the system chorus rebuilds, as its peers see it; a strict
 * stand-in for tests of chorus against it. Its dialect, exactly:
 *
 * - Socket: the newest client gets everything. An older connection is left open and silent
 *   (natashi's SetConnection replaces it); with no client, frames and events are dropped.
 * - No `hello`, no credit: each session is paced by ffmpeg's `-re`.
 * - Frame: u32be length · 24-byte id (space-padded, cut to 24) · one pipe read of ffmpeg's
 *   stdout: up to 4096 bytes of an Ogg Opus stream (`-f ogg -page_duration 20000`, OpusHead and
 *   OpusTags pages first) for `opus` and `web`, up to 16384 bytes of s16le for `pcm`. Pages are cut
 *   wherever a read ends.
 * - Events built by string formatting, nothing escaped: {"type":"…","session_id":"…"} or with
 *   "message":"…"; `ready` when ffmpeg started (no duration), `finished` when its output ends,
 *   `error` when the source is refused.
 * - HTTP: POST /session/:id/play {url, format, start_at, duration} answers 200 at once;
 *   stop (the session is forgotten: 404 after), pause (SIGSTOP), resume; GET /session/:id/status
 *   answers {"session_id","status","bytes_sent","url"} (`status`, not `state`), 404 with
 *   "not_found" for an unknown id.
 *
 * Sources: `tone:<hz>[?seconds=n]` (a lavfi sine) and `silent:` (ready, then nothing: frames come
 * from inject()). Anything else fails "extraction" with a message that quotes the URL.
 *
 * NatashiReader reads a socket as natashi's Node layer does: events end where a count of `{`
 * minus `}` bytes returns to zero.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { resolveFfmpeg } from '../../src/shared/ffmpeg.js';
import { tempDir } from './chorus-process.js';

type State = 'extracting' | 'streaming' | 'paused' | 'stopped' | 'error';

interface Play {
  id: string;
  url: string;
  state: State;
  bytesSent: number;
  ffmpeg?: ChildProcessByStdio<null, Readable, Readable>;
}

export interface NatashiEngine {
  url: string;
  socketPath: string;
  /** Clients that have connected to the socket. */
  readonly connections: number;
  /** Writes one frame for `id` onto the current connection, as a pipe read would. */
  inject(id: string, payload: Uint8Array): void;
  /** Stops listening and closes the current client (the socket file goes). */
  closeSocket(): Promise<void>;
  /** Listens again on the same path. */
  openSocket(): Promise<void>;
  stop(): Promise<void>;
}

export async function startNatashiEngine(): Promise<NatashiEngine> {
  const ffmpeg = resolveFfmpeg().path;
  const dir = tempDir('natashi-');
  const socketPath = path.join(dir, 'music-playground.sock');
  const plays = new Map<string, Play>();
  let conn: net.Socket | undefined;
  let connections = 0;
  const clients = new Set<net.Socket>();

  const write = (bytes: Buffer): boolean => {
    if (!conn || conn.destroyed) return false;
    conn.write(bytes);
    return true;
  };
  const frame = (id: string, chunk: Uint8Array): boolean => {
    const padded = id.slice(0, 24).padEnd(24, ' ');
    const packet = Buffer.alloc(4 + 24 + chunk.length);
    packet.writeUInt32BE(24 + chunk.length, 0);
    packet.write(padded, 4, 'utf8');
    packet.set(chunk, 28);
    return write(packet);
  };
  const sendEvent = (id: string, type: string, message = ''): void => {
    write(
      Buffer.from(
        message !== ''
          ? `{"type":"${type}","session_id":"${id}","message":"${message}"}\n`
          : `{"type":"${type}","session_id":"${id}"}\n`,
      ),
    );
  };

  const startPlayback = (id: string, url: string, format: string, startAt: number): void => {
    const old = plays.get(id);
    if (old) end(old);
    const play: Play = { id, url, state: 'extracting', bytesSent: 0 };
    plays.set(id, play);
    const tone = /^tone:(\d+(?:\.\d+)?)(?:\?seconds=(\d+(?:\.\d+)?))?$/.exec(url);
    if (url === 'silent:') {
      play.state = 'streaming';
      sendEvent(id, 'ready');
      return;
    }
    if (!tone) {
      play.state = 'error';
      sendEvent(id, 'error', `extraction failed: yt-dlp: "${url}" is not a valid URL`);
      return;
    }
    const args = ['-re'];
    if (startAt > 0) args.push('-ss', startAt.toFixed(3));
    args.push('-f', 'lavfi', '-i', `sine=frequency=${tone[1]}:sample_rate=48000:duration=${tone[2] ?? 600}`, '-ar', '48000', '-ac', '2', '-loglevel', 'warning');
    if (format === 'pcm') args.push('-f', 's16le', 'pipe:1');
    else {
      args.push('-c:a', 'libopus', '-b:a', format === 'web' ? '256000' : '128000', '-vbr', 'on', '-compression_level', '10', '-frame_duration', '20', '-application', 'audio');
      args.push('-f', 'ogg', '-page_duration', '20000', '-flush_packets', '1', 'pipe:1');
    }
    const readSize = format === 'pcm' ? 16384 : 4096;
    const child = spawn(ffmpeg, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    play.ffmpeg = child;
    play.state = 'streaming';
    sendEvent(id, 'ready');
    child.stderr.resume();
    child.stdout.on('data', (chunk: Buffer) => {
      for (let i = 0; i < chunk.length; i += readSize) {
        const piece = chunk.subarray(i, i + readSize);
        if (frame(id, piece)) play.bytesSent += piece.length;
      }
    });
    child.stdout.on('end', () => {
      if (plays.get(id) !== play || play.state === 'stopped') return;
      sendEvent(id, 'finished');
      play.state = 'stopped';
    });
  };

  const end = (play: Play): void => {
    play.state = 'stopped';
    if (play.ffmpeg && play.ffmpeg.exitCode === null) {
      play.ffmpeg.kill('SIGCONT');
      play.ffmpeg.kill('SIGKILL');
    }
  };

  const json = (res: http.ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };

  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/health') return json(res, 200, { status: 'ok' });
      const m = /^\/session\/([^/]+)\/(play|stop|pause|resume|status)$/.exec(url.pathname);
      if (!m) return json(res, 404, { status: 'error', message: 'not found' });
      const id = decodeURIComponent(m[1]!);
      const play = plays.get(id);
      switch (m[2]) {
        case 'play': {
          let req: { url?: unknown; format?: unknown; start_at?: unknown };
          try {
            req = JSON.parse(body) as typeof req;
          } catch {
            return json(res, 400, { status: 'error', message: 'invalid request' });
          }
          if (typeof req.url !== 'string' || req.url === '') return json(res, 400, { status: 'error', message: 'invalid request' });
          const format = typeof req.format === 'string' && req.format !== '' ? req.format : 'pcm';
          startPlayback(id, req.url, format, typeof req.start_at === 'number' ? req.start_at : 0);
          return json(res, 200, { status: 'playing', session_id: id });
        }
        case 'stop':
          if (play) {
            end(play);
            plays.delete(id);
          }
          return json(res, 200, { status: 'stopped', session_id: id });
        case 'pause':
        case 'resume':
          if (!play) return json(res, 404, { status: 'error', session_id: id, message: 'session not found' });
          play.state = m[2] === 'pause' ? 'paused' : 'streaming';
          play.ffmpeg?.kill(m[2] === 'pause' ? 'SIGSTOP' : 'SIGCONT');
          return json(res, 200, { status: m[2] === 'pause' ? 'paused' : 'playing', session_id: id });
        case 'status':
          if (!play) return json(res, 404, { session_id: id, status: 'not_found', bytes_sent: 0 });
          return json(res, 200, { session_id: id, status: play.state, bytes_sent: play.bytesSent, url: play.url });
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;

  let socketServer: net.Server | undefined;
  const openSocket = async () => {
    fs.rmSync(socketPath, { force: true });
    socketServer = net.createServer((socket) => {
      connections++;
      clients.add(socket);
      conn = socket;
      socket.on('error', () => undefined);
      socket.on('close', () => {
        clients.delete(socket);
        if (conn === socket) conn = undefined;
      });
    });
    await new Promise<void>((resolve) => socketServer!.listen(socketPath, resolve));
  };
  const closeSocket = async () => {
    const s = socketServer;
    socketServer = undefined;
    for (const c of clients) c.destroy();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  };
  await openSocket();

  return {
    url: `http://127.0.0.1:${port}`,
    socketPath,
    get connections() {
      return connections;
    },
    inject: (id, payload) => void frame(id, payload),
    closeSocket,
    openSocket,
    async stop() {
      for (const play of plays.values()) end(play);
      await closeSocket();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface NatashiRead {
  /** Payload bytes per session id, in order. */
  payloads: Map<string, Buffer[]>;
  events: Record<string, unknown>[];
}

/** natashi's Node reader: newlines skipped, `{` to where the brace count returns to zero, else a frame. */
export class NatashiReader {
  readonly read: NatashiRead = { payloads: new Map(), events: [] };
  private buffer = Buffer.alloc(0);

  push(data: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, data]);
    for (;;) {
      while (this.buffer.length > 0 && this.buffer[0] === 0x0a) this.buffer = this.buffer.subarray(1);
      if (this.buffer.length === 0) return;
      if (this.buffer[0] === 0x7b) {
        let depth = 0;
        let end = 0;
        for (let i = 0; i < this.buffer.length; i++) {
          if (this.buffer[i] === 0x7b) depth++;
          if (this.buffer[i] === 0x7d) depth--;
          if (depth === 0) {
            end = i + 1;
            break;
          }
        }
        if (end === 0) return;
        this.read.events.push(JSON.parse(this.buffer.subarray(0, end).toString('utf8')) as Record<string, unknown>);
        this.buffer = this.buffer.subarray(end);
        continue;
      }
      if (this.buffer.length < 4) return;
      const length = this.buffer.readUInt32BE(0);
      if (length > 64 * 1024) throw new Error(`natashi's reader would wait for a frame of ${length} bytes: stream lost`);
      if (this.buffer.length < 4 + length) return;
      const id = this.buffer.subarray(4, 28).toString('utf8').trim();
      const list = this.read.payloads.get(id) ?? [];
      list.push(Buffer.from(this.buffer.subarray(28, 4 + length)));
      this.read.payloads.set(id, list);
      this.buffer = this.buffer.subarray(4 + length);
    }
  }
}
