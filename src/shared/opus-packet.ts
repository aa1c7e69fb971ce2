/**
 * How much audio an Opus packet holds, read from its TOC byte (RFC 6716 §3.1). (What an Ogg
 * stream's OpusHead says is read in ogg.ts, beside its writer.) Browser-safe (Uint8Array only).
 *
 *   TOC   config (5 bits) · s stereo (1 bit) · c frame-count code (2 bits)
 *         config 0–11  SILK     10, 20, 40, 60 ms   (by config % 4)
 *                12–15 hybrid   10, 20 ms           (by config % 2)
 *                16–31 CELT     2.5, 5, 10, 20 ms   (by config % 4)
 *         c 0: one frame; 1, 2: two frames; 3: the count is the low 6 bits of the next byte
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
