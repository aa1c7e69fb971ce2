/**
 * A source's metadata from what `ffmpeg -i` prints, since the bundled @ffmpeg-installer ships no
 * ffprobe. ffmpeg opens the input with the same arguments (and protocol whitelist) the engine
 * uses, prints the container, the input's tags and the duration to stderr, and exits asking for
 * an output: that answer is the probe.
 *
 *   Input #0, mp3, from 'a.mp3':
 *     Metadata:
 *       title           : Song            ← the input's tags: 4 spaces in (a stream's are 6)
 *       artist          : Band
 *     Duration: 00:03:25.04, start: …     ← N/A for a live stream
 */
import { execFile } from 'node:child_process';
import { reportedDuration } from '../../shared/ffmpeg.js';

export interface ProbeResult {
  /** ffmpeg's name of the container ("mp3", "ogg", "mov,mp4,m4a,3gp,3g2,mj2", …). */
  container: string;
  /** Milliseconds; undefined for a stream without an end. */
  durationMs: number | undefined;
  /** The input's tags, keys lower-cased. */
  tags: Record<string, string>;
}

export class ProbeError extends Error {
  override name = 'ProbeError';
}

const PROBE_TIMEOUT_MS = 10_000;
const MAX_OUTPUT = 256 * 1024;

/** Reads what ffmpeg printed about its first input. */
export function parseFfmpegInfo(stderr: string): ProbeResult | undefined {
  const lines = stderr.split(/\r?\n/);
  const start = lines.findIndex((l) => /^Input #0, /.test(l));
  if (start < 0) return undefined;
  const container = /^Input #0, (.+?), from /.exec(lines[start]!)?.[1] ?? 'unknown';
  const tags: Record<string, string> = {};
  let durationMs: number | undefined;
  let inInputMetadata = false;
  for (const line of lines.slice(start + 1)) {
    if (/^\S/.test(line)) break;
    if (line === '  Metadata:') {
      inInputMetadata = true;
      continue;
    }
    const tag = /^ {4}(\S[^:]*?)\s*: (.*)$/.exec(line);
    if (inInputMetadata && tag) {
      const key = tag[1]!.toLowerCase();
      if (!(key in tags)) tags[key] = tag[2]!;
      continue;
    }
    inInputMetadata = false;
    if (line.startsWith('  Duration: ')) {
      const seconds = reportedDuration(line);
      durationMs = seconds === undefined ? undefined : Math.round(seconds * 1000);
    }
  }
  return { container, durationMs, tags };
}

/**
 * Runs `ffmpeg <inputArgs>` and parses its answer; a source ffmpeg cannot open is a ProbeError.
 * A remote source's `env` sends ffmpeg through an egress proxy (ffmpegEnv), as the engine does.
 */
export function probe(ffmpeg: string, inputArgs: readonly string[], env?: NodeJS.ProcessEnv): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    execFile(
      ffmpeg,
      ['-hide_banner', '-nostdin', ...inputArgs],
      { timeout: PROBE_TIMEOUT_MS, maxBuffer: MAX_OUTPUT, encoding: 'utf8', ...(env ? { env } : {}) },
      (err, _stdout, stderr) => {
        const result = parseFfmpegInfo(stderr);
        if (result) return resolve(result);
        if ((err as { killed?: boolean } | null)?.killed) return reject(new ProbeError(`probing the source took more than ${PROBE_TIMEOUT_MS / 1000} s`));
        const last = stderr.trim().split('\n').pop()?.trim();
        reject(new ProbeError(last ? `ffmpeg cannot read the source: ${last.slice(0, 300)}` : `ffmpeg cannot read the source: ${err?.message ?? 'no output'}`));
      },
    );
  });
}
