/** ffmpeg binary resolution (src/shared/ffmpeg.ts). */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { resolveFfmpeg } from '../../../src/shared/ffmpeg.js';

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
