/**
 * Demux throughput: frames per second routed from one Unix socket into per-session rings by the
 * gateway's own code (WireDecoder → FrameIdTable → GatewaySession.acceptFrame → Ring), against a
 * reader modelled on the seed's Node path as issue 5 describes it (Buffer.concat per read, brace
 * counting to find an event's end, a string id and a payload slice per frame, an EventEmitter
 * 'audio' event, a per-session PassThrough stream), in the same run on the same byte stream.
 *
 * A writer thread pushes a pre-built stream (N sessions' frames interleaved, an event now and
 * then) as fast as the socket takes it; a consumer thread drains the rings so they never fill.
 */
import { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { encodeEvent, encodeFrame, FrameIdTable, WireDecoder } from '../../src/shared/protocol.js';
import { GatewaySession } from '../../src/main/gateway/session.js';
import { Redactor } from '../../src/shared/redact.js';

export interface DemuxResult {
  reader: 'chorus' | 'seed-baseline';
  sessions: number;
  frames: number;
  seconds: number;
  framesPerSecond: number;
  mbPerSecond: number;
  /** Share of the wall time the reading thread was busy (event-loop utilisation). */
  readerBusy: number;
  /** Frames per second of the reading thread's busy time: what one free core would route. */
  framesPerBusySecond: number;
}

const PAYLOAD_BYTES = 320; // an Opus frame at 128 kb/s

/** The byte stream: `rounds` rounds of one frame per session, an event every 1000 frames. */
function buildStream(sessions: number, rounds: number): { stream: Buffer; frames: number } {
  const parts: Buffer[] = [];
  let frames = 0;
  const payload = Buffer.alloc(PAYLOAD_BYTES, 7);
  for (let r = 0; r < rounds; r++) {
    for (let s = 0; s < sessions; s++) {
      parts.push(encodeFrame(`bench-${s}`, payload));
      if (++frames % 1000 === 0) {
        parts.push(encodeEvent({ type: 'error', session_id: `bench-${s}`, message: 'a {braced} message\nwith a newline' }));
      }
    }
  }
  return { stream: Buffer.concat(parts), frames };
}

const WRITER = `
const net = require('node:net');
const { workerData, parentPort } = require('node:worker_threads');
const sock = net.createConnection(workerData.path, () => {
  let left = workerData.repeats;
  const write = () => {
    while (left > 0) {
      left--;
      if (!sock.write(workerData.stream)) return sock.once('drain', write);
    }
    sock.end();
  };
  write();
});
sock.on('close', () => parentPort.postMessage('done'));
`;

const DRAINER = `
const { workerData } = require('node:worker_threads');
const rings = workerData.rings.map((b) => ({ control: new Int32Array(b, 0, 8) }));
const stop = new Int32Array(workerData.stop);
// Consumes by moving each ring's tail to its head every millisecond, sleeping in between so it
// does not take a core from the reader; a ring that fills meanwhile drops its oldest frames
// (the seed-engine path), which still counts as routed.
while (Atomics.load(stop, 0) === 0) {
  Atomics.wait(stop, 0, 0, 1);
  for (const r of rings) {
    const head = Atomics.load(r.control, 0);
    const tail = Atomics.load(r.control, 1);
    if (head !== tail) Atomics.compareExchange(r.control, 1, tail, head);
  }
}
`;

async function measure(
  reader: DemuxResult['reader'],
  sessions: number,
  stream: Buffer,
  framesPerStream: number,
  repeats: number,
  onData: (chunk: Buffer) => void,
  rings: SharedArrayBuffer[],
): Promise<DemuxResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-bench-'));
  const sockPath = path.join(dir, 'demux.sock');
  const stop = new SharedArrayBuffer(4);
  const drainer = rings.length > 0 ? new Worker(DRAINER, { eval: true, workerData: { rings, stop } }) : undefined;
  let started = 0;
  let bytes = 0;
  let eluStart = performance.eventLoopUtilization();
  const server = net.createServer((socket) => {
    started = performance.now();
    eluStart = performance.eventLoopUtilization();
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      onData(chunk);
    });
  });
  await new Promise<void>((r) => server.listen(sockPath, r));
  const writer = new Worker(WRITER, { eval: true, workerData: { path: sockPath, stream, repeats } });
  await new Promise((r) => writer.once('message', r));
  const seconds = (performance.now() - started) / 1000;
  const readerBusy = performance.eventLoopUtilization(eluStart).utilization;
  Atomics.store(new Int32Array(stop), 0, 1);
  await Promise.all([writer.terminate(), drainer?.terminate()]);
  await new Promise((r) => server.close(r));
  fs.rmSync(dir, { recursive: true, force: true });
  const frames = framesPerStream * repeats;
  return {
    reader,
    sessions,
    frames,
    seconds,
    framesPerSecond: frames / seconds,
    mbPerSecond: bytes / seconds / 1e6,
    readerBusy,
    framesPerBusySecond: frames / (seconds * readerBusy),
  };
}

/** chorus: the gateway's classes, on the gateway's hot path. */
export async function benchChorusDemux(sessions: number, seconds = 3): Promise<DemuxResult> {
  const { stream, frames } = buildStream(sessions, 50);
  const byId = new FrameIdTable<GatewaySession>();
  const rings: SharedArrayBuffer[] = [];
  const counters = { framesRouted: 0, framesStale: 0, framesOverrun: 0, framesOversize: 0 };
  for (let s = 0; s < sessions; s++) {
    const session = new GatewaySession(`bench-${s}`, s + 1, 3000, 'wait', counters, new Redactor(), 20);
    session.beginTrack({ url: 'tone:440', format: 'opus', startAt: 0 });
    session.playAccepted(undefined);
    session.onReady({ type: 'ready', session_id: session.id });
    byId.set(session.id, session);
    rings.push(session.ring!.buffer);
  }
  const decoder = new WireDecoder({
    frame(buf, idStart, payloadStart, payloadEnd) {
      byId.get(buf, idStart)?.acceptFrame(buf, payloadStart, payloadEnd, false);
    },
    event: () => undefined,
    error: () => undefined,
  });
  const repeats = Math.max(1, Math.round((seconds * 3e6) / frames));
  const result = await measure('chorus', sessions, stream, frames, repeats, (c) => decoder.push(c), rings);
  if (counters.framesRouted !== result.frames) throw new Error(`chorus routed ${counters.framesRouted} of ${result.frames} frames`);
  return result;
}

/** The seed's socket client, as the seed's impact analysis describes it, in TypeScript. */
export async function benchSeedDemux(sessions: number, seconds = 3): Promise<DemuxResult> {
  const { stream, frames } = buildStream(sessions, 50);
  const streams = new Map<string, PassThrough>();
  for (let s = 0; s < sessions; s++) {
    const stream = new PassThrough();
    stream.on('data', () => undefined);
    streams.set(`bench-${s}`, stream);
  }
  const emitter = new EventEmitter();
  let routed = 0;
  emitter.on('audio', (sessionId: string, payload: Buffer) => {
    const stream = streams.get(sessionId);
    if (!stream) return;
    stream.write(payload);
    routed++;
  });
  let buffer = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (;;) {
      if (buffer.length === 0) return;
      if (buffer[0] === 0x7b) {
        // brace counting, as the seed does (and why a '}' inside a string breaks it)
        let depth = 0;
        let end = -1;
        for (let i = 0; i < buffer.length; i++) {
          if (buffer[i] === 0x7b) depth++;
          else if (buffer[i] === 0x7d && --depth === 0) {
            end = i;
            break;
          }
        }
        if (end < 0) return;
        try {
          emitter.emit('event', JSON.parse(buffer.subarray(0, end + 1).toString()));
        } catch {
          // the seed logs and goes on
        }
        buffer = buffer.subarray(buffer[end + 1] === 0x0a ? end + 2 : end + 1);
        continue;
      }
      if (buffer.length < 4) return;
      const length = buffer.readUInt32BE(0);
      if (buffer.length < 4 + length) return;
      const sessionId = buffer.subarray(4, 28).toString().trim();
      emitter.emit('audio', sessionId, buffer.subarray(28, 4 + length));
      buffer = buffer.subarray(4 + length);
    }
  };
  const repeats = Math.max(1, Math.round((seconds * 1e6) / frames));
  const result = await measure('seed-baseline', sessions, stream, frames, repeats, onData, []);
  if (routed !== result.frames) throw new Error(`seed baseline routed ${routed} of ${result.frames} frames`);
  return result;
}
