/**
 * A session's RTP senders (src/workers/rtp-sink.ts) over real loopback UDP, IPv4 and IPv6: what
 * each target receives for the frames the player hands over. The end-to-end proof against a real
 * engine, gateway and ffmpeg is test/main/gateway/rtp.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FRAME_SAMPLES } from '../../src/shared/audio.js';
import { OPUS_PAYLOAD_TYPE } from '../../src/shared/rtp.js';
import { RtpSinks } from '../../src/workers/rtp-sink.js';
import { continuity, RtpReceiver } from '../helpers/rtp-receiver.js';

const open: { close(): void }[] = [];
afterEach(() => {
  for (const o of open.splice(0)) o.close();
});

async function receiver(type: 'udp4' | 'udp6'): Promise<RtpReceiver> {
  const rx = await RtpReceiver.open(type);
  open.push(rx);
  return rx;
}

function sinks(now?: () => number): RtpSinks {
  const errors: Error[] = [];
  const s = new RtpSinks((err) => errors.push(err), now);
  open.push({ close: () => s.close() });
  return s;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Frame i of a test stream: distinct bytes, so a mixed-up payload shows. */
const frame = (i: number) => Uint8Array.from({ length: 40 + (i % 7) }, (_, k) => (i * 31 + k) & 0xff);

describe('RtpSinks', () => {
  it('sends each frame to every target, IPv4 and IPv6, with its own SSRC and offsets; seq and timestamp wrap', async () => {
    const [v4, v6] = await Promise.all([receiver('udp4'), receiver('udp6')]);
    const s = sinks();
    const a = s.add({ host: v4.host, port: v4.port });
    const b = s.add({ host: v6.host, port: v6.port });
    expect(a.ssrc).not.toBe(b.ssrc);
    // The session's own counters, started just below their wrap points.
    const seq0 = 0xffff_fffd;
    const ts0 = 0xffff_ffff - 2 * FRAME_SAMPLES;
    const n = 8;
    for (let i = 0; i < n; i++) s.send(frame(i), (seq0 + i) >>> 0, (ts0 + i * FRAME_SAMPLES) >>> 0);
    await Promise.all([v4.waitForPackets(n, 2000), v6.waitForPackets(n, 2000)]);

    for (const [rx, info] of [
      [v4, a],
      [v6, b],
    ] as const) {
      const c = continuity(rx.packets, FRAME_SAMPLES);
      expect(c).toEqual({ seqBreaks: [], timestampBreaks: [], ssrcs: [info.ssrc], payloadTypes: [OPUS_PAYLOAD_TYPE] });
      const first = rx.packets[0]!;
      expect(first.seq).toBe((seq0 + info.stream.seqOffset) & 0xffff);
      expect(first.timestamp).toBe((ts0 + info.stream.timestampOffset) >>> 0);
      rx.packets.forEach((p, i) => expect(Buffer.from(p.payload).equals(frame(i))).toBe(true));
    }
    expect(s.info().map((i) => i.packets)).toEqual([n, n]);
  });

  it('continues a stream it is handed (the next track on a new worker slot): same SSRC, offsets applied', async () => {
    const rx = await receiver('udp4');
    const stream = { ssrc: 0xdeadbeef, seqOffset: 0xfff0, timestampOffset: 0x1000_0000 };
    const s = sinks();
    expect(s.add({ host: rx.host, port: rx.port, stream }).ssrc).toBe(0xdeadbeef);
    s.send(frame(0), 100, 5000);
    s.send(frame(1), 101, 5000 + FRAME_SAMPLES);
    await rx.waitForPackets(2, 2000);
    expect(rx.packets.map((p) => [p.ssrc, p.seq, p.timestamp])).toEqual([
      [0xdeadbeef, (100 + 0xfff0) & 0xffff, 5000 + 0x1000_0000],
      [0xdeadbeef, (101 + 0xfff0) & 0xffff, 5000 + FRAME_SAMPLES + 0x1000_0000],
    ]);
  });

  it('marks the first packet of each talkspurt: the first one, and the first after a gap of more than 3 frames', async () => {
    const rx = await receiver('udp4');
    let now = 1000;
    const s = sinks(() => now);
    s.add({ host: rx.host, port: rx.port });
    const sendAt = [0, 20, 40, 60, 100, 161, 181]; // a 40 ms stall is no talkspurt; 61 ms of nothing is
    sendAt.forEach((t, i) => {
      now = 1000 + t;
      s.send(frame(i), i, i * FRAME_SAMPLES);
    });
    await rx.waitForPackets(sendAt.length, 2000);
    expect(rx.packets.map((p) => p.marker)).toEqual([true, false, false, false, false, true, false]);
    expect(continuity(rx.packets, FRAME_SAMPLES).seqBreaks).toEqual([]);
  });

  it('adding a target twice keeps one stream; remove stops it and leaves the others', async () => {
    const [one, two] = await Promise.all([receiver('udp4'), receiver('udp4')]);
    const s = sinks();
    const first = s.add({ host: one.host, port: one.port });
    expect(s.add({ host: one.host, port: one.port })).toEqual(first);
    s.add({ host: two.host, port: two.port });
    expect(s.count).toBe(2);
    s.send(frame(0), 0, 0);
    await Promise.all([one.waitForPackets(1, 2000), two.waitForPackets(1, 2000)]);

    expect(s.remove({ host: one.host, port: one.port })).toBe(true);
    expect(s.remove({ host: one.host, port: one.port })).toBe(false);
    expect(s.count).toBe(1);
    s.send(frame(1), 1, FRAME_SAMPLES);
    await two.waitForPackets(2, 2000);
    await sleep(50);
    expect(one.packets).toHaveLength(1);
    expect(two.packets).toHaveLength(2);
  });

  it('a target nobody listens on neither throws nor stops the stream', async () => {
    const rx = await receiver('udp4');
    const port = rx.port;
    rx.close(); // now nothing listens there: the kernel answers with ICMP port unreachable
    const s = sinks();
    s.add({ host: '127.0.0.1', port });
    for (let i = 0; i < 20; i++) {
      expect(() => s.send(frame(i), i, i * FRAME_SAMPLES)).not.toThrow();
      await sleep(1);
    }
    expect(s.info()[0]!.packets).toBe(20);
  });
});
