/**
 * GET /v4/loadtracks?identifier=…: an identifier to Lavalink's load result, under the engine's own
 * source rules (engine/source.ts: media root confinement, remote address policy, tone syntax):
 *
 *   tone:<hz>[?seconds=n]     sourceName "tone", titled by its frequency
 *   http(s)://…               sourceName "http", info from the stream's tags (ffmpeg -i)
 *   a path or file://…        sourceName "local", the same, only under CHORUS_MEDIA_ROOT
 *   ytsearch: ytmsearch: scsearch:   yt-dlp's search (yt-dlp.ts); without yt-dlp: error
 *   a page ffmpeg cannot read        yt-dlp's extractors: a track or a playlist; without yt-dlp: error
 *
 * Lavalink's answers: `track` with the track, `empty` when nothing matches (no such file, a
 * scheme no source takes), `error` with an exception { message, severity, cause } when a source
 * refuses (confinement) or cannot be read.
 */
import path from 'node:path';
import { ffmpegEnv } from '../../shared/ffmpeg.js';
import { SourceError, type FfmpegInput } from '../engine/source.js';
import { probe, ProbeError } from './probe.js';
import { SEARCH_RESULTS, YtDlpError, type YtDlp, type YtDlpInfo } from './yt-dlp.js';
import { encodeTrack, LONG_MAX, probeSourceData, TRACK_VERSION, type TrackInfo } from './track-codec.js';

export interface LavalinkTrack {
  encoded: string;
  info: TrackInfo & { isSeekable: boolean };
  pluginInfo: Record<string, never>;
  userData?: unknown;
}

export type Severity = 'common' | 'suspicious' | 'fault';

export interface LavalinkException {
  message: string;
  severity: Severity;
  cause: string;
}

export type LoadResult =
  | { loadType: 'track'; data: LavalinkTrack }
  | { loadType: 'playlist'; data: { info: { name: string; selectedTrack: number }; pluginInfo: object; tracks: LavalinkTrack[] } }
  | { loadType: 'search'; data: LavalinkTrack[] }
  | { loadType: 'empty'; data: Record<string, never> }
  | { loadType: 'error'; data: LavalinkException };

export interface TrackLoader {
  /** The engine's source rules: an identifier to ffmpeg input arguments. */
  resolve(url: string): Promise<FfmpegInput>;
  ffmpeg: string;
  /** The guarded egress proxy (egress-proxy.ts) through which ffmpeg probes and yt-dlp reach remote hosts. */
  proxyUrl(): Promise<string>;
  /** Site URLs and searches, when yt-dlp is there. */
  ytDlp?: YtDlp;
}

/** The sources chorus plays without yt-dlp, as GET /v4/info names them. */
export const SOURCE_NAMES = ['local', 'http', 'tone'] as const;
/** The sourceNames of tracks found by yt-dlp: played by asking yt-dlp for the page's media URL. */
export const YTDLP_SOURCE_NAMES = ['youtube', 'soundcloud', 'yt-dlp'] as const;
const SEARCH_PREFIX = /^(ytsearch|ytmsearch|scsearch):/i;
/** yt-dlp has no YouTube Music search: ytmsearch searches YouTube. */
const YTDLP_SEARCH: Record<string, string> = { ytsearch: 'ytsearch', ytmsearch: 'ytsearch', scsearch: 'scsearch' };
const SCHEME = /^([a-z][a-z0-9+.-]*):/i;
const UNKNOWN_TITLE = 'Unknown title';
const UNKNOWN_AUTHOR = 'Unknown artist';

async function loadPage(ytDlp: YtDlp, url: string, signal: AbortSignal | undefined): Promise<LoadResult> {
  try {
    return ytDlpResult(await ytDlp.info(url, signal), false);
  } catch (err) {
    if (err instanceof YtDlpError) return failure(`neither ffmpeg nor yt-dlp can read the page: ${err.message}`, 'suspicious', `YtDlpError: ${err.message}`);
    throw err;
  }
}

export const EMPTY: LoadResult = { loadType: 'empty', data: {} };

/** A track as the REST API shows it, encoded as Lavalink 4 encodes. */
export function lavalinkTrack(info: TrackInfo, sourceData: Buffer = Buffer.alloc(0)): LavalinkTrack {
  return { encoded: encodeTrack({ version: TRACK_VERSION, info, sourceData }), info: { ...info, isSeekable: !info.isStream }, pluginInfo: {} };
}

function failure(message: string, severity: Severity, cause: string): LoadResult {
  return { loadType: 'error', data: { message, severity, cause } };
}

export function sourceNames(loader: TrackLoader): string[] {
  return loader.ytDlp ? [...SOURCE_NAMES, ...YTDLP_SOURCE_NAMES] : [...SOURCE_NAMES];
}

/** A track yt-dlp found: its page is what the track plays (through yt-dlp again, at play time). */
export function ytDlpTrack(info: YtDlpInfo): LavalinkTrack | undefined {
  const uri = info.webpage_url ?? info.original_url ?? info.url;
  if (!uri || !/^https?:\/\//i.test(uri)) return undefined;
  const extractor = (info.extractor_key ?? info.ie_key ?? '').toLowerCase();
  const sourceName = extractor.startsWith('youtube') ? 'youtube' : extractor.startsWith('soundcloud') ? 'soundcloud' : 'yt-dlp';
  const isStream = info.is_live === true || info.duration === undefined || info.duration === null;
  return lavalinkTrack({
    title: info.title ?? UNKNOWN_TITLE,
    author: info.uploader ?? info.channel ?? info.artist ?? info.creator ?? UNKNOWN_AUTHOR,
    length: isStream ? Number(LONG_MAX) : Math.round(info.duration! * 1000),
    identifier: info.id ?? uri,
    isStream,
    uri,
    artworkUrl: info.thumbnail ?? info.thumbnails?.at(-1)?.url ?? null,
    isrc: null,
    sourceName,
    position: 0,
  });
}

function ytDlpResult(info: YtDlpInfo, search: boolean): LoadResult {
  if (search || info.entries) {
    const tracks = (info.entries ?? []).map(ytDlpTrack).filter((t): t is LavalinkTrack => t !== undefined);
    if (tracks.length === 0) return EMPTY;
    if (search) return { loadType: 'search', data: tracks };
    return { loadType: 'playlist', data: { info: { name: info.title ?? UNKNOWN_TITLE, selectedTrack: -1 }, pluginInfo: {}, tracks } };
  }
  const track = ytDlpTrack(info);
  return track ? { loadType: 'track', data: track } : EMPTY;
}

export async function loadTracks(loader: TrackLoader, identifier: string, signal?: AbortSignal): Promise<LoadResult> {
  const search = SEARCH_PREFIX.exec(identifier);
  if (search) {
    const prefix = search[1]!.toLowerCase();
    if (!loader.ytDlp) return failure('searches need yt-dlp, which this chorus node does not have', 'common', `no source for "${prefix}:"`);
    const query = identifier.slice(search[0].length).trim();
    if (query === '') return EMPTY;
    try {
      return ytDlpResult(await loader.ytDlp.info(`${YTDLP_SEARCH[prefix]}${SEARCH_RESULTS}:${query}`, signal), true);
    } catch (err) {
      if (err instanceof YtDlpError) return failure(err.message, 'fault', `YtDlpError: ${err.message}`);
      throw err;
    }
  }
  const scheme = SCHEME.exec(identifier)?.[1]?.toLowerCase();
  if (scheme !== undefined && scheme !== 'tone' && scheme !== 'http' && scheme !== 'https' && scheme !== 'file') return EMPTY;
  let input: FfmpegInput;
  try {
    input = await loader.resolve(identifier);
  } catch (err) {
    if (!(err instanceof SourceError)) throw err;
    if (err.status === 404) return EMPTY;
    return failure(err.message, 'common', `SourceError: ${err.message}`);
  }
  if (input.kind === 'tone') {
    const hz = /^tone:([\d.]+)/.exec(identifier)![1]!;
    return {
      loadType: 'track',
      data: lavalinkTrack({
        title: `Tone ${hz} Hz`,
        author: 'chorus',
        length: Math.round(input.duration! * 1000),
        identifier,
        isStream: false,
        uri: identifier,
        artworkUrl: null,
        isrc: null,
        sourceName: 'tone',
        position: 0,
      }),
    };
  }
  let probed;
  try {
    probed = await probe(loader.ffmpeg, input.args, input.kind === 'remote' ? ffmpegEnv(await loader.proxyUrl()) : undefined);
  } catch (err) {
    if (!(err instanceof ProbeError)) throw err;
    // Not media ffmpeg reads: a page, which yt-dlp's extractors may know.
    if (input.kind === 'remote' && loader.ytDlp) return loadPage(loader.ytDlp, identifier, signal);
    return failure(err.message, 'suspicious', `ProbeError: ${err.message}`);
  }
  const { tags } = probed;
  const isStream = probed.durationMs === undefined;
  const fallbackTitle = input.kind === 'file' ? path.basename(identifier) : UNKNOWN_TITLE;
  const info: TrackInfo = {
    title: tags.title ?? tags['icy-name'] ?? fallbackTitle,
    author: tags.artist ?? tags.album_artist ?? tags.author ?? UNKNOWN_AUTHOR,
    length: isStream ? Number(LONG_MAX) : probed.durationMs!,
    identifier,
    isStream,
    uri: identifier,
    artworkUrl: null,
    isrc: tags.isrc ?? tags.tsrc ?? null,
    sourceName: input.kind === 'file' ? 'local' : 'http',
    position: 0,
  };
  // As lavaplayer's http and local sources: the container's name follows, so Lavalink could decode it too.
  return { loadType: 'track', data: lavalinkTrack(info, probeSourceData(probed.container.split(',')[0]!)) };
}
