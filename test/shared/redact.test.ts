import { describe, expect, it } from 'vitest';
import { Redactor } from '../../src/shared/redact.js';

describe('Redactor', () => {
  const r = new Redactor(['/srv/media', '/real/media/']);

  it('takes user-info and query values out of URLs of any scheme, keeping the rest of the text', () => {
    expect(r.redact('ffmpeg: http://alice:s3cret@host.example:8080/a/b.mp3?api_key=K&sig=abc&flag: 403 Forbidden')).toBe(
      'ffmpeg: http://***@host.example:8080/a/b.mp3?api_key=***&sig=***&flag: 403 Forbidden',
    );
    expect(r.redact('rtmp://u@h/x, then HTTPS://T@h/y#frag.')).toBe('rtmp://***@h/x, then HTTPS://***@h/y.');
    expect(r.redact('"https://h/p?token=abc"')).toBe('"https://h/p?token=***"');
    expect(r.redact('no URL here: tone:440?seconds=3')).toBe('no URL here: tone:440?seconds=3');
    expect(r.redact('http://[::1]:1/x?a=1')).toBe('http://[::1]:1/x?a=***');
  });

  it('shows paths under a media root relative to it, whichever form of the root', () => {
    expect(r.redact('file:/srv/media/album/t.flac: Invalid data')).toBe('file:album/t.flac: Invalid data');
    expect(r.redact('no such file: /real/media/x.wav')).toBe('no such file: x.wav');
    expect(r.redact('/srv/mediaX/y.wav')).toBe('/srv/mediaX/y.wav');
  });
});
