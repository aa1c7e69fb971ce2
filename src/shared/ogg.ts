/**
 * Ogg Opus (RFC 3533 pages, RFC 7845 Opus mapping): the container natashi's engine sends and its
 * Node layer reads. Browser-safe (Uint8Array only).
 *
 *   Page  "OggS" · version 0 · flags (1 continued, 2 first, 4 last) · granule i64le ·
 *         serial u32le · page seq u32le · CRC u32le · n segments · n lacing values · body
 *   A packet is the concatenation of lacing values up to and including one below 255; a packet
 *   whose last lacing value is 255 continues on the next page (flag 1).
 *   The first two packets of a stream are the OpusHead and OpusTags headers, each on its own page;
 *   every other packet is one Opus packet. The granule counts 48 kHz samples to the page's end.
 *
 * OggOpusWriter makes a stream with one 20 ms packet per page (what ffmpeg's
 * `-f ogg -page_duration 20000` gives); OggPacketReader takes a stream in chunks of any size
 * and hands out its Opus packets, with bounded memory whatever the input.
 */
import { FRAME_SAMPLES, SAMPLE_RATE } from './audio.js';

export const OGG_CAPTURE = [0x4f, 0x67, 0x67, 0x53] as const; // "OggS"
const PAGE_HEADER_BYTES = 27;
const MAX_SEGMENTS = 255;
/** Largest page: header, 255 lacing values, 255 segments of 255 bytes. */
export const MAX_OGG_PAGE_BYTES = PAGE_HEADER_BYTES + MAX_SEGMENTS + MAX_SEGMENTS * 255;
const FLAG_CONTINUED = 0x01;
const FLAG_FIRST = 0x02;

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let k = 0; k < 8; k++) r = r & 0x80000000 ? (r << 1) ^ 0x04c11db7 : r << 1;
    table[i] = r >>> 0;
  }
  return table;
})();

/** Ogg's CRC-32 (polynomial 0x04c11db7, no reflection, initial 0, no final xor). */
export function oggCrc(bytes: Uint8Array, start = 0, end = bytes.length): number {
  let crc = 0;
  for (let i = start; i < end; i++) crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ bytes[i]!) & 0xff]!) >>> 0;
  return crc;
}

/** True when the bytes at `at` are "OggS". */
export function startsWithOggCapture(bytes: Uint8Array, at = 0): boolean {
  return (
    bytes.length - at >= 4 &&
    bytes[at] === OGG_CAPTURE[0] &&
    bytes[at + 1] === OGG_CAPTURE[1] &&
    bytes[at + 2] === OGG_CAPTURE[2] &&
    bytes[at + 3] === OGG_CAPTURE[3]
  );
}

export interface OggPageFields {
  flags: number;
  granule: number;
  serial: number;
  sequence: number;
}

/** One page holding `packet` whole (at most 255 × 255 − 1 bytes). */
export function oggPage(fields: OggPageFields, packet: Uint8Array): Uint8Array {
  const segments = Math.floor(packet.length / 255) + 1;
  if (segments > MAX_SEGMENTS) throw new RangeError(`packet of ${packet.length} bytes does not fit one Ogg page`);
  const page = new Uint8Array(PAGE_HEADER_BYTES + segments + packet.length);
  const view = new DataView(page.buffer);
  page.set(OGG_CAPTURE, 0);
  page[4] = 0;
  page[5] = fields.flags;
  view.setUint32(6, fields.granule % 2 ** 32, true);
  view.setUint32(10, Math.floor(fields.granule / 2 ** 32), true);
  view.setUint32(14, fields.serial >>> 0, true);
  view.setUint32(18, fields.sequence >>> 0, true);
  page[26] = segments;
  page.fill(255, PAGE_HEADER_BYTES, PAGE_HEADER_BYTES + segments - 1);
  page[PAGE_HEADER_BYTES + segments - 1] = packet.length % 255;
  page.set(packet, PAGE_HEADER_BYTES + segments);
  view.setUint32(22, oggCrc(page), true);
  return page;
}

const OPUS_HEAD = [0x4f, 0x70, 0x75, 0x73, 0x48, 0x65, 0x61, 0x64]; // "OpusHead"
const OPUS_TAGS = [0x4f, 0x70, 0x75, 0x73, 0x54, 0x61, 0x67, 0x73]; // "OpusTags"

function hasMagic(bytes: Uint8Array, start: number, end: number, magic: readonly number[]): boolean {
  if (end - start < magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (bytes[start + i] !== magic[i]) return false;
  return true;
}

/** An OpusHead or OpusTags packet: a header of the stream, not audio. */
export function isOpusHeader(bytes: Uint8Array, start = 0, end = bytes.length): boolean {
  return hasMagic(bytes, start, end, OPUS_HEAD) || hasMagic(bytes, start, end, OPUS_TAGS);
}

export interface OpusHead {
  channels: number;
  preSkip: number;
  /** 0: mono or stereo, one stream per packet; any other family is multistream. */
  mappingFamily: number;
}

/**
 * The fields of an OpusHead packet (RFC 7845 §5.1: "OpusHead" · version u8 · channels u8 ·
 * pre-skip u16le · input rate u32le · gain i16le · mapping family u8 · mapping table when the
 * family is not 0, as OggOpusWriter writes it), or undefined when bytes[start, end) is not one.
 */
export function parseOpusHead(bytes: Uint8Array, start = 0, end = bytes.length): OpusHead | undefined {
  if (end - start < 19 || !hasMagic(bytes, start, end, OPUS_HEAD)) return undefined;
  return {
    channels: bytes[start + 9]!,
    preSkip: bytes[start + 10]! | (bytes[start + 11]! << 8),
    mappingFamily: bytes[start + 18]!,
  };
}

/** Writes one logical Ogg Opus stream: header pages, then a page per packet. */
export class OggOpusWriter {
  private sequence = 0;
  private granule = 0;

  /**
   * @param serial the stream's serial number (any 32-bit value; distinct per stream).
   * @param preSkip samples a decoder drops at the start (the encoder's look-ahead).
   */
  constructor(
    private readonly serial: number,
    private readonly preSkip = 312,
    private readonly channels = 2,
    private readonly vendor = 'chorus',
  ) {}

  /** The OpusHead page (first of the stream) and the OpusTags page. */
  headers(): Uint8Array[] {
    const head = new Uint8Array(19);
    const hv = new DataView(head.buffer);
    head.set(OPUS_HEAD, 0);
    head[8] = 1;
    head[9] = this.channels;
    hv.setUint16(10, this.preSkip, true);
    hv.setUint32(12, SAMPLE_RATE, true);
    const vendor = new TextEncoder().encode(this.vendor);
    const tags = new Uint8Array(8 + 4 + vendor.length + 4);
    const tv = new DataView(tags.buffer);
    tags.set(OPUS_TAGS, 0);
    tv.setUint32(8, vendor.length, true);
    tags.set(vendor, 12);
    return [this.page(FLAG_FIRST, head), this.page(0, tags)];
  }

  /** One page carrying one Opus packet of `samples` 48 kHz samples. */
  packet(packet: Uint8Array, samples = FRAME_SAMPLES): Uint8Array {
    this.granule += samples;
    return this.page(0, packet);
  }

  private page(flags: number, packet: Uint8Array): Uint8Array {
    return oggPage({ flags, granule: this.granule, serial: this.serial, sequence: this.sequence++ }, packet);
  }
}

export interface OggReaderCounters {
  pages: number;
  /** Pages whose CRC did not match (dropped). */
  badPages: number;
  /** Bytes skipped looking for the next "OggS". */
  skippedBytes: number;
  /** Packets longer than the reader's bound (dropped). */
  oversizePackets: number;
}

/**
 * Ogg pages in, packets out, from chunks of any size. A page is gathered into one fixed scratch
 * buffer (at most MAX_OGG_PAGE_BYTES), a packet spanning pages into another (at most
 * `maxPacket` bytes): memory is bounded whatever arrives. Garbage is skipped up to the next
 * "OggS"; a page with a bad CRC is dropped. OpusHead and OpusTags packets are not handed out as
 * packets: they go to `header`, when given (the engine's passthrough reads the OpusHead).
 */
export class OggPacketReader {
  private readonly page = new Uint8Array(MAX_OGG_PAGE_BYTES);
  private have = 0;
  /** Bytes of the page held so far, and how many the current step needs. */
  private target = PAGE_HEADER_BYTES;
  private phase: 'header' | 'lacing' | 'body' = 'header';
  private readonly partial: Uint8Array;
  private partialBytes = 0;
  /** A packet is under way across pages. */
  private open = false;
  /** The packet under way grew past maxPacket: its remaining segments are dropped. */
  private discarding = false;
  readonly counters: OggReaderCounters = { pages: 0, badPages: 0, skippedBytes: 0, oversizePackets: 0 };

  /**
   * @param packet called per Opus packet with bytes[start, end); the bytes are only valid
   *   during the call.
   * @param header called likewise per OpusHead or OpusTags packet.
   */
  constructor(
    private readonly packet: (bytes: Uint8Array, start: number, end: number) => void,
    private readonly maxPacket = 8192,
    private readonly header?: (bytes: Uint8Array, start: number, end: number) => void,
  ) {
    this.partial = new Uint8Array(maxPacket);
  }

  /** Forget any half page or packet (a new stream follows). */
  reset(): void {
    this.restart(0);
    this.dropPartial();
  }

  push(chunk: Uint8Array): void {
    let off = 0;
    while (off < chunk.length) {
      const take = Math.min(this.target - this.have, chunk.length - off);
      this.page.set(chunk.subarray(off, off + take), this.have);
      this.have += take;
      off += take;
      while (this.have >= this.target) this.step();
    }
  }

  private step(): void {
    switch (this.phase) {
      case 'header':
        if (!startsWithOggCapture(this.page, 0) || this.page[4] !== 0) return this.resync();
        this.phase = 'lacing';
        this.target = PAGE_HEADER_BYTES + this.page[26]!;
        return;
      case 'lacing': {
        let body = 0;
        for (let i = PAGE_HEADER_BYTES; i < this.target; i++) body += this.page[i]!;
        this.phase = 'body';
        this.target += body;
        return;
      }
      case 'body':
        return this.finishPage();
    }
  }

  /** Keeps the held bytes from `from` on, as the start of the next page. */
  private restart(from: number): void {
    this.page.copyWithin(0, from, this.have);
    this.have -= from;
    this.phase = 'header';
    this.target = PAGE_HEADER_BYTES;
  }

  /** Lost framing: drops at least one byte, then up to the next "OggS" in what is held. */
  private resync(): void {
    let at = 1;
    while (at < this.have && !(this.page[at] === OGG_CAPTURE[0] && (this.have - at < 4 || startsWithOggCapture(this.page, at)))) at++;
    this.counters.skippedBytes += at;
    this.restart(at);
  }

  private finishPage(): void {
    const total = this.target;
    const stored = (this.page[22]! | (this.page[23]! << 8) | (this.page[24]! << 16) | (this.page[25]! << 24)) >>> 0;
    this.page.fill(0, 22, 26);
    const crc = oggCrc(this.page, 0, total);
    new DataView(this.page.buffer).setUint32(22, stored, true);
    if (crc !== stored) {
      this.counters.badPages++;
      return this.resync();
    }
    this.counters.pages++;
    const segments = this.page[26]!;
    const continued = (this.page[5]! & FLAG_CONTINUED) !== 0;
    // A packet carried over from a page we never got cannot be finished: drop it.
    if (this.open && !continued) this.dropPartial();
    let skipping = continued && !this.open;
    let at = PAGE_HEADER_BYTES + segments;
    let start = at;
    for (let i = 0; i < segments; i++) {
      const lacing = this.page[PAGE_HEADER_BYTES + i]!;
      at += lacing;
      if (lacing === 255) continue;
      if (skipping) skipping = false;
      else this.endPacket(start, at);
      start = at;
    }
    if (start < at && !skipping) this.carry(start, at);
    this.restart(total);
  }

  /** The packet ending at page[end): with what was carried over, or in place. */
  private endPacket(start: number, end: number): void {
    if (this.open) {
      this.carry(start, end);
      const whole = !this.discarding;
      const bytes = this.partialBytes;
      this.dropPartial();
      if (whole) this.emit(this.partial, 0, bytes);
      return;
    }
    if (end - start > this.maxPacket) {
      this.counters.oversizePackets++;
      return;
    }
    this.emit(this.page, start, end);
  }

  private carry(start: number, end: number): void {
    this.open = true;
    if (this.discarding) return;
    if (this.partialBytes + (end - start) > this.maxPacket) {
      this.counters.oversizePackets++;
      this.discarding = true;
      return;
    }
    this.partial.set(this.page.subarray(start, end), this.partialBytes);
    this.partialBytes += end - start;
  }

  private dropPartial(): void {
    this.open = false;
    this.discarding = false;
    this.partialBytes = 0;
  }

  private emit(bytes: Uint8Array, start: number, end: number): void {
    if (end === start) return;
    if (isOpusHeader(bytes, start, end)) this.header?.(bytes, start, end);
    else this.packet(bytes, start, end);
  }
}
