/** ffmpeg binary resolution (src/shared/ffmpeg.ts). */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { reportedDuration, resolveFfmpeg } from '../../../src/shared/ffmpeg.js';

describe('resolveFfmpeg', () => {
  it('finds a working ffmpeg and says where it came from', () => {
    const found = resolveFfmpeg('');
    expect(['ffmpeg-static', '@ffmpeg-installer/ffmpeg', 'PATH']).toContain(found.source);
    expect(spawnSync(found.path, ['-hide_banner', '-version']).status).toBe(0);
  });

  it('prefers CHORUS_FFMPEG, and refuses one that is not an executable file', () => {
    const real = resolveFfmpeg('').path;
    expect(resolveFfmpeg(real)).toEqual({ path: real, source: 'CHORUS_FFMPEG' });
    expect(() => resolveFfmpeg('/nonexistent/ffmpeg')).toThrow(/CHORUS_FFMPEG="\/nonexistent\/ffmpeg" is not an executable file/);
  });
});

describe('reportedDuration', () => {
  it("reads ffmpeg's input Duration line, in seconds", () => {
    expect(reportedDuration("Input #0, mp3, from 'a.mp3':\n  Duration: 00:03:25.04, start: 0.025, bitrate: 128 kb/s")).toBeCloseTo(205.04, 6);
    expect(reportedDuration('  Duration: 01:00:00.00, start')).toBe(3600);
  });

  it('is undefined for a live stream (N/A) or no Duration at all', () => {
    expect(reportedDuration('  Duration: N/A, start: 0.000000, bitrate: N/A')).toBeUndefined();
    expect(reportedDuration('Stream #0:0: Audio: pcm_s16le')).toBeUndefined();
  });
});
