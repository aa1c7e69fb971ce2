/**
 * The web player's files, served by the gateway for the GETs its router does not handle itself.
 *
 *   GET /  (or /index.html)        the page
 *   GET /static/<file>             one of the files listed in ASSETS below, from dist/public/
 *
 * Only the files listed here are served: a URL is looked up in a fixed table, never joined onto
 * a directory, so no path can reach anything else. The files come from the build
 * (`npm run build`: tsconfig.web.json compiles src/web and the browser-safe modules of
 * src/shared it imports into dist/public; src/web/copy-assets.mjs copies the HTML, CSS and icon),
 * so the page works offline and needs no CDN. They are read once and kept in memory (a few tens
 * of KiB). File names carry no content hash, so every answer says `no-cache`, and a browser
 * revalidates with its ETag and gets a 304 when nothing changed.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';

/** Files under dist/public that the page needs (its JS modules with their source maps). */
export const ASSETS: readonly string[] = [
  'web/index.html',
  'web/player.css',
  'web/favicon.svg',
  ...[
    'web/main',
    'web/player',
    'web/api',
    'web/ui',
    'web/sessions-table',
    'web/scope',
    'web/analysis',
    'web/sequence',
    'web/backoff',
    'web/jitter-worklet',
    'web/test-hook',
    'web/token',
    'shared/listener-protocol',
    'shared/session-state',
    'shared/audio',
  ].flatMap((m) => [`${m}.js`, `${m}.js.map`]),
];

const CONTENT_TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  svg: 'image/svg+xml',
  map: 'application/json; charset=utf-8',
};

/**
 * The page may load only its own files and talk only to its own origin (HTTP and WebSocket).
 * The token a page may carry in its URL (?token=) must not leak through a Referer header.
 */
const PAGE_HEADERS: Record<string, string> = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "worker-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
};

interface Entry {
  body: Buffer;
  headers: Record<string, string>;
}

/** dist/public, found from this module in dist/main/gateway/ or (under vitest) src/main/gateway/. */
export const PUBLIC_DIR = fileURLToPath(new URL('../../../dist/public/', import.meta.url));

function load(dir: string): Map<string, Entry> | Error {
  const table = new Map<string, Entry>();
  try {
    for (const file of ASSETS) {
      const body = readFileSync(dir + file);
      const ext = file.slice(file.lastIndexOf('.') + 1);
      const isPage = file === 'web/index.html';
      const headers: Record<string, string> = {
        'content-type': CONTENT_TYPES[ext] ?? 'application/octet-stream',
        'content-length': String(body.length),
        etag: `"${createHash('sha1').update(body).digest('base64url')}"`,
        'cache-control': 'no-cache',
        'x-content-type-options': 'nosniff',
        ...(isPage ? PAGE_HEADERS : {}),
      };
      const entry = { body, headers };
      if (isPage) {
        table.set('/', entry);
        table.set('/index.html', entry);
      } else {
        table.set(`/static/${file}`, entry);
      }
    }
  } catch (err) {
    return new Error(`the web player is not built (${(err as Error).message}); run \`npm run build\``);
  }
  return table;
}

/** Makes a handler for the files of `dir` (tests point it elsewhere; the gateway uses serveStatic). */
export function createStaticHandler(dir: string = PUBLIC_DIR): (req: IncomingMessage, res: ServerResponse) => boolean {
  let table: Map<string, Entry> | Error | undefined;
  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    let pathname: string;
    try {
      pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
    } catch {
      return false;
    }
    if (pathname !== '/' && pathname !== '/index.html' && !pathname.startsWith('/static/')) return false;
    table ??= load(dir);
    if (table instanceof Error) {
      // Only the page itself says why it is missing; an asset is simply not found.
      if (pathname !== '/' && pathname !== '/index.html') return false;
      const body = table.message + '\n';
      res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
      return true;
    }
    const entry = table.get(pathname);
    if (!entry) return false;
    const etag = entry.headers.etag!;
    if (ifNoneMatch(req.headers['if-none-match'], etag)) {
      const { 'content-length': _len, 'content-type': _type, ...rest } = entry.headers;
      res.writeHead(304, rest);
      res.end();
      return true;
    }
    res.writeHead(200, entry.headers);
    res.end(req.method === 'HEAD' ? undefined : entry.body);
    return true;
  };
}

function ifNoneMatch(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header
    .split(',')
    .map((t) => t.trim().replace(/^W\//, ''))
    .some((t) => t === etag || t === '*');
}

/** Answers GET/HEAD for the web player's files; false when the request is not for one of them. */
export const serveStatic: (req: IncomingMessage, res: ServerResponse) => boolean = createStaticHandler();
