/**
 * A play's `url` to ffmpeg input arguments, and the confinement that comes with it:
 *
 *   tone:<hz>[?seconds=<n>]  lavfi sine, stereo; ffmpeg may open no protocol at all
 *   a path or file:// URL    only a regular file whose real path lies under the real path of
 *                            CHORUS_MEDIA_ROOT (no `..`, no symlink out); ffmpeg may open `file`
 *   http(s)://               the host is resolved first and refused if any address is loopback,
 *                            private, link-local, unique-local (or otherwise not public) unless
 *                            CHORUS_REMOTE_ALLOW lists it; ffmpeg may open http,https,tcp,tls
 *
 * `-protocol_whitelist` is what keeps `concat:`, `subfile:`, `data:`, `file:` and the rest out of
 * ffmpeg, also when a remote playlist names them. Not covered: DNS answers that change between
 * this check and ffmpeg's own lookup, and HTTP redirects ffmpeg follows to another host.
 */
import dns from 'node:dns/promises';
import { accessSync, constants, mkdirSync, statSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { SCHEMA } from '../../shared/config.js';

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

/** Resolves play URLs under one policy (the allow list is parsed once). */
export function sourceResolver(policy: SourcePolicy): (url: string) => Promise<FfmpegInput> {
  const allow = allowList(policy.remoteAllow);
  const lookup = policy.lookup ?? (async (h: string) => (await dns.lookup(h, { all: true })).map((a) => a.address));
  return (url) => resolveSource(url, policy.mediaRoot, allow, lookup);
}

interface AllowList {
  names: Set<string>;
  addresses: net.BlockList;
}

async function resolveSource(
  url: string,
  mediaRoot: string,
  allow: AllowList,
  lookup: (host: string) => Promise<string[]>,
): Promise<FfmpegInput> {
  const scheme = SCHEME.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'tone') return tone(url);
  if (scheme === 'http' || scheme === 'https') return remote(url, allow, lookup);
  if (scheme === 'file') {
    let filePath: string;
    try {
      filePath = new URL(url).pathname;
    } catch {
      throw new SourceError(`not a valid file URL: ${url}`, 400);
    }
    return file(decodeURIComponent(filePath), url, mediaRoot);
  }
  if (scheme !== undefined) {
    throw new SourceError(`unsupported source scheme "${scheme}:"; use tone:, http(s):// or a file path`, 400);
  }
  return file(url, url, mediaRoot);
}

function tone(url: string): FfmpegInput {
  const m = TONE.exec(url);
  const hz = Number(m?.[1]);
  const seconds = m?.[2] === undefined ? DEFAULT_TONE_SECONDS : Number(m[2]);
  if (!m || !(hz >= 1 && hz < 24_000) || !(seconds > 0 && seconds <= MAX_TONE_SECONDS)) {
    throw new SourceError(
      `bad tone "${url}": expected tone:<hz>[?seconds=<n>] with 1 <= hz < 24000 and 0 < n <= ${MAX_TONE_SECONDS}`,
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
  return { kind: 'file', args: ['-protocol_whitelist', 'file', '-i', `file:${real}`] };
}

async function remote(url: string, allow: AllowList, lookup: (host: string) => Promise<string[]>): Promise<FfmpegInput> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new SourceError(`not a valid URL: ${url}`, 400);
  }
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  if (host === '') throw new SourceError(`URL has no host: ${url}`, 400);
  const addresses = net.isIP(host) ? [host] : await lookupAll(host, lookup);
  if (!allow.names.has(host.toLowerCase())) {
    const refused = addresses.find((a) => !isPublic(a) && !allow.addresses.check(canonical(a), family(canonical(a))));
    if (refused !== undefined) {
      throw new SourceError(
        `remote host ${host} resolves to ${refused}, a non-public address; list it in CHORUS_REMOTE_ALLOW to allow it`,
        403,
      );
    }
  }
  // ffmpeg gets the URL as parsed here, so it cannot read another host out of it
  // (`http://a.example\@10.0.0.1/` is host a.example to a WHATWG parser, 10.0.0.1 to ffmpeg's).
  return { kind: 'remote', args: ['-protocol_whitelist', 'http,https,tcp,tls', '-i', parsed.href] };
}

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
    throw new SourceError(`cannot resolve host ${host}: ${(err as Error).message}`, 400);
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

export function isPublic(address: string): boolean {
  const a = canonical(address);
  return !NON_PUBLIC.check(a, family(a));
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
