/**
 * `npm run bench:opus`: what one stream's Opus encoding costs at each complexity, in CPU seconds
 * per stream-second, in this thread alone (process.cpuUsage of a single-threaded loop): the
 * engine's encoder threads do exactly this per frame, with @discordjs/opus, at the bitrate of the
 * `opus` format. The input is a tone under noise, about as hard for the encoder as music (a pure
 * sine is cheaper and would flatter the low complexities).
 * Flags: --seconds S of audio per complexity (60), --bitrate b/s (128000). Prints a table and JSON.
 */
import opus from '@discordjs/opus';
import { CHANNELS, PCM_FRAME_BYTES, SAMPLE_RATE } from '../../src/shared/audio.js';
import { OPUS_SET_COMPLEXITY } from '../../src/workers/opus-encoder.js';
import { defineCommand, numberFlag, parseCommandLine } from '../lib/cli.js';

const COMMAND = defineCommand({
  name: 'bench-opus',
  usage: 'npm run bench:opus -- [flags]',
  about: 'CPU per stream-second of Opus encoding at complexity 0–10.',
  flags: {
    seconds: { type: 'string', value: 'S', help: 'seconds of audio encoded per complexity (60)' },
    bitrate: { type: 'string', value: 'B', help: 'bitrate in b/s (128000)' },
  },
});

const { seconds, bitrate } = parseCommandLine(COMMAND, (v) => ({
  seconds: numberFlag('seconds', v.seconds ?? '60', 1, 3600),
  bitrate: numberFlag('bitrate', v.bitrate ?? '128000', 6000, 510_000, true),
}));

/** 10 s of s16le stereo: a 440 Hz tone and a 660 Hz one under pseudo-random noise. */
function music(): Buffer {
  const frames = 500;
  const pcm = Buffer.alloc(frames * PCM_FRAME_BYTES);
  let seed = 1;
  for (let i = 0; i < pcm.length / 4; i++) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    const noise = (seed / 0x7fffffff - 0.5) * 0.3;
    const t = i / SAMPLE_RATE;
    pcm.writeInt16LE(Math.round((Math.sin(2 * Math.PI * 440 * t) * 0.4 + noise) * 32767 * 0.8), i * 4);
    pcm.writeInt16LE(Math.round((Math.sin(2 * Math.PI * 660 * t) * 0.4 + noise) * 32767 * 0.8), i * 4 + 2);
  }
  return pcm;
}

const pcm = music();
const frameCount = pcm.length / PCM_FRAME_BYTES;
const rows: { complexity: number; cpu_s_per_stream_s: number; streams_per_core: number; mean_packet_bytes: number }[] = [];
for (let complexity = 0; complexity <= 10; complexity++) {
  const encoder = new opus.OpusEncoder(SAMPLE_RATE, CHANNELS);
  encoder.setBitrate(bitrate);
  encoder.applyEncoderCTL(OPUS_SET_COMPLEXITY, complexity);
  const total = seconds * 50;
  let bytes = 0;
  const before = process.cpuUsage();
  for (let n = 0; n < total; n++) {
    const i = n % frameCount;
    bytes += encoder.encode(pcm.subarray(i * PCM_FRAME_BYTES, (i + 1) * PCM_FRAME_BYTES)).length;
  }
  const used = process.cpuUsage(before);
  const cpu = (used.user + used.system) / 1e6 / seconds;
  rows.push({ complexity, cpu_s_per_stream_s: Math.round(cpu * 1e6) / 1e6, streams_per_core: Math.round(1 / cpu), mean_packet_bytes: Math.round(bytes / total) });
}

process.stdout.write(`Opus encoding at ${bitrate} b/s, ${seconds} s of audio per complexity (CPU % of one core per stream)\n`);
process.stdout.write('| complexity | CPU per stream | streams/core | mean packet B |\n| ---: | ---: | ---: | ---: |\n');
for (const r of rows) process.stdout.write(`| ${r.complexity} | ${(r.cpu_s_per_stream_s * 100).toFixed(3)} % | ${r.streams_per_core} | ${r.mean_packet_bytes} |\n`);
process.stdout.write(JSON.stringify({ when: new Date().toISOString(), bitrate, seconds, rows }) + '\n');
