import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { decodeTrack, encodeTrack, probeSourceData, TrackCodecError, type DecodedTrack } from '../../../src/main/lavalink/track-codec.js';

/** The example of Lavalink's docs/api/rest.md (Track Decoding), as Lavalink encoded it. */
const LAVALINK_EXAMPLE =
  'QAAAjQIAJVJpY2sgQXN0bGV5IC0gTmV2ZXIgR29ubmEgR2l2ZSBZb3UgVXAADlJpY2tBc3RsZXlWRVZPAAAAAAADPCAAC2RRdzR3OVdnWGNRAAEAK2h0dHBzOi8vd3d3LnlvdXR1YmUuY29tL3dhdGNoP3Y9ZFF3NHc5V2dYY1EAB3lvdXR1YmUAAAAAAAAAAA==';

describe('Lavalink track format', () => {
  it("decodes the track of Lavalink's docs to the fields the docs give, and re-encodes it to the same string", () => {
    const track = decodeTrack(LAVALINK_EXAMPLE);
    expect(track.version).toBe(2);
    expect(track.info).toEqual({
      identifier: 'dQw4w9WgXcQ',
      author: 'RickAstleyVEVO',
      length: 212000,
      isStream: false,
      position: 0,
      title: 'Rick Astley - Never Gonna Give You Up',
      uri: 'https://www.youtube.com/watch?v=dQw4w9WgXcQ',
      // A version 2 track carries no artwork nor ISRC: the docs' artworkUrl is the YouTube source's own.
      artworkUrl: null,
      isrc: null,
      sourceName: 'youtube',
    });
    expect(encodeTrack(track)).toBe(LAVALINK_EXAMPLE);
  });

  it('writes version 3 with artwork, ISRC and the source data, and reads it back', () => {
    const track: DecodedTrack = {
      version: 3,
      info: {
        title: 'Tïtle\u0000 with NUL and 🎵',
        author: 'Author',
        length: 5000,
        identifier: 'music/a.mp3',
        isStream: false,
        uri: '/media/music/a.mp3',
        artworkUrl: 'https://example.com/a.jpg',
        isrc: 'USRC17607839',
        sourceName: 'local',
        position: 1234,
      },
      sourceData: probeSourceData('mp3'),
    };
    const encoded = encodeTrack(track);
    const bytes = Buffer.from(encoded, 'base64');
    expect(bytes.readUInt32BE(0) >>> 30).toBe(1);
    expect(bytes.readUInt32BE(0) & 0x3fffffff).toBe(bytes.length - 4);
    expect(bytes[4]).toBe(3);
    // Java's modified UTF-8: NUL is C0 80, never a zero byte inside a string.
    expect(bytes.includes(Buffer.from([0xc0, 0x80]))).toBe(true);
    expect(decodeTrack(encoded)).toEqual(track);
  });

  it('round-trips any info, versions 1 to 3', () => {
    const text = fc.string({ unit: 'binary', maxLength: 40 });
    const nullable = fc.option(text, { nil: null });
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.record({
          title: text,
          author: text,
          length: fc.maxSafeInteger(),
          identifier: text,
          isStream: fc.boolean(),
          uri: nullable,
          artworkUrl: nullable,
          isrc: nullable,
          sourceName: text,
          position: fc.nat(),
        }),
        fc.uint8Array({ maxLength: 8 }),
        (version, info, data) => {
          const shaped = { ...info, uri: version >= 2 ? info.uri : null, artworkUrl: version >= 3 ? info.artworkUrl : null, isrc: version >= 3 ? info.isrc : null };
          const track = { version, info: shaped, sourceData: Buffer.from(data) };
          const encoded = encodeTrack(track);
          expect(decodeTrack(encoded)).toEqual(track);
          expect(encodeTrack(decodeTrack(encoded))).toBe(encoded);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('refuses what is not a track with a reason', () => {
    expect(() => decodeTrack('not base64!')).toThrow(TrackCodecError);
    expect(() => decodeTrack('QAAA')).toThrow(/ends too early|header says/);
    expect(() => decodeTrack(LAVALINK_EXAMPLE.slice(0, 40))).toThrow(TrackCodecError);
    const bytes = Buffer.from(LAVALINK_EXAMPLE, 'base64');
    bytes[4] = 9;
    expect(() => decodeTrack(bytes.toString('base64'))).toThrow(/version 9/);
  });
});
