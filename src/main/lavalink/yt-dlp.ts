/**
 * Site URLs and searches through yt-dlp (Debian's package; CHORUS_YTDLP), for Lavalink's
 * loadtracks and for playing what they found:
 *
 *   search   yt-dlp --flat-playlist --dump-single-json "ytsearch10:<query>"  → entries
 *   a page   yt-dlp --flat-playlist --dump-single-json <url>                → one video or a playlist
 *   play     yt-dlp -f bestaudio/best --get-url <page url>                  → the media URL, which
 *            then goes through the engine's source rules like any http(s) URL
 *
 * yt-dlp reaches the network only through a guarded proxy (egress-proxy.ts with tunnels): every
 * host it asks for, redirects included, gets the remote-source check (no loopback or private
 * address unless CHORUS_REMOTE_ALLOW lists it). Each run is bounded by CHORUS_YTDLP_TIMEOUT_MS
 * and killed when the request that wanted it goes away.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export class YtDlpError extends Error {
  override name = 'YtDlpError';
}

/** What chorus reads of yt-dlp's JSON (a video, or a playlist/search with entries). */
export interface YtDlpInfo {
  _type?: string;
  id?: string;
  title?: string;
  uploader?: string;
  channel?: string;
  artist?: string;
  creator?: string;
  duration?: number;
  is_live?: boolean;
  webpage_url?: string;
  original_url?: string;
  url?: string;
  thumbnail?: string;
  thumbnails?: { url?: string }[];
  extractor_key?: string;
  ie_key?: string;
  entries?: YtDlpInfo[];
}

const MAX_OUTPUT = 8 * 1024 * 1024;
/** Search results asked for, as Lavalink's YouTube source gives about as many. */
export const SEARCH_RESULTS = 10;

/** The yt-dlp binary: CHORUS_YTDLP's path, `off` for none, empty for yt-dlp on PATH if any. */
export function resolveYtDlp(setting: string): string | undefined {
  const value = setting.trim();
  if (value === 'off') return undefined;
  if (value !== '') {
    if (!isExecutable(value)) throw new Error(`CHORUS_YTDLP=${JSON.stringify(value)} is not an executable file`);
    return value;
  }
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && isExecutable(path.join(dir, 'yt-dlp'))) return path.join(dir, 'yt-dlp');
  }
  return undefined;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

export class YtDlp {
  constructor(
    readonly binary: string,
    private readonly proxyUrl: () => Promise<string>,
    private readonly timeoutMs: number,
  ) {}

  /** The JSON of a search (`ytsearch10:…`, `scsearch10:…`) or a page; entries stay flat. */
  async info(target: string, signal?: AbortSignal): Promise<YtDlpInfo> {
    const out = await this.run(['--flat-playlist', '--dump-single-json', '--', target], signal);
    try {
      return JSON.parse(out) as YtDlpInfo;
    } catch {
      throw new YtDlpError('yt-dlp printed no JSON');
    }
  }

  /** The media URL of a page, for the engine to play. */
  async mediaUrl(pageUrl: string, signal?: AbortSignal): Promise<string> {
    const out = (await this.run(['-f', 'bestaudio/best', '--get-url', '--no-playlist', '--', pageUrl], signal)).trim().split('\n')[0] ?? '';
    if (!/^https?:\/\//i.test(out)) throw new YtDlpError('yt-dlp gave no http(s) media URL for the page');
    return out;
  }

  private async run(args: string[], signal?: AbortSignal): Promise<string> {
    const proxy = await this.proxyUrl();
    // Cancelled while the proxy started: no process for an answer nobody wants.
    if (signal?.aborted) throw new YtDlpError('the request went away');
    const common = ['--ignore-config', '--no-cache-dir', '--no-warnings', '--no-progress', '--socket-timeout', String(Math.ceil(this.timeoutMs / 1000)), '--proxy', proxy];
    return new Promise((resolve, reject) => {
      execFile(
        this.binary,
        [...common, ...args],
        { timeout: this.timeoutMs, maxBuffer: MAX_OUTPUT, encoding: 'utf8', killSignal: 'SIGKILL', ...(signal ? { signal } : {}) },
        (err, stdout, stderr) => {
          if (!err) return resolve(stdout);
          if ((err as { killed?: boolean }).killed && !signal?.aborted) return reject(new YtDlpError(`yt-dlp took more than ${this.timeoutMs / 1000} s`));
          if (signal?.aborted) return reject(new YtDlpError('the request went away'));
          const line = stderr.split('\n').find((l) => l.startsWith('ERROR:')) ?? stderr.trim().split('\n').pop() ?? err.message;
          reject(new YtDlpError(line.replace(/^ERROR:\s*/, '').slice(0, 300)));
        },
      );
    });
  }
}
