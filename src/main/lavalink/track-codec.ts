/**
 * Lavalink's binary track format (lavaplayer's MessageOutput + encodeTrack), base64 on the wire:
 *
 *   u32be header        body size | flags << 30   (flag 1: the body starts with a version byte)
 *   u8    version       1 when the flag is absent; Lavalink 4 writes 3
 *   utf   title         Java modified UTF-8: u16be byte count, then the bytes
 *   utf   author
 *   i64be length        ms
 *   utf   identifier
 *   bool  isStream      one byte, 0 or 1
 *   ?utf  uri           version ≥ 2; nullable: bool present, then utf
 *   ?utf  artworkUrl    version ≥ 3
 *   ?utf  isrc          version ≥ 3
 *   utf   sourceName
 *   ...   source data   written by the source manager (http/local: the container probe name)
 *   i64be position      ms, the last 8 bytes
 *
 * The source data is kept as raw bytes, so any track string decodes and re-encodes to itself.
 */

export const TRACK_VERSION = 3;
const VERSIONED_FLAG = 1;
/** Java's Long.MAX_VALUE: Lavalink's length of a stream. */
export const LONG_MAX = 0x7fffffffffffffffn;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export interface TrackInfo {
  title: string;
  author: string;
  length: number;
  identifier: string;
  isStream: boolean;
  uri: string | null;
  artworkUrl: string | null;
  isrc: string | null;
  sourceName: string;
  position: number;
}

export interface DecodedTrack {
  info: TrackInfo;
  version: number;
  /** The source manager's own bytes between sourceName and position. */
  sourceData: Buffer;
}

export class TrackCodecError extends Error {
  override name = 'TrackCodecError';
}

/** Java's DataOutput.writeUTF bytes: NUL as C0 80, each UTF-16 unit alone (surrogates as 3 bytes). */
function modifiedUtf8(text: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x01 && c <= 0x7f) bytes.push(c);
    else if (c <= 0x7ff) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    else bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
  }
  if (bytes.length > 0xffff) throw new TrackCodecError(`text is longer than 65535 bytes: ${text.slice(0, 40)}…`);
  const out = Buffer.alloc(2 + bytes.length);
  out.writeUInt16BE(bytes.length, 0);
  out.set(bytes, 2);
  return out;
}

class Reader {
  offset = 0;
  constructor(private readonly buf: Buffer) {}

  private need(n: number): void {
    if (this.offset + n > this.buf.length) throw new TrackCodecError('track data ends too early');
  }
  u8(): number {
    this.need(1);
    return this.buf[this.offset++]!;
  }
  bool(): boolean {
    return this.u8() !== 0;
  }
  long(): number {
    this.need(8);
    const value = this.buf.readBigInt64BE(this.offset);
    this.offset += 8;
    // A stream's length is Long.MAX_VALUE: as a double it rounds up, and is written back as the max.
    return Number(value);
  }
  utf(): string {
    this.need(2);
    const n = this.buf.readUInt16BE(this.offset);
    this.offset += 2;
    this.need(n);
    const end = this.offset + n;
    let out = '';
    while (this.offset < end) {
      const a = this.buf[this.offset++]!;
      if (a < 0x80) out += String.fromCharCode(a);
      else if ((a & 0xe0) === 0xc0 && this.offset < end) out += String.fromCharCode(((a & 0x1f) << 6) | (this.buf[this.offset++]! & 0x3f));
      else if ((a & 0xf0) === 0xe0 && this.offset + 1 < end) {
        const b = this.buf[this.offset++]!;
        const c = this.buf[this.offset++]!;
        out += String.fromCharCode(((a & 0x0f) << 12) | ((b & 0x3f) << 6) | (c & 0x3f));
      } else throw new TrackCodecError('track text is not modified UTF-8');
    }
    return out;
  }
  nullableUtf(): string | null {
    return this.bool() ? this.utf() : null;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const out = Buffer.from(this.buf.subarray(this.offset, this.offset + n));
    this.offset += n;
    return out;
  }
}

export function decodeTrack(encoded: string): DecodedTrack {
  if (!BASE64.test(encoded) || encoded.length % 4 !== 0) throw new TrackCodecError('track is not base64');
  const buf = Buffer.from(encoded, 'base64');
  const r = new Reader(buf);
  if (buf.length < 4) throw new TrackCodecError('track data ends too early');
  const header = buf.readUInt32BE(0);
  r.offset = 4;
  const size = header & 0x3fffffff;
  const flags = header >>> 30;
  if (size !== buf.length - 4) throw new TrackCodecError(`track header says ${size} bytes, ${buf.length - 4} follow`);
  const version = flags & VERSIONED_FLAG ? r.u8() : 1;
  if (version < 1 || version > TRACK_VERSION) throw new TrackCodecError(`track version ${version} is not supported (1 to ${TRACK_VERSION})`);
  const title = r.utf();
  const author = r.utf();
  const length = r.long();
  const identifier = r.utf();
  const isStream = r.bool();
  const uri = version >= 2 ? r.nullableUtf() : null;
  const artworkUrl = version >= 3 ? r.nullableUtf() : null;
  const isrc = version >= 3 ? r.nullableUtf() : null;
  const sourceName = r.utf();
  const rest = buf.length - r.offset - 8;
  if (rest < 0) throw new TrackCodecError('track data ends too early');
  const sourceData = r.bytes(rest);
  const position = r.long();
  return { info: { title, author, length, identifier, isStream, uri, artworkUrl, isrc, sourceName, position }, version, sourceData };
}

export function encodeTrack(track: DecodedTrack): string {
  const { info, version } = track;
  const parts: Buffer[] = [];
  const long = (n: number) => {
    const b = Buffer.alloc(8);
    const big = BigInt(Math.trunc(n));
    b.writeBigInt64BE(big > LONG_MAX ? LONG_MAX : big < -LONG_MAX - 1n ? -LONG_MAX - 1n : big);
    return b;
  };
  const nullable = (text: string | null) => (text === null ? Buffer.from([0]) : Buffer.concat([Buffer.from([1]), modifiedUtf8(text)]));
  if (version > 1) parts.push(Buffer.from([version]));
  parts.push(modifiedUtf8(info.title), modifiedUtf8(info.author), long(info.length), modifiedUtf8(info.identifier), Buffer.from([info.isStream ? 1 : 0]));
  if (version >= 2) parts.push(nullable(info.uri));
  if (version >= 3) parts.push(nullable(info.artworkUrl), nullable(info.isrc));
  parts.push(modifiedUtf8(info.sourceName), track.sourceData, long(info.position));
  const body = Buffer.concat(parts);
  const header = Buffer.alloc(4);
  header.writeUInt32BE((body.length | ((version > 1 ? VERSIONED_FLAG : 0) << 30)) >>> 0);
  return Buffer.concat([header, body]).toString('base64');
}

/** Source data as lavaplayer's http and local sources write it: the container probe's name. */
export function probeSourceData(containerName: string): Buffer {
  return modifiedUtf8(containerName);
}
