/**
 * GET /v4/loadtracks?identifier=…: an identifier to Lavalink's load result, under the engine's own
 * source rules (engine/source.ts: media root confinement, remote address policy, tone syntax):
 *
 *   tone:<hz>[?seconds=n]     sourceName "tone", titled by its frequency
 *   http(s)://…               sourceName "http", info from the stream's tags (ffmpeg -i)
 *   a path or file://…        sourceName "local", the same, only under CHORUS_MEDIA_ROOT
 *   ytsearch: ytmsearch: scsearch: and site URLs   need yt-dlp, which chorus does not run yet: error
 *
 * Lavalink's answers: `track` with the track, `empty` when nothing matches (no such file, a
 * scheme no source takes), `error` with an exception { message, severity, cause } when a source
 * refuses (confinement) or cannot be read.
 */
import path from 'node:path';
import type { Config } from '../../shared/config.js';
import { resolveFfmpeg } from '../../shared/ffmpeg.js';
import { SourceError, sourceResolver, type FfmpegInput } from '../engine/source.js';
import { probe, ProbeError } from './probe.js';
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
}

/** The engine's source rules under `config`, with ffmpeg found on first use. */
export function trackLoader(config: Config): TrackLoader {
  const resolve = sourceResolver({ mediaRoot: config.CHORUS_MEDIA_ROOT, remoteAllow: config.CHORUS_REMOTE_ALLOW });
  let ffmpeg: string | undefined;
  return {
    resolve,
    get ffmpeg() {
      return (ffmpeg ??= resolveFfmpeg(config.CHORUS_FFMPEG).path);
    },
  };
}

/** The sources chorus plays, as GET /v4/info names them. */
export const SOURCE_NAMES = ['local', 'http', 'tone'] as const;
const SEARCH_PREFIX = /^(ytsearch|ytmsearch|scsearch):/i;
const SCHEME = /^([a-z][a-z0-9+.-]*):/i;
const UNKNOWN_TITLE = 'Unknown title';
const UNKNOWN_AUTHOR = 'Unknown artist';

export const EMPTY: LoadResult = { loadType: 'empty', data: {} };

/** A track as the REST API shows it, encoded as Lavalink 4 encodes. */
export function lavalinkTrack(info: TrackInfo, sourceData: Buffer = Buffer.alloc(0)): LavalinkTrack {
  return { encoded: encodeTrack({ version: TRACK_VERSION, info, sourceData }), info: { ...info, isSeekable: !info.isStream }, pluginInfo: {} };
}

function failure(message: string, severity: Severity, cause: string): LoadResult {
  return { loadType: 'error', data: { message, severity, cause } };
}

export async function loadTracks(loader: TrackLoader, identifier: string): Promise<LoadResult> {
  if (SEARCH_PREFIX.test(identifier)) {
    return failure('searches need yt-dlp, which this chorus node does not run', 'common', `no source for "${identifier.split(':')[0]}:"`);
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
    probed = await probe(loader.ffmpeg, input.args);
  } catch (err) {
    if (!(err instanceof ProbeError)) throw err;
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
