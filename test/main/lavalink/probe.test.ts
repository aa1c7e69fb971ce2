import { describe, expect, it } from 'vitest';
import { parseFfmpegInfo } from '../../../src/main/lavalink/probe.js';

describe('parseFfmpegInfo', () => {
  it("takes the input's tags, not a stream's, and its duration", () => {
    const out = parseFfmpegInfo(
      [
        "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'a.m4a':",
        '  Metadata:',
        '    major_brand     : M4A ',
        '    title           : Song: the remix',
        '    ARTIST          : Band',
        '  Duration: 01:02:03.50, start: 0.000000, bitrate: 128 kb/s',
        '    Stream #0:0(und): Audio: aac (LC), 44100 Hz, stereo, fltp, 127 kb/s (default)',
        '    Metadata:',
        '      title           : stream title',
        '      handler_name    : SoundHandler',
        'At least one output file must be specified',
      ].join('\n'),
    );
    expect(out).toEqual({ container: 'mov,mp4,m4a,3gp,3g2,mj2', durationMs: 3_723_500, tags: { major_brand: 'M4A ', title: 'Song: the remix', artist: 'Band' } });
  });

  it('reads a live stream (no duration) and refuses output that has no input', () => {
    expect(parseFfmpegInfo("Input #0, mp3, from 'http://radio/':\n  Metadata:\n    icy-name        : Radio\n  Duration: N/A, start: 0.000000, bitrate: 128 kb/s\n")).toEqual({
      container: 'mp3',
      durationMs: undefined,
      tags: { 'icy-name': 'Radio' },
    });
    expect(parseFfmpegInfo('x.mp3: No such file or directory')).toBeUndefined();
  });
});
