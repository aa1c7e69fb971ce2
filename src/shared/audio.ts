/** Audio constants every part of chorus agrees on (browser-safe: no Node imports). */

export const SAMPLE_RATE = 48_000;
export const CHANNELS = 2;
export const FRAME_MS = 20;
export const FRAMES_PER_SECOND = 1000 / FRAME_MS;
/** Samples per channel in one 20 ms frame. */
export const FRAME_SAMPLES = (SAMPLE_RATE * FRAME_MS) / 1000;
/** Bytes of one 20 ms frame of s16le stereo PCM. */
export const PCM_FRAME_BYTES = FRAME_SAMPLES * CHANNELS * 2;
/** Largest Opus packet for one 20 ms frame: a 1275-byte frame plus its TOC byte (RFC 6716 §3.2). */
export const MAX_OPUS_PACKET_BYTES = 1276;

/** What the engine sends per frame: Opus at 128 kb/s (`opus`), at 256 kb/s (`web`), or raw PCM. */
export const AUDIO_FORMATS = ['opus', 'web', 'pcm'] as const;
export type AudioFormat = (typeof AUDIO_FORMATS)[number];

export function isAudioFormat(value: unknown): value is AudioFormat {
  return typeof value === 'string' && (AUDIO_FORMATS as readonly string[]).includes(value);
}

/** Largest payload a frame of this format carries. */
export function maxPayloadBytes(format: AudioFormat): number {
  return format === 'pcm' ? PCM_FRAME_BYTES : MAX_OPUS_PACKET_BYTES;
}

/** Whole frames in `ms` milliseconds of audio (at least one). */
export function framesIn(ms: number): number {
  return Math.max(1, Math.ceil(ms / FRAME_MS));
}
