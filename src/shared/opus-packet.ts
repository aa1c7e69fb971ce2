/**
 * How much audio an Opus packet holds, read from its TOC byte (RFC 6716 §3.1), and what an Ogg
 * stream's OpusHead says (RFC 7845 §5.1). Browser-safe (Uint8Array only).
 *
 *   TOC   config (5 bits) · s stereo (1 bit) · c frame-count code (2 bits)
 *         config 0–11  SILK     10, 20, 40, 60 ms   (by config % 4)
 *                12–15 hybrid   10, 20 ms           (by config % 2)
 *                16–31 CELT     2.5, 5, 10, 20 ms   (by config % 4)
 *         c 0: one frame; 1, 2: two frames; 3: the count is the low 6 bits of the next byte
 *   OpusHead  "OpusHead" · version u8 · channels u8 · pre-skip u16le · input rate u32le ·
 *             gain i16le · mapping family u8 · (mapping table when the family is not 0)
 */

/** Samples at 48 kHz per frame, by TOC config. */
const FRAME_SAMPLES_BY_CONFIG: readonly number[] = Array.from({ length: 32 }, (_, config) => {
  if (config < 12) return [480, 960, 1920, 2880][config % 4]!;
  if (config < 16) return [480, 960][config % 2]!;
  return [120, 240, 480, 960][config % 4]!;
});

/** 48 kHz samples in the packet bytes[start, end); undefined for one too short to say. */
export function opusPacketSamples(bytes: Uint8Array, start = 0, end = bytes.length): number | undefined {
  if (end <= start) return undefined;
  const toc = bytes[start]!;
  const frameSamples = FRAME_SAMPLES_BY_CONFIG[toc >> 3]!;
  const code = toc & 3;
  if (code === 0) return frameSamples;
  if (code !== 3) return 2 * frameSamples;
  if (end - start < 2) return undefined;
  return (bytes[start + 1]! & 0x3f) * frameSamples;
}

export interface OpusHead {
  channels: number;
  preSkip: number;
  /** 0: mono or stereo, one stream per packet; any other family is multistream. */
  mappingFamily: number;
}

/** The fields of an OpusHead packet, or undefined when bytes[start, end) is not one. */
export function parseOpusHead(bytes: Uint8Array, start = 0, end = bytes.length): OpusHead | undefined {
  if (end - start < 19) return undefined;
  const magic = 'OpusHead';
  for (let i = 0; i < magic.length; i++) if (bytes[start + i] !== magic.charCodeAt(i)) return undefined;
  return {
    channels: bytes[start + 9]!,
    preSkip: bytes[start + 10]! | (bytes[start + 11]! << 8),
    mappingFamily: bytes[start + 18]!,
  };
}
