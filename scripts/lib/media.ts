/**
 * Media files the benchmarks play: a tone under pink noise (something to encode that is not
 * trivially compressible), made by the bundled ffmpeg in the format a source kind reads.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { resolveFfmpeg } from '../../src/shared/ffmpeg.js';

export const MEDIA_FORMATS = ['mp3', 'ogg', 'opus', 'wav'] as const;
export type MediaFormat = (typeof MEDIA_FORMATS)[number];

const CODEC: Record<MediaFormat, string[]> = {
  mp3: ['-ar', '44100', '-c:a', 'libmp3lame', '-b:a', '192k'],
  ogg: ['-ar', '48000', '-c:a', 'libvorbis', '-q:a', '5'],
  // 20 ms packets, as YouTube's Opus: what the engine passes through without encoding.
  opus: ['-ar', '48000', '-c:a', 'libopus', '-b:a', '128k', '-frame_duration', '20'],
  wav: ['-ar', '48000', '-c:a', 'pcm_s16le'],
};

/** `dir`/bench.<format>: `seconds` of a 440 Hz tone under noise. */
export function makeMedia(dir: string, format: MediaFormat, seconds: number): string {
  const file = path.join(dir, `bench.${format}`);
  const input = `sine=frequency=440:sample_rate=48000:duration=${seconds},aformat=channel_layouts=stereo[a];anoisesrc=color=pink:amplitude=0.2:sample_rate=48000:duration=${seconds},aformat=channel_layouts=stereo[b];[a][b]amix=inputs=2`;
  execFileSync(resolveFfmpeg().path, ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', input, '-ac', '2', ...CODEC[format], file]);
  return file;
}
