/**
 * What a listener may read of a source: the one redaction every listener-visible text goes
 * through (a session's `reason`, its `state` and `error` events, WebSocket error replies).
 *
 *   http://user:secret@host/a?key=v&x   →  http://***@host/a?key=***&x
 *   /srv/music/album/track.flac         →  album/track.flac        (under a media root)
 *
 * URLs of any scheme with an authority (`scheme://`) lose their user-info and their query
 * values (names stay, so a message still says which parameter was wrong); fragments are cut.
 * Absolute paths under a media root are shown relative to it, so no server layout leaks.
 */
import path from 'node:path';

/** A URL with an authority, up to the first character that cannot be part of one in a message. */
const URL_IN_TEXT = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s"'<>]*)/gi;

function redactUrl(scheme: string, rest: string): string {
  // Trailing punctuation belongs to the sentence, not to the URL.
  const tail = /[.,;:)\]}]+$/.exec(rest)?.[0] ?? '';
  let body = rest.slice(0, rest.length - tail.length);
  const hash = body.indexOf('#');
  if (hash >= 0) body = body.slice(0, hash);
  const q = body.indexOf('?');
  let beforeQuery = q < 0 ? body : body.slice(0, q);
  const query = q < 0 ? undefined : body.slice(q + 1);
  const slash = beforeQuery.indexOf('/');
  const authority = slash < 0 ? beforeQuery : beforeQuery.slice(0, slash);
  const at = authority.lastIndexOf('@');
  if (at >= 0) beforeQuery = `***@${beforeQuery.slice(at + 1)}`;
  const redactedQuery =
    query === undefined
      ? ''
      : '?' +
        query
          .split('&')
          .map((pair) => {
            const eq = pair.indexOf('=');
            return eq < 0 ? pair : `${pair.slice(0, eq)}=***`;
          })
          .join('&');
  return scheme + beforeQuery + redactedQuery + tail;
}

export class Redactor {
  /** Media roots, longest first, each with a trailing separator. */
  private readonly roots: string[];

  /** `mediaRoots`: the directories whose files are shown relative (a root and its real path). */
  constructor(mediaRoots: readonly string[] = []) {
    const withSep = mediaRoots.filter((r) => path.isAbsolute(r)).map((r) => (r.endsWith(path.sep) ? r : r + path.sep));
    this.roots = [...new Set(withSep)].sort((a, b) => b.length - a.length);
  }

  /** `text` with every URL's credentials and query values, and every media root, taken out. */
  redact(text: string): string {
    let out = text.replace(URL_IN_TEXT, (_m, scheme: string, rest: string) => redactUrl(scheme, rest));
    for (const root of this.roots) out = out.split(root).join('');
    return out;
  }
}
