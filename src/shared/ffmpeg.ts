/**
 * Which ffmpeg binary chorus runs, in this order:
 *   1. CHORUS_FFMPEG (must exist),
 *   2. ffmpeg-static, an optional dependency whose install downloads its binary (absent offline),
 *   3. @ffmpeg-installer/ffmpeg, which ships its binary inside the package,
 *   4. `ffmpeg` on PATH.
 * The engine, the tests and the gateway's RTP tests all use this one rule.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

export type FfmpegSource = 'CHORUS_FFMPEG' | 'ffmpeg-static' | '@ffmpeg-installer/ffmpeg' | 'PATH';

export interface FfmpegBinary {
  path: string;
  source: FfmpegSource;
}

const require = createRequire(import.meta.url);

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** The package's binary path, or undefined when the package or its binary is missing. */
function fromPackage(name: string, pick: (exported: unknown) => unknown): string | undefined {
  try {
    const file = pick(require(name));
    return typeof file === 'string' && isExecutable(file) ? file : undefined;
  } catch {
    return undefined;
  }
}

function onPath(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && isExecutable(path.join(dir, 'ffmpeg'))) return path.join(dir, 'ffmpeg');
  }
  return undefined;
}

/** Throws when no ffmpeg is found, or when `override` (CHORUS_FFMPEG) names no executable file. */
export function resolveFfmpeg(override = process.env.CHORUS_FFMPEG ?? ''): FfmpegBinary {
  if (override.trim() !== '') {
    if (!isExecutable(override)) throw new Error(`CHORUS_FFMPEG=${JSON.stringify(override)} is not an executable file`);
    return { path: override, source: 'CHORUS_FFMPEG' };
  }
  const staticBinary = fromPackage('ffmpeg-static', (m) => m);
  if (staticBinary) return { path: staticBinary, source: 'ffmpeg-static' };
  const installer = fromPackage('@ffmpeg-installer/ffmpeg', (m) => (m as { path?: unknown }).path);
  if (installer) return { path: installer, source: '@ffmpeg-installer/ffmpeg' };
  const system = onPath();
  if (system) return { path: system, source: 'PATH' };
  throw new Error('no ffmpeg found: set CHORUS_FFMPEG, install ffmpeg-static or @ffmpeg-installer/ffmpeg, or put ffmpeg on PATH');
}

const REPORTED_DURATION = /Duration: (?:(\d+):(\d\d):(\d\d(?:\.\d+)?)|N\/A)/;

/** Whether ffmpeg's log has described its input: its `Duration:` line, N/A included (ffmpeg prints it before any output). */
export function describesInput(text: string): boolean {
  return REPORTED_DURATION.test(text);
}

/** Seconds of the input as ffmpeg reports it (`Duration: HH:MM:SS.ss`); undefined if absent or N/A. */
export function reportedDuration(text: string): number | undefined {
  const m = REPORTED_DURATION.exec(text);
  if (!m || m[1] === undefined) return undefined;
  return Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]);
}

/** Variables by which ffmpeg would pick another proxy, or none; they are not passed on. */
const PROXY_VARIABLES = new Set(['http_proxy', 'https_proxy', 'no_proxy', 'all_proxy']);

/** ffmpeg's environment with `proxyUrl` (an egress proxy) as its only way out over http. */
export function ffmpegEnv(proxyUrl: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) if (!PROXY_VARIABLES.has(name.toLowerCase())) env[name] = value;
  env.http_proxy = proxyUrl;
  return env;
}
