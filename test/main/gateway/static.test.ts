/**
 * The web player's static handler, over a real HTTP server, against the built files in
 * dist/public (`npm test` builds first): the page and every listed asset come with the right
 * type and caching headers, every module the page imports is served at the URL the browser will
 * resolve it to, and nothing outside the list is reachable, however the path is spelled.
 */
import { readdirSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ASSETS, createStaticHandler, PUBLIC_DIR, serveStatic } from '../../../src/main/gateway/static.js';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function serve(handler: (req: http.IncomingMessage, res: http.ServerResponse) => boolean): http.Server {
  return http.createServer((req, res) => {
    if (handler(req, res)) return;
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":"not found"}');
  });
}

async function listen(server: http.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** A raw request: the path goes on the wire exactly as given (fetch would normalise `..`). */
function request(port: number, path: string, method = 'GET', headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

let server: http.Server;
let port: number;

beforeAll(async () => {
  server = serve(serveStatic);
  port = await listen(server);
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('serveStatic', () => {
  it('serves the page at / with its type, a CSP, no referrer and revalidation', async () => {
    const r = await request(port, '/');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(r.headers['cache-control']).toBe('no-cache');
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect(r.headers['referrer-policy']).toBe('no-referrer');
    expect(r.headers['content-security-policy']).toContain("default-src 'self'");
    expect(r.headers.etag).toMatch(/^"[\w-]+"$/);
    expect(Number(r.headers['content-length'])).toBe(Buffer.byteLength(r.body));
    expect(r.body).toContain('<script type="module" src="static/web/main.js"></script>');
  });

  it('ignores the query string (?session=…&token=…) and answers /index.html too', async () => {
    const page = await request(port, '/');
    for (const path of ['/?session=abc&token=t0k', '/index.html', '/index.html?session=x']) {
      const r = await request(port, path);
      expect(r.status, path).toBe(200);
      expect(r.body).toBe(page.body);
    }
  });

  it('answers HEAD with the headers and no body', async () => {
    const r = await request(port, '/static/web/main.js', 'HEAD');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(Number(r.headers['content-length'])).toBeGreaterThan(0);
    expect(r.body).toBe('');
  });

  it('serves every listed asset with the right content type', async () => {
    const types: Record<string, string> = {
      html: 'text/html; charset=utf-8',
      js: 'text/javascript; charset=utf-8',
      css: 'text/css; charset=utf-8',
      svg: 'image/svg+xml',
      map: 'application/json; charset=utf-8',
    };
    for (const file of ASSETS) {
      if (file === 'web/index.html') continue;
      const r = await request(port, `/static/${file}`);
      expect(r.status, file).toBe(200);
      expect(r.headers['content-type'], file).toBe(types[file.slice(file.lastIndexOf('.') + 1)]);
      expect(r.headers['cache-control'], file).toBe('no-cache');
      expect(r.headers['content-security-policy'], file).toBeUndefined();
    }
  });

  it('lists every module the build emits for the page (none forgotten)', () => {
    for (const dir of ['web']) {
      const emitted = readdirSync(PUBLIC_DIR + dir).filter((f) => f.endsWith('.js'));
      for (const f of emitted) expect(ASSETS, `${dir}/${f} is built but not served`).toContain(`${dir}/${f}`);
    }
  });

  it('serves every module the page loads at the URL the browser resolves it to', async () => {
    // Walk the module graph from the page as a browser would: src/href in the HTML, then the
    // static imports and `new URL('…', import.meta.url)` of each module, relative to its own URL.
    const base = `http://127.0.0.1:${port}/`;
    const page = await request(port, '/');
    const queue = [...page.body.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => new URL(m[1]!, base));
    const seen = new Set<string>();
    while (queue.length > 0) {
      const url = queue.shift()!;
      if (seen.has(url.pathname)) continue;
      seen.add(url.pathname);
      const r = await request(port, url.pathname);
      expect(r.status, `${url.pathname} is referenced but not served`).toBe(200);
      if (!url.pathname.endsWith('.js')) continue;
      const refs = [
        ...r.body.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+'([^']+)'/gm),
        ...r.body.matchAll(/^\s*import\s+'([^']+)'/gm),
        ...r.body.matchAll(/new URL\('([^']+)', import\.meta\.url\)/g),
      ].map((m) => m[1]!);
      for (const ref of refs) {
        expect(ref, `${url.pathname} imports a bare specifier ${ref}`).toMatch(/^\.\.?\//);
        queue.push(new URL(ref, url));
      }
    }
    expect(seen).toContain('/static/web/main.js');
    expect(seen).toContain('/static/web/jitter-worklet.js');
    expect(seen).toContain('/static/shared/listener-protocol.js');
  });

  it('answers a matching If-None-Match with 304 and no body', async () => {
    const first = await request(port, '/static/web/player.css');
    const again = await request(port, '/static/web/player.css', 'GET', { 'if-none-match': first.headers.etag! });
    expect(again.status).toBe(304);
    expect(again.body).toBe('');
    expect(again.headers.etag).toBe(first.headers.etag);
    const changed = await request(port, '/static/web/player.css', 'GET', { 'if-none-match': '"something-else"' });
    expect(changed.status).toBe(200);
  });

  it('leaves everything else to the router: other files, traversal, other methods', async () => {
    const refused = [
      '/static/',
      '/static/web/',
      '/static/web/main.ts',
      '/static/web/copy-assets.mjs',
      '/static/shared/config.js',
      '/static/shared/protocol.js',
      '/static/../package.json',
      '/static/web/../../../package.json',
      '/static/%2e%2e/%2e%2e/package.json',
      '/static/web%2f..%2f..%2f..%2fpackage.json',
      '/static//etc/passwd',
      '//etc/passwd',
      '/..%2fpackage.json',
      '/STATIC/web/main.js',
      '/sessions',
      '/health',
      '/favicon.ico',
    ];
    for (const path of refused) {
      const r = await request(port, path);
      expect(r.status, path).toBe(404);
      expect(r.body, path).toBe('{"error":"not found"}');
    }
    for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS']) {
      const r = await request(port, '/', method);
      expect(r.status, method).toBe(404);
    }
  });
});

describe('createStaticHandler without a build', () => {
  it('says at / how to build, and leaves assets to the router', async () => {
    const s = serve(createStaticHandler('/nonexistent/chorus-public/'));
    const p = await listen(s);
    try {
      const page = await request(p, '/');
      expect(page.status).toBe(503);
      expect(page.body).toContain('npm run build');
      expect((await request(p, '/static/web/main.js')).status).toBe(404);
    } finally {
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
  });
});
