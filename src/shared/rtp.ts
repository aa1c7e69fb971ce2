/**
 * RTP for Opus (RFC 3550 header, RFC 7587 payload), used by the session worker that sends it
 * and by the tests and load scripts that receive it.
 *
 *   byte 0      V=2, P=0, X=0, CC=0            → 0x80
 *   byte 1      M, payload type                → M=1 on a talkspurt's first packet (a start, or
 *                                                after a pause or stall); OPUS_PAYLOAD_TYPE (111)
 *   bytes 2–3   sequence number (u16be, +1 per packet)
 *   bytes 4–7   timestamp (u32be, 48 kHz clock: +960 per 20 ms packet, RFC 7587 §4.1)
 *   bytes 8–11  SSRC (u32be, one per stream: a session to one target)
 *   then        one Opus packet
 */
import { FRAME_MS } from './audio.js';

export const RTP_HEADER_BYTES = 12;
export const OPUS_PAYLOAD_TYPE = 111;
export const RTP_CLOCK_RATE = 48_000;

export function writeRtpHeader(dst: Uint8Array, seq: number, timestamp: number, ssrc: number, marker = false): void {
  dst[0] = 0x80;
  dst[1] = (marker ? 0x80 : 0) | OPUS_PAYLOAD_TYPE;
  dst[2] = (seq >>> 8) & 0xff;
  dst[3] = seq & 0xff;
  dst[4] = timestamp >>> 24;
  dst[5] = timestamp >>> 16;
  dst[6] = timestamp >>> 8;
  dst[7] = timestamp;
  dst[8] = ssrc >>> 24;
  dst[9] = ssrc >>> 16;
  dst[10] = ssrc >>> 8;
  dst[11] = ssrc;
}

export interface RtpPacket {
  version: number;
  payloadType: number;
  marker: boolean;
  seq: number;
  timestamp: number;
  ssrc: number;
  payload: Uint8Array;
}

/** Parses a datagram; undefined when it is not RTP version 2 without CSRCs or extension. */
export function parseRtpPacket(d: Uint8Array): RtpPacket | undefined {
  if (d.length < RTP_HEADER_BYTES || d[0]! >> 6 !== 2) return undefined;
  if ((d[0]! & 0x1f) !== 0) return undefined;
  return {
    version: 2,
    payloadType: d[1]! & 0x7f,
    marker: (d[1]! & 0x80) !== 0,
    seq: (d[2]! << 8) | d[3]!,
    timestamp: ((d[4]! << 24) | (d[5]! << 16) | (d[6]! << 8) | d[7]!) >>> 0,
    ssrc: ((d[8]! << 24) | (d[9]! << 16) | (d[10]! << 8) | d[11]!) >>> 0,
    payload: d.subarray(RTP_HEADER_BYTES),
  };
}

/** SDP (RFC 4566) for receiving one session's Opus RTP stream at `port` on `address`. */
export function opusSdp(sessionId: string, address: string, port: number): string {
  const family = address.includes(':') ? 'IP6' : 'IP4';
  return [
    'v=0',
    `o=- 0 0 IN ${family} ${address}`,
    `s=chorus ${sessionId.replace(/[\r\n]/g, '')}`,
    `c=IN ${family} ${address}`,
    't=0 0',
    `m=audio ${port} RTP/AVP ${OPUS_PAYLOAD_TYPE}`,
    `a=rtpmap:${OPUS_PAYLOAD_TYPE} opus/${RTP_CLOCK_RATE}/2`,
    `a=fmtp:${OPUS_PAYLOAD_TYPE} stereo=1; sprop-stereo=1`,
    `a=ptime:${FRAME_MS}`,
    'a=recvonly',
    '',
  ].join('\r\n');
}
