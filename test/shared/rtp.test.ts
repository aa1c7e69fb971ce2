/**
 * The RTP header chorus writes (RFC 3550 fixed header, RFC 7587 Opus payload type 111) read back
 * byte by byte and by the parser the tests use, and the SDP that ffmpeg, ffplay and VLC open.
 */
import { describe, expect, it } from 'vitest';
import { OPUS_PAYLOAD_TYPE, opusSdp, parseRtpPacket, RTP_CLOCK_RATE, RTP_HEADER_BYTES, writeRtpHeader } from '../../src/shared/rtp.js';

describe('RTP header', () => {
  it.each([
    [0, 0, 1, false],
    [0xffff, 0xffffffff, 0xffffffff, true],
    [0x8000, 0x80000000, 0x80000000, false], // high bits set, where signed shifts go negative
    [0x1234, 0xa0b0c0d0, 0x01020304, true],
  ])('writes seq %i, timestamp %i, SSRC %i, marker %s big-endian and parses them back', (seq, timestamp, ssrc, marker) => {
    const packet = new Uint8Array(RTP_HEADER_BYTES + 3);
    writeRtpHeader(packet, seq, timestamp, ssrc, marker);
    packet.set([0xfc, 1, 2], RTP_HEADER_BYTES);
    const view = new DataView(packet.buffer);
    expect(packet[0]).toBe(0x80); // V=2, no padding, no extension, no CSRC
    expect(packet[1]).toBe((marker ? 0x80 : 0) | 111);
    expect(view.getUint16(2)).toBe(seq);
    expect(view.getUint32(4)).toBe(timestamp);
    expect(view.getUint32(8)).toBe(ssrc);
    expect(parseRtpPacket(packet)).toEqual({
      version: 2,
      payloadType: OPUS_PAYLOAD_TYPE,
      marker,
      seq,
      timestamp,
      ssrc,
      payload: new Uint8Array([0xfc, 1, 2]),
    });
  });

  it('the marker bit is off unless asked for', () => {
    const packet = new Uint8Array(RTP_HEADER_BYTES);
    writeRtpHeader(packet, 1, 2, 3);
    expect(packet[1]).toBe(111);
  });

  it('the parser refuses what is not a plain RTP v2 header', () => {
    const good = new Uint8Array(RTP_HEADER_BYTES);
    writeRtpHeader(good, 1, 2, 3);
    expect(parseRtpPacket(good.subarray(0, RTP_HEADER_BYTES - 1))).toBeUndefined();
    expect(parseRtpPacket(Uint8Array.from(good, (b, i) => (i === 0 ? 0x40 : b)))).toBeUndefined(); // version 1
    expect(parseRtpPacket(Uint8Array.from(good, (b, i) => (i === 0 ? 0x81 : b)))).toBeUndefined(); // one CSRC
    expect(parseRtpPacket(Uint8Array.from(good, (b, i) => (i === 0 ? 0x90 : b)))).toBeUndefined(); // extension
  });
});

describe('SDP for a receiver', () => {
  const lines = (sdp: string) => sdp.split('\r\n');

  it('describes Opus RTP (PT 111, 48 kHz, 2 channels, 20 ms) at an IPv4 address and port, CRLF-terminated', () => {
    const sdp = opusSdp('room-1', '127.0.0.1', 5004);
    expect(sdp.endsWith('\r\n')).toBe(true);
    expect(sdp.replace(/\r\n/g, '')).not.toMatch(/[\r\n]/);
    const l = lines(sdp);
    expect(l[0]).toBe('v=0');
    expect(l).toContain('o=- 0 0 IN IP4 127.0.0.1');
    expect(l).toContain('s=chorus room-1');
    expect(l).toContain('c=IN IP4 127.0.0.1');
    expect(l).toContain('t=0 0');
    expect(l).toContain('m=audio 5004 RTP/AVP 111');
    expect(l).toContain(`a=rtpmap:111 opus/${RTP_CLOCK_RATE}/2`);
    expect(l).toContain('a=ptime:20');
    // RFC 4566 order: v o s … c t m, then the media's attributes.
    const order = ['v=', 'o=', 's=', 'c=', 't=', 'm=', 'a=rtpmap'].map((p) => l.findIndex((x) => x.startsWith(p)));
    expect(order).toEqual([...order].sort((a, b) => a - b));
  });

  it('uses IN IP6 for an IPv6 address', () => {
    const l = lines(opusSdp('s', '::1', 5006));
    expect(l).toContain('o=- 0 0 IN IP6 ::1');
    expect(l).toContain('c=IN IP6 ::1');
    expect(l).toContain('m=audio 5006 RTP/AVP 111');
  });
});
