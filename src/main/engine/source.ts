/**
 * A play's `url` to ffmpeg input arguments, and the confinement that comes with it:
 *
 *   tone:<hz>[?seconds=<n>]  lavfi sine, stereo; ffmpeg may open no protocol at all
 *   a path or file:// URL    only a regular file whose real path lies under the real path of
 *                            CHORUS_MEDIA_ROOT (no `..`, no symlink out); ffmpeg may open `file`
 *   http(s)://               the host is resolved first and refused if any address is loopback,
 *                            private, link-local, unique-local (or otherwise not public, also
 *                            when an IPv6 address embeds such an IPv4 one) unless
 *                            CHORUS_REMOTE_ALLOW lists it; ffmpeg may open http,tcp only, and
 *                            reaches the source through the engine's egress proxy, which applies
 *                            the same check (remoteGuard) to every request ffmpeg makes
 *
 * Each input also says whether it looks like Opus (`opus`): a file by its first bytes (an Ogg
 * stream opening with OpusHead, or Matroska/WebM naming the A_OPUS codec), a URL by its name
 * (`.opus`, `.webm`, `.weba`, or a `mime=audio/webm` or `audio/opus` query as YouTube's media URLs
 * carry). It is only a hint, for the pipeline to try passing the Opus through (pipeline.ts); what
 * ffmpeg then gives is checked.
 *
 * `-protocol_whitelist` is what keeps `concat:`, `subfile:`, `data:`, `file:`, `tls`,
 * `httpproxy` and the rest out of ffmpeg, also when a remote playlist names them. How https
 * reaches ffmpeg through the proxy: see egress-proxy.ts.
 */
import dns from 'node:dns/promises';
import { accessSync, constants, mkdirSync, statSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { SCHEMA } from '../../shared/config.js';
import { proxiedUrl } from './egress-proxy.js';
import { cutText } from '../../shared/cut-text.js';
import { startsWithOggCapture } from '../../shared/ogg.js';

export class SourceError extends Error {
  override name = 'SourceError';
  /** 400: not understood, 403: refused by confinement, 404: no such file. */
  constructor(
    message: string,
    readonly status: 400 | 403 | 404,
  ) {
    super(message);
  }
}

export interface FfmpegInput {
  kind: 'tone' | 'file' | 'remote';
  /** Input arguments, `-protocol_whitelist` included, ending with `-i <input>`; `-ss` goes before them. */
  args: string[];
  /** Seconds of audio, when known without opening the source. */
  duration?: number;
  /** The container looks like Opus: the pipeline may try to pass its packets through. */
  opus?: boolean;
}

export interface SourcePolicy {
  mediaRoot: string;
  remoteAllow: readonly string[];
  /** Host name to addresses; dns.lookup unless a test supplies one. */
  lookup?: (host: string) => Promise<string[]>;
}

export const DEFAULT_TONE_SECONDS = 30;

/**
 * Checks the media root before anything starts, so a wrong CHORUS_MEDIA_ROOT is one line at start
 * rather than a 404 on the first play. chorus's own default (`media/` in the working directory)
 * is made when missing; a root the user chose must exist. Returns the root as an absolute path.
 */
export function prepareMediaRoot(root: string): string {
  const absolute = path.resolve(root);
  if (root === SCHEMA.CHORUS_MEDIA_ROOT.defaultValue?.()) mkdirSync(absolute, { recursive: true });
  let isDir: boolean;
  try {
    isDir = statSync(absolute).isDirectory();
  } catch {
    throw new Error(`CHORUS_MEDIA_ROOT ${absolute} does not exist: create it, or point CHORUS_MEDIA_ROOT at your media folder`);
  }
  if (!isDir) throw new Error(`CHORUS_MEDIA_ROOT ${absolute} is not a directory`);
  try {
    accessSync(absolute, constants.R_OK | constants.X_OK);
  } catch {
    throw new Error(`CHORUS_MEDIA_ROOT ${absolute} cannot be read by this user`);
  }
  return absolute;
}
const MAX_TONE_SECONDS = 86_400;
const LOOKUP_TIMEOUT_MS = 5000;
const SCHEME = /^([a-z][a-z0-9+.-]*):/i;
const TONE = /^tone:(\d+(?:\.\d+)?)(?:\?seconds=(\d+(?:\.\d+)?))?$/;

/** Most of a url or path an error message repeats: the caller sent it, a glimpse says which. */
const MAX_SHOWN_CHARS = 200;

/** Resolves play URLs under one policy (the allow list is parsed once). */
export function sourceResolver(policy: SourcePolicy): (url: string) => Promise<FfmpegInput> {
  const guard = remoteGuard(policy);
  return (url) => resolveSource(url, policy.mediaRoot, guard);
}

/**
 * A remote host's addresses once checked: all of them public, or the host (or each address) on
 * CHORUS_REMOTE_ALLOW. Throws a SourceError: 403 refused, 400 unresolvable.
 */
export type RemoteGuard = (host: string) => Promise<string[]>;

export function remoteGuard(policy: Pick<SourcePolicy, 'remoteAllow' | 'lookup'>): RemoteGuard {
  const allow = allowList(policy.remoteAllow);
  const lookup = policy.lookup ?? (async (h: string) => (await dns.lookup(h, { all: true })).map((a) => a.address));
  return async (host) => {
    const addresses = net.isIP(host) ? [host] : await lookupAll(host, lookup);
    if (!allow.names.has(host.toLowerCase())) {
      const refused = addresses.find((a) => !isPublic(a) && !allow.addresses.check(canonical(a), family(canonical(a))));
      if (refused !== undefined) {
        throw new SourceError(
          `remote host ${cutText(host, MAX_SHOWN_CHARS)} resolves to ${refused}, a non-public address; list it in CHORUS_REMOTE_ALLOW to allow it`,
          403,
        );
      }
    }
    return addresses;
  };
}

interface AllowList {
  names: Set<string>;
  addresses: net.BlockList;
}

async function resolveSource(url: string, mediaRoot: string, guard: RemoteGuard): Promise<FfmpegInput> {
  const shown = cutText(url, MAX_SHOWN_CHARS);
  const scheme = SCHEME.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'tone') return tone(url, shown);
  if (scheme === 'http' || scheme === 'https') return remote(url, shown, guard);
  if (scheme === 'file') {
    let filePath: string;
    try {
      filePath = new URL(url).pathname;
    } catch {
      throw new SourceError(`not a valid file URL: ${shown}`, 400);
    }
    return file(decodeURIComponent(filePath), shown, mediaRoot);
  }
  if (scheme !== undefined) {
    throw new SourceError(`unsupported source scheme "${scheme}:"; use tone:, http(s):// or a file path`, 400);
  }
  return file(url, shown, mediaRoot);
}

function tone(url: string, shown: string): FfmpegInput {
  const m = TONE.exec(url);
  const hz = Number(m?.[1]);
  const seconds = m?.[2] === undefined ? DEFAULT_TONE_SECONDS : Number(m[2]);
  if (!m || !(hz >= 1 && hz < 24_000) || !(seconds > 0 && seconds <= MAX_TONE_SECONDS)) {
    throw new SourceError(
      `bad tone "${shown}": expected tone:<hz>[?seconds=<n>] with 1 <= hz < 24000 and 0 < n <= ${MAX_TONE_SECONDS}`,
      400,
    );
  }
  return {
    kind: 'tone',
    args: ['-protocol_whitelist', '', '-f', 'lavfi', '-i', `sine=frequency=${hz}:sample_rate=48000:duration=${seconds}`],
    duration: seconds,
  };
}

async function file(requested: string, shown: string, mediaRoot: string): Promise<FfmpegInput> {
  if (requested === '' || requested.includes('\0')) throw new SourceError('empty or invalid file path', 400);
  if (requested.split(/[\\/]/).includes('..')) throw new SourceError(`path may not contain "..": ${shown}`, 403);
  const root = await fs.realpath(mediaRoot).catch(() => {
    throw new SourceError(`CHORUS_MEDIA_ROOT ${mediaRoot} does not exist`, 404);
  });
  let real: string;
  try {
    real = await fs.realpath(path.resolve(root, requested));
  } catch {
    throw new SourceError(`no such file under the media root: ${shown}`, 404);
  }
  if (real !== root && !real.startsWith(root.endsWith(path.sep) ? root : root + path.sep)) {
    throw new SourceError(`file is outside the media root: ${shown}`, 403);
  }
  if (!(await fs.stat(real)).isFile()) throw new SourceError(`not a regular file: ${shown}`, 400);
  return { kind: 'file', args: ['-protocol_whitelist', 'file', '-i', `file:${real}`], opus: await startsLikeOpus(real) };
}

/** Bytes of a file read to tell its codec: WebM's Tracks element comes within its first few KiB. */
const SNIFF_BYTES = 64 * 1024;
const EBML_MAGIC = 0x1a45dfa3;

/** An Ogg stream whose first packet is OpusHead, or Matroska/WebM naming the A_OPUS codec. */
async function startsLikeOpus(file: string): Promise<boolean> {
  const handle = await fs.open(file, 'r');
  try {
    const buf = Buffer.alloc(SNIFF_BYTES);
    const head = buf.subarray(0, (await handle.read(buf, 0, SNIFF_BYTES, 0)).bytesRead);
    // The first page: a 27-byte header, up to 255 lacing values, then the OpusHead packet.
    if (startsWithOggCapture(head)) return head.subarray(0, 27 + 255 + 8).includes('OpusHead');
    return head.length >= 4 && head.readUInt32BE(0) === EBML_MAGIC && head.includes('A_OPUS');
  } finally {
    await handle.close();
  }
}

const OPUS_URL_PATH = /\.(opus|webm|weba)$/i;
const OPUS_MIME = /^audio\/(webm|opus)\b/i;

/** A URL named like Opus: Ogg files on the web are mostly Vorbis, so `.ogg` is not taken as a hint. */
function namedLikeOpus(url: URL): boolean {
  return OPUS_URL_PATH.test(url.pathname) || OPUS_MIME.test(url.searchParams.get('mime') ?? '');
}

async function remote(url: string, shown: string, guard: RemoteGuard): Promise<FfmpegInput> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new SourceError(`not a valid URL: ${shown}`, 400);
  }
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '') throw new SourceError(`URL has no host: ${shown}`, 400);
  // Checked here too, so a refused source is a 403 to the caller rather than an ffmpeg error.
  await guard(host);
  // ffmpeg gets the URL as parsed here, so it cannot read another host out of it
  // (`http://a.example\@10.0.0.1/` is host a.example to a WHATWG parser, 10.0.0.1 to ffmpeg's).
  return { kind: 'remote', args: ['-protocol_whitelist', 'http,tcp', ...RECONNECT_ARGS, '-i', proxiedUrl(parsed)], opus: namedLikeOpus(parsed) };
}

/**
 * ffmpeg's own recovery, for what it can do without a new process: a connection that drops is
 * opened again at the byte reached (a Range request; only for a source that takes them), and a
 * connection silent for 15 s is an error rather than a wait forever. What it cannot recover ends
 * the pipeline, and the manager opens the source again at the frame reached.
 */
const RECONNECT_ARGS = ['-reconnect', '1', '-reconnect_delay_max', '4', '-rw_timeout', '15000000'];

async function lookupAll(host: string, lookup: (host: string) => Promise<string[]>): Promise<string[]> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`lookup timed out after ${LOOKUP_TIMEOUT_MS} ms`)), LOOKUP_TIMEOUT_MS);
  });
  try {
    const addresses = await Promise.race([lookup(host), timeout]);
    if (addresses.length === 0) throw new Error('no addresses');
    return addresses;
  } catch (err) {
    throw new SourceError(`cannot resolve host ${cutText(host, MAX_SHOWN_CHARS)}: ${(err as Error).message}`, 400);
  } finally {
    clearTimeout(timer);
  }
}

/** Every range a remote source may not reach: loopback, private, link-local, unique-local and other non-public space. */
const NON_PUBLIC = new net.BlockList();
for (const [address, prefix] of [
  ['0.0.0.0', 8], // "this network": 0.0.0.0 reaches the local host
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved and broadcast
] as const) {
  NON_PUBLIC.addSubnet(address, prefix, 'ipv4');
}
for (const [address, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b:1::', 48], // local-use NAT64
  ['100::', 64], // discard-only
  ['2001:db8::', 32], // documentation
  ['fc00::', 7], // unique-local
  ['fe80::', 10], // link-local
  ['ff00::', 8], // multicast
] as const) {
  NON_PUBLIC.addSubnet(address, prefix, 'ipv6');
}

/** An IPv4-mapped IPv6 address (::ffff:a.b.c.d or ::ffff:xxxx:xxxx) as plain IPv4; others unchanged. */
function canonical(address: string): string {
  const m = /^::ffff:(?:(\d+\.\d+\.\d+\.\d+)|([0-9a-f]{1,4}):([0-9a-f]{1,4}))$/i.exec(address);
  if (!m) return address;
  if (m[1]) return m[1];
  const hi = parseInt(m[2]!, 16);
  const lo = parseInt(m[3]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

function family(address: string): 'ipv4' | 'ipv6' {
  return net.isIPv6(address) ? 'ipv6' : 'ipv4';
}

/** The eight 16-bit groups of an IPv6 address (one net.isIPv6 accepts). */
function ipv6Groups(address: string): number[] {
  let text = address.toLowerCase().replace(/%.*$/, '');
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const front = head === '' ? [] : head.split(':');
  const back = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? 0 : 8 - front.length - back.length;
  return [...front, ...Array<string>(zeros).fill('0'), ...back].map((g) => parseInt(g, 16));
}

const ipv4Of = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;

/**
 * The IPv4 addresses an IPv6 address carries, each of which it may reach: IPv4-compatible
 * (::a.b.c.d), IPv4-mapped (::ffff:a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d), NAT64
 * (64:ff9b::/96), 6to4 (2002::/16) and Teredo (2001::/32: server, and client XOR-ed).
 */
function embeddedIPv4(address: string): string[] {
  const g = ipv6Groups(address);
  const zero = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  if (zero(0, 5) && (g[5] === 0 || g[5] === 0xffff)) return [ipv4Of(g[6]!, g[7]!)];
  if (zero(0, 4) && g[4] === 0xffff && g[5] === 0) return [ipv4Of(g[6]!, g[7]!)];
  if (g[0] === 0x64 && g[1] === 0xff9b && zero(2, 6)) return [ipv4Of(g[6]!, g[7]!)];
  if (g[0] === 0x2002) return [ipv4Of(g[1]!, g[2]!)];
  if (g[0] === 0x2001 && g[1] === 0) return [ipv4Of(g[2]!, g[3]!), ipv4Of(g[6]! ^ 0xffff, g[7]! ^ 0xffff)];
  return [];
}

/** Not loopback, private or otherwise non-public: neither the address nor an IPv4 address it embeds. */
export function isPublic(address: string): boolean {
  const a = canonical(address);
  if (NON_PUBLIC.check(a, family(a))) return false;
  return family(a) === 'ipv4' || embeddedIPv4(a).every((v4) => !NON_PUBLIC.check(v4, 'ipv4'));
}

/** CHORUS_REMOTE_ALLOW entries: IP addresses, CIDR ranges (address/bits), or host names. */
function allowList(entries: readonly string[]): AllowList {
  const names = new Set<string>();
  const addresses = new net.BlockList();
  for (const entry of entries) {
    const [ip = '', bits] = entry.split('/');
    const address = canonical(ip);
    if (net.isIP(address) === 0) names.add(entry.toLowerCase());
    else if (bits === undefined) addresses.addAddress(address, family(address));
    else {
      const prefix = Number(bits);
      if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family(address) === 'ipv6' ? 128 : 32)) {
        throw new Error(`CHORUS_REMOTE_ALLOW entry ${JSON.stringify(entry)} is not a valid CIDR range`);
      }
      addresses.addSubnet(address, prefix, family(address));
    }
  }
  return { names, addresses };
}
