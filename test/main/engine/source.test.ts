/**
 * Source resolution and confinement (src/main/engine/source.ts), without running a play; ffmpeg
 * only makes the files whose Opus hint is checked.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPublic, prepareMediaRoot, sourceResolver, SourceError } from '../../../src/main/engine/source.js';
import { resolveFfmpeg } from '../../../src/shared/ffmpeg.js';
import { tempDir } from '../../helpers/chorus-process.js';

let dir: string;
let root: string;
beforeAll(() => {
  dir = tempDir('chorus-source-');
  root = path.join(dir, 'media');
  fs.mkdirSync(path.join(root, 'album'), { recursive: true });
  fs.writeFileSync(path.join(root, 'album', 'song.wav'), 'x');
  fs.writeFileSync(path.join(dir, 'secret.wav'), 'x');
  fs.symlinkSync(path.join(dir, 'secret.wav'), path.join(root, 'escape.wav'));
  fs.symlinkSync(dir, path.join(root, 'outside'));
  fs.symlinkSync(path.join(root, 'album', 'song.wav'), path.join(root, 'alias.wav'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const noLookup = async (host: string): Promise<string[]> => {
  throw new Error(`unexpected lookup of ${host}`);
};

async function refusal(promise: Promise<unknown>): Promise<SourceError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SourceError);
  return err as SourceError;
}

describe('tone sources', () => {
  const resolve = sourceResolver({ mediaRoot: '/nonexistent', remoteAllow: [], lookup: noLookup });

  it('makes a lavfi sine with no protocol allowed and a known duration', async () => {
    expect(await resolve('tone:440')).toEqual({
      kind: 'tone',
      args: ['-protocol_whitelist', '', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000:duration=30'],
      duration: 30,
    });
    expect((await resolve('tone:997.5?seconds=2.5')).duration).toBe(2.5);
  });

  it('refuses malformed tones, including attempts to add filter options', async () => {
    for (const bad of ['tone:', 'tone:0', 'tone:24000', 'tone:440?seconds=0', 'tone:440?seconds=1e9', 'tone:440:amplitude=8', 'tone:440?seconds=1,amovie=/etc/passwd']) {
      expect((await refusal(resolve(bad))).status).toBe(400);
    }
  });
});

describe('file sources', () => {
  const resolver = () => sourceResolver({ mediaRoot: root, remoteAllow: [], lookup: noLookup });

  it('accepts files under the media root by relative, absolute or file: path, on their real path', async () => {
    const real = fs.realpathSync(path.join(root, 'album', 'song.wav'));
    const expected = { kind: 'file', args: ['-protocol_whitelist', 'file', '-i', `file:${real}`], opus: false };
    expect(await resolver()('album/song.wav')).toEqual(expected);
    expect(await resolver()(path.join(root, 'album/song.wav'))).toEqual(expected);
    expect(await resolver()(`file://${path.join(root, 'album/song.wav')}`)).toEqual(expected);
    expect(await resolver()('alias.wav')).toEqual(expected); // a symlink that stays inside
  });

  it('refuses `..`, symlinks that lead out, and paths outside the root with 403', async () => {
    for (const bad of ['../secret.wav', 'album/../../secret.wav', 'escape.wav', 'outside/secret.wav', path.join(dir, 'secret.wav'), 'file:///etc/passwd', '/etc/passwd']) {
      const err = await refusal(resolver()(bad));
      expect(err.status, bad).toBe(403);
    }
  });

  it('answers 404 for a missing file and 400 for a directory', async () => {
    expect((await refusal(resolver()('nope.wav'))).status).toBe(404);
    expect((await refusal(resolver()('album'))).status).toBe(400);
  });

  it('refuses every other scheme, so no ffmpeg protocol can be named directly', async () => {
    for (const bad of ['concat:album/song.wav|album/song.wav', 'subfile:,start,0,end,1,:album/song.wav', 'data:audio/wav;base64,AAAA', 'pipe:0', 'ftp://example.com/a.mp3', 'rtmp://example.com/live', 'unix:/tmp/x.sock']) {
      const err = await refusal(resolver()(bad));
      expect(err.status, bad).toBe(400);
      expect(err.message).toMatch(/unsupported source scheme/);
    }
  });
});

describe('remote sources', () => {
  it('resolves the host and refuses loopback, private, link-local and unique-local addresses', async () => {
    const resolve = sourceResolver({ mediaRoot: root, remoteAllow: [], lookup: noLookup });
    for (const url of [
      'http://127.0.0.1/a.mp3',
      'http://127.1.2.3:8080/a.mp3',
      'http://10.0.0.1/a.mp3',
      'http://172.16.5.4/a.mp3',
      'http://192.168.1.1/a.mp3',
      'http://169.254.169.254/latest/meta-data/',
      'http://0.0.0.0/a.mp3',
      'http://[::1]/a.mp3',
      'http://[fd00::1]/a.mp3',
      'http://[fe80::1]/a.mp3',
      'http://[::ffff:127.0.0.1]/a.mp3',
      'http://2130706433/a.mp3', // 127.0.0.1 as one number
      'http://0x7f.1/a.mp3',
      // IPv6 forms that carry a loopback or private IPv4 address
      'http://[::127.0.0.1]/a.mp3', // IPv4-compatible
      'http://[::ffff:0:127.0.0.1]/a.mp3', // IPv4-translated
      'http://[64:ff9b::127.0.0.1]/a.mp3', // NAT64
      'http://[64:ff9b::a00:1]/a.mp3', // NAT64 of 10.0.0.1, in hex
      'http://[2002:7f00:1::]/a.mp3', // 6to4 of 127.0.0.1
      'http://[2002:c0a8:101::1]/a.mp3', // 6to4 of 192.168.1.1
      'http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/a.mp3', // Teredo, client 127.0.0.1
      'http://[2001:0:a00:1::1]/a.mp3', // Teredo, server 10.0.0.1
    ]) {
      const err = await refusal(resolve(url));
      expect(err.status, url).toBe(403);
    }
  });

  it('refuses a name that resolves to a private address, even if only one of several does', async () => {
    const resolve = sourceResolver({ mediaRoot: root, remoteAllow: [], lookup: async () => ['93.184.216.34', '10.1.2.3'] });
    expect((await refusal(resolve('https://sneaky.example/a.mp3'))).message).toMatch(/10\.1\.2\.3/);
  });

  it('allows public addresses with only http,tcp: https goes to ffmpeg in the egress proxy\'s form', async () => {
    const resolve = sourceResolver({ mediaRoot: root, remoteAllow: [], lookup: async () => ['93.184.216.34'] });
    expect(await resolve('https://radio.example/stream.mp3')).toEqual({
      kind: 'remote',
      args: ['-protocol_whitelist', 'http,tcp', '-reconnect', '1', '-reconnect_delay_max', '4', '-rw_timeout', '15000000', '-i', 'http://radio.example.tls.chorus.invalid/stream.mp3'],
      opus: false,
    });
    expect((await resolve('http://radio.example:8000/live?x=1')).args.at(-1)).toBe('http://radio.example:8000/live?x=1');
    expect((await resolve('https://[2606:2800:220:1::1]:8443/a')).args.at(-1)).toBe('http://2606-2800-220-1--1.ipv6.tls.chorus.invalid:8443/a');
  });

  it('hands ffmpeg the URL as checked, so a parser difference cannot smuggle in another host', async () => {
    const resolve = sourceResolver({ mediaRoot: root, remoteAllow: [], lookup: async () => ['93.184.216.34'] });
    const input = await resolve('http://radio.example\\@127.0.0.1/a.mp3');
    expect(input.args.at(-1)).toBe('http://radio.example/@127.0.0.1/a.mp3');
  });

  it('allows what CHORUS_REMOTE_ALLOW lists: a name, an address or a CIDR range', async () => {
    const lookup = async (host: string) => (host === 'nas.lan' ? ['192.168.1.20'] : ['10.9.9.9']);
    const resolve = sourceResolver({ mediaRoot: root, remoteAllow: ['nas.lan', '127.0.0.1', '10.0.0.0/8'], lookup });
    expect((await resolve('http://nas.lan/a.mp3')).kind).toBe('remote');
    expect((await resolve('http://127.0.0.1:9000/a.mp3')).kind).toBe('remote');
    expect((await resolve('http://other.lan/a.mp3')).kind).toBe('remote');
    expect((await refusal(resolve('http://127.0.0.2/a.mp3'))).status).toBe(403);
    expect((await refusal(resolve('http://192.168.1.20/a.mp3'))).status).toBe(403);
  });

  it('answers 400 for a host that does not resolve', async () => {
    const resolve = sourceResolver({ mediaRoot: root, remoteAllow: [], lookup: async () => [] });
    expect((await refusal(resolve('http://nowhere.invalid/a.mp3'))).status).toBe(400);
  });

  it('classifies addresses', () => {
    expect(isPublic('8.8.8.8')).toBe(true);
    expect(isPublic('2001:4860:4860::8888')).toBe(true);
    expect(isPublic('100.64.0.1')).toBe(false);
    expect(isPublic('::ffff:7f00:1')).toBe(false);
    expect(isPublic('::ffff:8.8.8.8')).toBe(true);
    expect(isPublic('::ffff:0:7f00:1')).toBe(false);
    expect(isPublic('64:ff9b::8.8.8.8')).toBe(true);
    expect(isPublic('2002:808:808::1')).toBe(true);
    expect(isPublic('2001:0:4136:e378:8000:63bf:3fff:fdd2')).toBe(true); // Teredo of public addresses
  });

  it('never repeats more than a glimpse of a long url in an error', async () => {
    const resolve = sourceResolver({ mediaRoot: root, remoteAllow: [], lookup: noLookup });
    for (const url of [`http://[${'x'.repeat(30_000)}`, `tone:${'9'.repeat(30_000)}`, `${'a/'.repeat(15_000)}`]) {
      expect((await refusal(resolve(url))).message.length, url.slice(0, 10)).toBeLessThan(500);
    }
  });
});

describe('the media root, checked at start', () => {
  it('a root the user chose must be an existing directory: one clear reason otherwise', () => {
    expect(prepareMediaRoot(root)).toBe(root);
    expect(() => prepareMediaRoot(path.join(dir, 'nowhere'))).toThrow(`CHORUS_MEDIA_ROOT ${path.join(dir, 'nowhere')} does not exist`);
    expect(fs.existsSync(path.join(dir, 'nowhere'))).toBe(false); // not made: only the default is
    expect(() => prepareMediaRoot(path.join(dir, 'secret.wav'))).toThrow('is not a directory');
  });
});

describe('the Opus hint', () => {
  it('a file says Opus by its first bytes (Ogg with OpusHead, Matroska/WebM with A_OPUS), whatever its name', async () => {
    const make = (name: string, codec: string[]) =>
      execFileSync(resolveFfmpeg().path, ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'sine=duration=0.2', ...codec, path.join(root, name)]);
    make('a.opus', ['-c:a', 'libopus']);
    make('a.webm', ['-c:a', 'libopus']);
    make('a.mka', ['-c:a', 'libopus']);
    make('vorbis.ogg', ['-c:a', 'libvorbis']);
    make('vorbis.webm', ['-c:a', 'libvorbis']);
    make('mp3-named.opus', ['-c:a', 'libmp3lame', '-f', 'mp3']);
    const resolve = sourceResolver({ mediaRoot: root, remoteAllow: [], lookup: noLookup });
    const hints = Object.fromEntries(await Promise.all(['a.opus', 'a.webm', 'a.mka', 'vorbis.ogg', 'vorbis.webm', 'mp3-named.opus', 'album/song.wav'].map(async (f) => [f, (await resolve(f)).opus])));
    expect(hints).toEqual({ 'a.opus': true, 'a.webm': true, 'a.mka': true, 'vorbis.ogg': false, 'vorbis.webm': false, 'mp3-named.opus': false, 'album/song.wav': false });
    expect((await resolve('tone:440')).opus).toBeUndefined();
  });

  it('a URL says Opus by its name or a mime query (YouTube\'s media URLs); .ogg does not (mostly Vorbis)', async () => {
    const resolve = sourceResolver({ mediaRoot: root, remoteAllow: [], lookup: async () => ['93.184.216.34'] });
    const hint = async (url: string) => (await resolve(url)).opus;
    expect(await hint('https://media.example/track.opus')).toBe(true);
    expect(await hint('https://media.example/track.WEBM?x=1')).toBe(true);
    expect(await hint('https://rr1.media.example/videoplayback?itag=251&mime=audio%2Fwebm&dur=212.3')).toBe(true);
    expect(await hint('https://media.example/track.ogg')).toBe(false);
    expect(await hint('https://media.example/videoplayback?mime=audio%2Fmp4')).toBe(false);
    expect(await hint('https://media.example/stream')).toBe(false);
  });
});
