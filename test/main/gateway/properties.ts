/**
 * fast-check properties of the gateway's HTTP and WebSocket inputs, against a real gateway run
 * in this process (its worker threads included) and a stand-in engine that answers at once — so
 * one case costs one request on a kept-alive connection, or one message on an open WebSocket.
 * The normal test run checks each with FUZZ_RUNS cases (test/main/gateway/http-api.test.ts);
 * `npm run fuzz` runs them for minutes (scripts/fuzz.ts).
 *
 *   HTTP  any method, path (ids percent-encoded from any bytes, malformed escapes, raw control
 *         and non-ASCII bytes in the request line), credential and body (JSON of every shape,
 *         random bytes, over the body cap, declared or streamed) gets an answer below 500 —
 *         4xx with a JSON {"error"} unless it is a health, page or WebSocket answer — never a 401
 *         with the token and never anything but a 401/403 without it (open routes aside), and the
 *         gateway keeps answering.
 *   WS    any text or binary message, on a connection with the token or with a listen token,
 *         gets the error event the listener protocol says (or runs as an action), never closes
 *         the connection — unless it is over the message cap, which closes it with 1009.
 */
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { listenToken } from '../../../src/shared/access.js';
import { loadConfig, type Config } from '../../../src/shared/config.js';
import { parseListenerAction } from '../../../src/shared/listener-protocol.js';

/** Cases per property in the normal test run (as test/shared/properties.ts). */
export const FUZZ_RUNS = 10_000;

/** startGateway from src/main/gateway/index.ts, as compiled (its worker file must resolve). */
export type StartGateway = (config: Config) => Promise<{ url: string; port: number; close(): Promise<void> }>;

export const FUZZ_LIMITS = {
  CHORUS_MAX_SESSIONS: 16,
  CHORUS_MAX_LISTENERS: 4,
  CHORUS_MAX_BODY_BYTES: 4096,
  CHORUS_MAX_WS_MESSAGE_BYTES: 1024,
  CHORUS_PLAY_RATE: 20,
  CHORUS_MAX_RTP_SINKS: 2,
  // The properties are about what a message says, one at a time: the rate limit is hardening.test.ts's.
  CHORUS_WS_MESSAGE_RATE: 10_000,
} as const;

/** A gateway under fuzz: its URL and token, and what its stand-in engine saw. */
export interface FuzzTarget {
  url: string;
  port: number;
  token: string;
  /** Calls that reached the stand-in engine without the token (the gateway must always send it). */
  engineUnauthorized: number;
  enginePlays: number;
  close(): Promise<void>;
}

/**
 * A stand-in engine: plays of `tone:` sources are accepted (and then never send a frame: no
 * socket), any other source is refused with 400 as the real engine would; stop/pause/resume 200.
 */
function standInEngine(token: string, target: { engineUnauthorized: number; enginePlays: number }): http.Server {
  let plays = 0;
  return http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const answer = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.headers.authorization !== `Bearer ${token}`) {
        target.engineUnauthorized++;
        return answer(401, { error: 'a token is required' });
      }
      const m = /^\/session\/([^/]+)\/(play|stop|pause|resume|status)$/.exec(req.url ?? '');
      if (!m) return answer(404, { error: 'no route' });
      if (m[2] === 'status') return answer(404, { error: 'no session' });
      if (m[2] !== 'play') return answer(200, { state: 'stopped' });
      let body: { url?: unknown } = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString()) as { url?: unknown };
      } catch {
        return answer(400, { error: 'body is not JSON' });
      }
      if (typeof body.url !== 'string' || !body.url.startsWith('tone:')) return answer(400, { error: 'unsupported source scheme' });
      target.enginePlays++;
      return answer(200, { play: ++plays, state: 'starting' });
    });
  });
}

export async function startFuzzTarget(startGateway: StartGateway, limits: Partial<Record<keyof typeof FUZZ_LIMITS, number>> = {}): Promise<FuzzTarget> {
  const token = randomBytes(24).toString('base64url');
  const counters = { engineUnauthorized: 0, enginePlays: 0 };
  const engine = standInEngine(token, counters);
  await new Promise<void>((resolve) => engine.listen(0, '127.0.0.1', resolve));
  const enginePort = (engine.address() as net.AddressInfo).port;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'chorus-fuzz-'));
  // An engine socket that takes the connection and never sends: the gateway is connected (so
  // healthy), frames never come, plays stay `starting`; the control paths all run.
  const silentSocket = net.createServer(() => undefined);
  await new Promise<void>((resolve) => silentSocket.listen(path.join(dir, 'silent-engine.sock'), resolve));
  const vars: Record<string, string> = {
    CHORUS_PORT: '0',
    CHORUS_TOKEN: token,
    CHORUS_ENGINE_URL: `http://127.0.0.1:${enginePort}`,
    CHORUS_SOCKET: path.join(dir, 'silent-engine.sock'),
    CHORUS_RECONNECT_MAX_MS: '60000',
    CHORUS_SESSIONS_PER_THREAD: '1024',
    CHORUS_PREWARM_THREADS: '1',
  };
  for (const [k, v] of Object.entries({ ...FUZZ_LIMITS, ...limits })) vars[k] = String(v);
  const gateway = await startGateway(loadConfig(vars));
  // Healthy once it has connected to the silent socket: only then is every answer below 500.
  for (let i = 0; (await fetch(`${gateway.url}/health`)).status !== 200; i++) {
    if (i >= 100) throw new Error('the gateway did not connect to the silent engine socket');
    await new Promise((r) => setTimeout(r, 50));
  }
  const target: FuzzTarget = {
    url: gateway.url,
    port: gateway.port,
    token,
    get engineUnauthorized() {
      return counters.engineUnauthorized;
    },
    get enginePlays() {
      return counters.enginePlays;
    },
    async close() {
      await gateway.close();
      engine.closeAllConnections();
      await new Promise((resolve) => engine.close(resolve));
      await new Promise((resolve) => silentSocket.close(resolve));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return target;
}

// ---- one HTTP exchange ----

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const ANSWER_TIMEOUT_MS = 5000;

/** A request through Node's client on a kept-alive connection; the body streamed (chunked) if asked. */
function request(port: number, method: string, target: string, headers: Record<string, string>, body: Buffer | undefined, chunked: boolean): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: target, headers, agent, timeout: ANSWER_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${ANSWER_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    if (body === undefined) {
      req.end();
    } else if (chunked) {
      // Written in pieces with no length: the server learns the size only as it reads.
      for (let i = 0; i < body.length; i += 1500) req.write(body.subarray(i, i + 1500));
      req.end();
    } else {
      req.end(body);
    }
  });
}

/** Raw bytes on a fresh connection: whatever Node's client would refuse to send. */
function rawExchange(port: number, bytes: Buffer, upgrade: boolean): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let done = false;
    const timer = setTimeout(() => settle(new Error(`no answer within ${ANSWER_TIMEOUT_MS} ms`)), ANSWER_TIMEOUT_MS);
    function settle(err?: Error): void {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const all = Buffer.concat(chunks);
      const headEnd = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, headEnd < 0 ? all.length : headEnd).toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(head);
      if (!m) {
        reject(err ?? new Error(`not an HTTP answer: ${JSON.stringify(all.subarray(0, 200).toString('latin1'))}`));
        return;
      }
      const headers: http.IncomingHttpHeaders = {};
      for (const line of head.split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({ status: Number(m[1]), headers, body: headEnd < 0 ? Buffer.alloc(0) : all.subarray(headEnd + 4) });
    }
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      // A WebSocket that was let in stays open: its status line is all we need.
      if (upgrade && /^HTTP\/1\.1 101 [^]*\r\n\r\n/.test(Buffer.concat(chunks).toString('latin1'))) settle();
    });
    // The server may close on us while we still write (400, 413): what it said still counts.
    socket.on('error', (err) => settle(err));
    socket.on('close', () => settle());
    // No half-close: Node's server aborts a request whose client has ended its side (it answers
    // `Connection: close` requests and closes by itself).
    socket.write(bytes);
  });
}

// ---- arbitraries ----

const ACTIONS = ['play', 'pause', 'resume', 'stop', 'seek', 'rtp', 'sdp', 'PLAY', 'status', '', 'play/x'] as const;
/** Ids the cases come back to (so sessions are reused, not only created), as raw text. */
const KNOWN_IDS = ['fz-a', 'fz-b', 'guild 1', '~!*()', 'x'.repeat(24)] as const;

function pct(bytes: Uint8Array): string {
  return [...bytes].map((b) => '%' + b.toString(16).padStart(2, '0').toUpperCase()).join('');
}

/** A path segment for an id: a known id, any bytes percent-encoded, or broken escapes. */
const idSegmentArb: fc.Arbitrary<{ segment: string; id?: string }> = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...KNOWN_IDS).map((id) => ({ segment: encodeURIComponent(id), id })) },
  { weight: 3, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 40 }).map((b) => ({ segment: pct(b), id: Buffer.from(b).toString('utf8') })) },
  { weight: 2, arbitrary: fc.string({ unit: fc.constantFrom('a', 'Z', '0', '-', '_', '.', '~', '!', '$', "'", '(', '*', '+', ',', ';', '=', ':', '@'), minLength: 1, maxLength: 30 }).map((s) => ({ segment: s, id: s })) },
  { weight: 1, arbitrary: fc.constantFrom('%', '%G1', '%e0%80', '%ff', '%00', '%0a', '%20x', '..', '.', '%2e%2e', '%2F', 'a%2Fb').map((s) => ({ segment: s })) },
);

const tokenQuery = (t: string) => `token=${encodeURIComponent(t)}`;

type Auth = { kind: 'none' } | { kind: 'main-header' } | { kind: 'main-query' } | { kind: 'listen-own' } | { kind: 'listen-other' } | { kind: 'wrong'; value: string } | { kind: 'malformed'; header: string };

const authArb: fc.Arbitrary<Auth> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ kind: 'none' } as const) },
  { weight: 5, arbitrary: fc.constant({ kind: 'main-header' } as const) },
  { weight: 2, arbitrary: fc.constant({ kind: 'main-query' } as const) },
  { weight: 2, arbitrary: fc.constant({ kind: 'listen-own' } as const) },
  { weight: 1, arbitrary: fc.constant({ kind: 'listen-other' } as const) },
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom('a', 'B', '0', '-', '_', '%'), minLength: 1, maxLength: 60 }).map((value) => ({ kind: 'wrong' as const, value })) },
  { weight: 1, arbitrary: fc.constantFrom('Basic dXNlcjpwYXNz', 'Bearer', 'Bearer ', 'Bearer a b', 'bearer', 'Token abc', '').map((header) => ({ kind: 'malformed' as const, header })) },
);

/** Bodies: JSON of the right and wrong shapes, random bytes, and over the cap. */
function bodyArb(maxBody: number): fc.Arbitrary<Buffer | undefined> {
  const json = (v: unknown) => Buffer.from(JSON.stringify(v));
  const anyJson = fc.jsonValue({ maxDepth: 2 });
  return fc.oneof(
    { weight: 3, arbitrary: fc.constant(undefined) },
    {
      weight: 5,
      arbitrary: fc
        .record(
          {
            url: fc.oneof(fc.constantFrom('tone:440', 'tone:660?seconds=1', 'file:///etc/passwd', 'http://10.0.0.1/', '', ' '), fc.string({ maxLength: 30 }), anyJson, fc.constant('x'.repeat(5000))),
            format: fc.oneof(fc.constantFrom('opus', 'web', 'pcm', ''), anyJson),
            seconds: fc.oneof(fc.double(), fc.constantFrom(-1, 0, 1, 1e308), anyJson),
            host: fc.oneof(fc.constantFrom('127.0.0.1', '::1', '10.0.0.1', '8.8.8.8', 'localhost', '127.0.0.1 ', '::ffff:127.0.0.1'), anyJson),
            port: fc.oneof(fc.integer({ min: -2, max: 70000 }), fc.constantFrom(0, 1, 65535, 65536, 1.5), anyJson),
          },
          { requiredKeys: [] },
        )
        .map(json),
    },
    { weight: 2, arbitrary: anyJson.map(json) },
    { weight: 2, arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)) },
    { weight: 1, arbitrary: fc.constantFrom('{', '{"url":', 'null', '[]', '"tone:440"', '{"url":"tone:440"', '{"__proto__":{"url":"tone:440"}}').map((s) => Buffer.from(s)) },
    { weight: 1, arbitrary: fc.nat(32_000).map((d) => Buffer.from('{"url":' + '['.repeat(d) + ']'.repeat(d) + '}')) },
    { weight: 1, arbitrary: fc.integer({ min: maxBody - 2, max: maxBody * 3 }).map((n) => Buffer.alloc(n, 0x20)) },
  );
}

export interface HttpCase {
  mode: 'client' | 'raw' | 'upgrade';
  method: string;
  /** The path and query as they go on the request line (before any token is added). */
  target: string;
  /** The session id the target names, when it names one that decodes. */
  id?: string;
  auth: Auth;
  body: Buffer | undefined;
  chunked: boolean;
}

const STATIC = ['/', '/index.html', '/static/web/main.js', '/static/web/player.css', '/static/web/nope.js', '/static/../package.json', '/static/%2e%2e/package.json'];

function httpCaseArb(maxBody: number): fc.Arbitrary<HttpCase> {
  const sessionTarget = fc
    .tuple(idSegmentArb, fc.option(fc.constantFrom(...ACTIONS), { nil: undefined }), fc.constantFrom('', '?port=1', '?x=%zz', '?token=', '#frag'))
    .map(([seg, action, query]) => ({ target: `/sessions/${seg.segment}${action === undefined ? '' : '/' + action}${query}`, id: seg.id }));
  const otherTarget = fc
    .oneof(
      fc.constantFrom('/health', '/metrics', '/sessions', '/sessions/', '/debug/block?ms=1', '/debug/crash?session=fz-a', '/ws?session=fz-a', '/nope', '//health', '/health/', '/HEALTH', '/%68ealth', '/./health', '/sessions/../health', '*', ...STATIC),
      fc.string({ unit: fc.constantFrom('/', 'a', '%', '.', '?', '=', '&', '2', 'e'), maxLength: 30 }).map((s) => '/' + s),
    )
    .map((target) => ({ target, id: undefined as string | undefined }));
  const methodArb = fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom('GET', 'POST') },
    { weight: 2, arbitrary: fc.constantFrom('PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH', 'TRACE', 'FOO') },
  );
  const clientCase = fc
    .record({ where: fc.oneof({ weight: 4, arbitrary: sessionTarget }, { weight: 1, arbitrary: otherTarget }), method: methodArb, auth: authArb, body: bodyArb(maxBody), chunked: fc.boolean() })
    .map(({ where, method, auth, body, chunked }): HttpCase => ({ mode: 'client', method, target: where.target, ...(where.id !== undefined ? { id: where.id } : {}), auth, body, chunked }));
  // Raw request lines: control bytes, spaces, DEL and non-ASCII bytes Node's client would refuse.
  const rawCase = fc
    .record({ seg: idSegmentArb, junk: fc.uint8Array({ minLength: 1, maxLength: 12 }), at: fc.nat(3), method: fc.oneof(methodArb, fc.constantFrom('G ET', 'GET\x00', '')), auth: authArb, body: bodyArb(maxBody) })
    .map(({ seg, junk, at, method, auth, body }): HttpCase => {
      const junkText = Buffer.from(junk).toString('latin1').replace(/[\r\n]/g, '\x01');
      const parts = ['/sessions/', seg.segment, '/play'];
      parts.splice(at % 3, 0, junkText);
      return { mode: 'raw', method, target: parts.join(''), auth, body: body && body.length > maxBody * 2 ? undefined : body, chunked: false };
    });
  const upgradeCase = fc
    .record({ seg: idSegmentArb, where: fc.constantFrom('/ws?session=', '/ws?session=', '/ws?x=1&session=', '/nows?session=', '/ws?session='), auth: authArb })
    .map(({ seg, where, auth }): HttpCase => ({ mode: 'upgrade', method: 'GET', target: where + seg.segment, ...(seg.id !== undefined ? { id: seg.id } : {}), auth, body: undefined, chunked: false }));
  // Control as a client with the token means it: plays, seeks and the rest with bodies that mostly parse.
  const controlCase = fc
    .record({
      seg: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...KNOWN_IDS).map((id) => ({ segment: encodeURIComponent(id), id })) }, { weight: 1, arbitrary: idSegmentArb }),
      action: fc.constantFrom('play', 'play', 'play', 'seek', 'pause', 'resume', 'stop', 'rtp', 'sdp'),
      method: fc.constantFrom('POST', 'POST', 'POST', 'DELETE', 'GET'),
      auth: fc.constantFrom<Auth>({ kind: 'main-header' }, { kind: 'main-query' }),
      url: fc.constantFrom('tone:440', 'tone:440', 'tone:660?seconds=1', 'bad:source', 'file:///etc/passwd'),
      extra: fc.record({ format: fc.constantFrom('opus', 'web', 'pcm'), seconds: fc.oneof(fc.double(), fc.constantFrom(0, 1, -1)), host: fc.constantFrom('127.0.0.1', '::1', '10.0.0.1'), port: fc.integer({ min: 0, max: 70_000 }) }, { requiredKeys: [] }),
    })
    .map(({ seg, action, method, auth, url, extra }): HttpCase => ({
      mode: 'client',
      method,
      target: `/sessions/${seg.segment}/${action}`,
      ...(seg.id !== undefined ? { id: seg.id } : {}),
      auth,
      body: Buffer.from(JSON.stringify({ url, ...extra })),
      chunked: false,
    }));
  return fc.oneof({ weight: 12, arbitrary: clientCase }, { weight: 5, arbitrary: controlCase }, { weight: 2, arbitrary: rawCase }, { weight: 1, arbitrary: upgradeCase });
}

// ---- the HTTP property ----

/** What a case carries as its credential: headers and a query to append. */
function credentials(c: HttpCase, token: string): { headers: Record<string, string>; query: string; main: boolean; listenFor?: string } {
  const idForListen = c.id ?? 'fz-a';
  switch (c.auth.kind) {
    case 'none':
      return { headers: {}, query: '', main: false };
    case 'main-header':
      return { headers: { authorization: `Bearer ${token}` }, query: '', main: true };
    case 'main-query':
      return { headers: {}, query: tokenQuery(token), main: true };
    case 'listen-own':
      return { headers: { authorization: `Bearer ${listenToken(token, idForListen)}` }, query: '', main: false, listenFor: idForListen };
    case 'listen-other':
      return { headers: {}, query: tokenQuery(listenToken(token, idForListen + '-other')), main: false };
    case 'wrong':
      return { headers: { authorization: `Bearer ${c.auth.value}` }, query: '', main: false };
    case 'malformed':
      return { headers: { authorization: c.auth.header }, query: '', main: false };
  }
}

function withQuery(target: string, query: string): string {
  if (!query) return target;
  const hash = target.indexOf('#');
  const base = hash < 0 ? target : target.slice(0, hash);
  return base + (base.includes('?') ? '&' : '?') + query;
}

async function exchange(t: FuzzTarget, c: HttpCase): Promise<Answer> {
  const cred = credentials(c, t.token);
  const target = withQuery(c.target, cred.query);
  if (c.mode === 'client') {
    const headers: Record<string, string> = { ...cred.headers };
    // Node's client frames a GET's (or DELETE's…) body only when told how.
    if (c.body !== undefined) headers[c.chunked ? 'transfer-encoding' : 'content-length'] = c.chunked ? 'chunked' : String(c.body.length);
    return request(t.port, c.method, target, headers, c.body, c.chunked);
  }
  const lines = [`${c.method} ${target} HTTP/1.1`, 'Host: 127.0.0.1'];
  for (const [k, v] of Object.entries(cred.headers)) lines.push(`${k}: ${v}`);
  if (c.mode === 'upgrade') {
    lines.push('Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13');
  } else {
    lines.push('Connection: close', `Content-Length: ${c.body?.length ?? 0}`);
  }
  return rawExchange(t.port, Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), c.body ?? Buffer.alloc(0)]), c.mode === 'upgrade');
}

function jsonError(a: Answer): string | undefined {
  try {
    const v = JSON.parse(a.body.toString('utf8')) as { error?: unknown };
    return typeof v.error === 'string' && v.error.length > 0 ? v.error : undefined;
  } catch {
    return undefined;
  }
}

/** Why the answer to `c` breaks the contract, or undefined. */
export function httpAnswerProblem(c: HttpCase, a: Answer, cred: { main: boolean }): string | undefined {
  // The page's designed answer where it was not built (`npm run fuzz` runs from dist-scripts/).
  const pageNotBuilt = a.status === 503 && (c.method === 'HEAD' || /^the web player is not built/.test(a.body.toString()));
  if ((a.status >= 500 && !pageNotBuilt) || a.status < 100) return `status ${a.status}`;
  if (c.mode === 'upgrade') {
    if (a.status === 101) return cred.main || c.auth.kind === 'listen-own' ? undefined : 'a WebSocket let in without its token';
    if (a.status < 400) return `upgrade answered ${a.status}`;
  }
  const isJson = /^application\/json/.test(String(a.headers['content-type'] ?? ''));
  const healthy = a.status === 200 && isJson && a.body.toString().startsWith('{"status":"ok"');
  const page = a.headers.etag !== undefined || pageNotBuilt;
  // (A HEAD answer has no body to say why.)
  if (a.status >= 400 && c.method !== 'HEAD' && !pageNotBuilt && jsonError(a) === undefined) return `a ${a.status} without a JSON {"error"}: ${JSON.stringify(a.body.toString('latin1').slice(0, 200))}`;
  if (a.status === 401 && a.headers['www-authenticate'] === undefined) return 'a 401 without WWW-Authenticate';
  if (cred.main && a.status === 401) return `a 401 with the token: ${a.body.toString().slice(0, 200)}`;
  if (a.status === 403 && cred.main && !/\/rtp/.test(c.target)) return `a 403 with the token: ${a.body.toString().slice(0, 200)}`;
  if (!cred.main && a.status !== 401 && a.status !== 403 && !healthy && !page) {
    // Without the token only the open routes answer, and a listen token on its own session's
    // GET /sessions/:id and WebSocket (which may still refuse the id itself).
    const own = c.auth.kind === 'listen-own' && (c.mode === 'upgrade' || (c.method === 'GET' && /^\/sessions\/[^/?#]+(?:[?#]|$)/.test(c.target)));
    // A request line Node's parser refuses (or a method it does not know), or a target that is
    // no path at all, is answered before any route is looked at.
    const unparsed = (a.status === 400 || a.status === 431) && (c.method === 'HEAD' || /^bad request: HPE_|^the request target is not a valid path$/.test(jsonError(a) ?? ''));
    if (!own && !unparsed) return `answered ${a.status} without the token: ${a.body.toString().slice(0, 200)}`;
  }
  return undefined;
}

/** The gateway still answers: health, the session list, and a play (or the session limit's 429). */
export async function checkServing(t: FuzzTarget): Promise<void> {
  const auth = { authorization: `Bearer ${t.token}` };
  const health = await request(t.port, 'GET', '/health', {}, undefined, false);
  if (health.status !== 200) throw new Error(`GET /health answered ${health.status} after the fuzz`);
  const list = await request(t.port, 'GET', '/sessions', auth, undefined, false);
  if (list.status !== 200) throw new Error(`GET /sessions answered ${list.status} after the fuzz`);
  const play = await request(t.port, 'POST', `/sessions/fz-probe-${Date.now() % 1000}/play`, auth, Buffer.from('{"url":"tone:440"}'), false);
  if (play.status !== 200 && !(play.status === 429 && /CHORUS_MAX_SESSIONS/.test(play.body.toString()))) {
    throw new Error(`a play answered ${play.status} after the fuzz: ${play.body.toString()}`);
  }
}

/**
 * Any HTTP request or WebSocket upgrade gets an answer below 500, a JSON reason with every 4xx
 * (from the gateway), no way past the token, and the gateway sends the engine its token.
 */
export function httpInputProperty(t: FuzzTarget, statuses?: Map<string, number>): fc.IAsyncPropertyWithHooks<[HttpCase]> {
  return fc.asyncProperty(httpCaseArb(FUZZ_LIMITS.CHORUS_MAX_BODY_BYTES), async (c) => {
    const cred = credentials(c, t.token);
    let answer: Answer;
    try {
      answer = await exchange(t, c);
    } catch (err) {
      throw new Error(`${c.method} ${JSON.stringify(c.target)}: ${(err as Error).message}`);
    }
    if (statuses) {
      const key = `${c.mode} ${answer.status}`;
      statuses.set(key, (statuses.get(key) ?? 0) + 1);
    }
    const problem = httpAnswerProblem(c, answer, cred);
    if (problem) throw new Error(`${c.mode} ${c.method} ${JSON.stringify(c.target)} (${c.auth.kind}, body ${c.body?.length ?? 'none'}${c.chunked ? ' chunked' : ''}): ${problem}`);
    if (t.engineUnauthorized > 0) throw new Error('the gateway called the engine without its token');
  });
}

// ---- the WebSocket property ----

/** A WebSocket test client that keeps every text event and answers "all caught up" by ping/pong. */
class FuzzSocket {
  events: { type: string; message?: string }[] = [];
  closed: { code: number; reason: string } | undefined;
  private pongs = 0;
  private waiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) this.events.push(JSON.parse(data.toString()) as { type: string; message?: string });
    });
    ws.on('pong', () => {
      this.pongs++;
      this.wake();
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
    });
    ws.on('error', () => undefined);
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  static open(url: string): Promise<FuzzSocket> {
    const ws = new WebSocket(url, { maxPayload: 1 << 20 });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new FuzzSocket(ws)));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade answered ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  /** Sends, then resolves once the server has handled it (its pong to a ping sent after) or closed. */
  async send(data: string | Buffer, binary: boolean): Promise<void> {
    const want = this.pongs + 1;
    this.ws.send(data, { binary });
    this.ws.ping();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no pong within ${ANSWER_TIMEOUT_MS} ms`)), ANSWER_TIMEOUT_MS);
      const check = () => {
        if (this.pongs >= want || this.closed) {
          clearTimeout(timer);
          resolve();
        } else this.waiters.push(check);
      };
      check();
    });
  }

  close(): void {
    this.ws.terminate();
  }
}

export interface WsCase {
  conn: 'main' | 'listen';
  binary: boolean;
  text: string;
}

const wsTextArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 60 }) },
  { weight: 2, arbitrary: fc.json({ maxDepth: 3 }) },
  {
    weight: 6,
    arbitrary: fc
      .record(
        {
          action: fc.oneof(fc.constantFrom('play', 'pause', 'resume', 'stop', 'seek', 'PLAY', '__proto__', ''), fc.jsonValue({ maxDepth: 1 })),
          url: fc.oneof(fc.constantFrom('tone:440', 'tone:880?seconds=1', 'bad:source', '', '../x'), fc.jsonValue({ maxDepth: 1 })),
          format: fc.oneof(fc.constantFrom('opus', 'web', 'pcm'), fc.jsonValue({ maxDepth: 1 })),
          seconds: fc.oneof(fc.double(), fc.constantFrom(-1, 0, 2, 1e308), fc.jsonValue({ maxDepth: 1 })),
        },
        { requiredKeys: [] },
      )
      .map((o) => JSON.stringify(o)),
  },
  { weight: 1, arbitrary: fc.nat(20_000).map((d) => '{"action":' + '['.repeat(d) + ']'.repeat(d) + '}') },
  { weight: 1, arbitrary: fc.integer({ min: FUZZ_LIMITS.CHORUS_MAX_WS_MESSAGE_BYTES - 2, max: FUZZ_LIMITS.CHORUS_MAX_WS_MESSAGE_BYTES * 4 }).map((n) => '{"action":"play","url":"tone:440","pad":"' + 'x'.repeat(Math.max(0, n - 40)) + '"}') },
);

const wsCaseArb: fc.Arbitrary<WsCase> = fc.record({
  conn: fc.constantFrom('main', 'main', 'listen'),
  binary: fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  text: wsTextArb,
});

/** The error event a message must get at once, if any (actions that run may answer later, or not). */
function expectedError(c: WsCase): string | undefined {
  if (c.binary) return 'binary messages are not accepted; send JSON actions as text';
  const action = parseListenerAction(c.text);
  if (typeof action === 'string') return action;
  return c.conn === 'listen' ? 'a listen token only listens to its own session; this needs CHORUS_TOKEN' : undefined;
}

/** Both connections of the WebSocket property, reopened when the message cap closed one. */
export class WsFuzzClients {
  private readonly sockets = new Map<WsCase['conn'], FuzzSocket>();

  constructor(private readonly t: FuzzTarget) {}

  private url(conn: WsCase['conn']): string {
    const base = this.t.url.replace(/^http/, 'ws');
    return conn === 'main' ? `${base}/ws?session=fz-ws&token=${encodeURIComponent(this.t.token)}` : `${base}/ws?session=fz-listen&token=${listenToken(this.t.token, 'fz-listen')}`;
  }

  async get(conn: WsCase['conn']): Promise<FuzzSocket> {
    let s = this.sockets.get(conn);
    if (!s || s.closed) {
      s = await FuzzSocket.open(this.url(conn));
      this.sockets.set(conn, s);
    }
    return s;
  }

  close(): void {
    for (const s of this.sockets.values()) s.close();
    this.sockets.clear();
  }
}

/**
 * Any message on a listener's WebSocket gets the error event the protocol says, at once, and
 * leaves the connection open; one over the cap closes it with 1009. Nothing answers 'internal'.
 */
export function wsInputProperty(clients: WsFuzzClients): fc.IAsyncPropertyWithHooks<[WsCase]> {
  return fc.asyncProperty(wsCaseArb, async (c) => {
    const s = await clients.get(c.conn);
    const from = s.events.length;
    const data = c.binary ? Buffer.from(c.text) : c.text;
    const size = typeof data === 'string' ? Buffer.byteLength(data) : data.length;
    await s.send(data, c.binary);
    const seen = s.events.slice(from);
    const where = `${c.conn} ${c.binary ? 'binary' : 'text'} ${JSON.stringify(c.text.slice(0, 120))} (${size} bytes)`;
    if (size > FUZZ_LIMITS.CHORUS_MAX_WS_MESSAGE_BYTES) {
      if (s.closed?.code !== 1009) throw new Error(`${where}: over the cap but ${s.closed ? `closed ${s.closed.code}` : 'still open'}`);
      return;
    }
    if (s.closed) throw new Error(`${where}: closed the connection (${s.closed.code} ${s.closed.reason})`);
    const want = expectedError(c);
    if (want !== undefined && !seen.some((e) => e.type === 'error' && e.message === want)) {
      throw new Error(`${where}: no error event ${JSON.stringify(want)}; got ${JSON.stringify(seen)}`);
    }
    for (const e of seen) {
      if (e.type === 'error' && (typeof e.message !== 'string' || e.message === '' || /internal|TypeError|ReferenceError|at .*\.js:\d+/.test(e.message))) {
        throw new Error(`${where}: error event ${JSON.stringify(e)}`);
      }
    }
  });
}
