/**
 * The engine's egress proxy: the only way ffmpeg reaches a remote source. ffmpeg runs with
 * `http_proxy` pointing here and `-protocol_whitelist http,tcp`, so every request it makes — the
 * source, each redirect hop it follows, each HLS playlist and segment — arrives here as an
 * absolute-form HTTP request. For each, the proxy resolves the host itself, applies the same
 * check as the play (remoteGuard: no loopback, private or other non-public address unless
 * CHORUS_REMOTE_ALLOW lists it) and connects to an address it checked. That one mechanism:
 *
 *   - resolves names in Node, not in ffmpeg (a static ffmpeg build can crash on any lookup);
 *   - closes DNS rebinding: the address checked is the address connected to;
 *   - gives redirects and HLS segments the same answer as the URL of the play.
 *
 * https: ffmpeg may not open `tls` (nor `httpproxy`, which a playlist could point anywhere), so
 * it asks for https resources in plain HTTP under a marker host the proxy alone understands:
 *
 *   https://radio.example:8443/a.m3u8  →  http://radio.example.tls.chorus.invalid:8443/a.m3u8
 *   https://[2001:db8::1]/a            →  http://2001-db8--1.ipv6.tls.chorus.invalid/a
 *
 * (`.invalid` can never be a real name). The proxy speaks TLS to the source (Node's, with the
 * certificate verified), and writes absolute https URLs it hands back to ffmpeg — a redirect's
 * Location, the URIs of an HLS playlist — in the same form, so ffmpeg keeps asking through here.
 *
 * A refusal is a 403 whose reason phrase says why; ffmpeg prints it, and it ends up in the
 * session's `error`. Requests that are not absolute-form (a browser, a stray client) get 400, and
 * CONNECT gets 405: the proxy relays only what ffmpeg asks for this way.
 *
 * A proxy made with `{ tunnels: true }` (the gateway's, for yt-dlp, which speaks TLS itself) also
 * takes `CONNECT host:port`: the host is checked the same way and the tunnel opened to a checked
 * address.
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { pipeline } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { logger } from '../../shared/log.js';
import { SourceError, type RemoteGuard } from './source.js';

const log = logger('engine.egress');

const TLS_SUFFIX = '.tls.chorus.invalid';
const IPV6_LABEL = '.ipv6';
/** An HLS playlist is rewritten in memory, so it is read whole: at most this much. */
const MAX_PLAYLIST_BYTES = 4 * 1024 * 1024;
const UPSTREAM_TIMEOUT_MS = 15_000;
/** Request headers that are the proxy hop's, not the source's. */
const HOP_HEADERS = new Set(['proxy-connection', 'proxy-authorization', 'connection', 'keep-alive', 'host']);

/** The URL to give ffmpeg for a checked http(s) source: https in the marker form. */
export function proxiedUrl(url: URL): string {
  if (url.protocol !== 'https:') return url.href;
  const host = url.hostname.startsWith('[') ? `${url.hostname.slice(1, -1).replaceAll(':', '-')}${IPV6_LABEL}` : url.hostname;
  return `http://${host}${TLS_SUFFIX}${url.port ? `:${url.port}` : ''}${url.pathname}${url.search}`;
}

/** Where an absolute-form request really goes. */
interface Target {
  tls: boolean;
  /** Host name or address literal (no brackets). */
  host: string;
  port: number;
  /** Host header for the source. */
  hostHeader: string;
  path: string;
}

function targetOf(requestTarget: string): Target | undefined {
  let url: URL;
  try {
    url = new URL(requestTarget);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' || !/^http:\/\//i.test(requestTarget)) return undefined;
  let host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const tls = host.endsWith(TLS_SUFFIX);
  if (tls) {
    host = host.slice(0, -TLS_SUFFIX.length);
    if (host.endsWith(IPV6_LABEL)) host = host.slice(0, -IPV6_LABEL.length).replaceAll('-', ':');
  }
  if (host === '') return undefined;
  const port = url.port ? Number(url.port) : tls ? 443 : 80;
  const shownHost = net.isIPv6(host) ? `[${host}]` : host;
  return { tls, host, port, hostHeader: url.port ? `${shownHost}:${port}` : shownHost, path: `${url.pathname}${url.search}` };
}

/** An absolute https URL as ffmpeg must ask for it (others unchanged). */
function forFfmpeg(location: string, base: string): string {
  let url: URL;
  try {
    url = new URL(location, base);
  } catch {
    return location;
  }
  return url.protocol === 'https:' ? proxiedUrl(url) : location;
}

/** HLS playlist text with every absolute https URI (a line, or a URI="…" attribute) in ffmpeg's form. */
function rewritePlaylist(text: string, base: string): string {
  return text
    .split('\n')
    .map((line) => {
      if (/^https:\/\//i.test(line.trim())) return forFfmpeg(line.trim(), base);
      return line.replace(/URI="(https:\/\/[^"]*)"/gi, (_, uri: string) => `URI="${forFfmpeg(uri, base)}"`);
    })
    .join('\n');
}

function isPlaylist(contentType: string | undefined, path: string): boolean {
  return /mpegurl/i.test(contentType ?? '') || /\.m3u8?(\?|$)/i.test(path);
}

/** A reason phrase carries no control characters and stays short. */
function reasonPhrase(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?').slice(0, 300);
}

export class EgressProxy {
  private readonly server = http.createServer((req, res) => void this.forward(req, res));
  requests = 0;
  refused = 0;

  constructor(
    private readonly guard: RemoteGuard,
    options: { tunnels?: boolean } = {},
  ) {
    this.server.on('connect', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      if (options.tunnels) void this.tunnel(req, socket, head);
      else socket.end('HTTP/1.1 405 CONNECT is not relayed\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    });
    this.server.on('clientError', (_err, socket) => socket.destroy());
  }

  /** Listens on loopback; resolves with the proxy URL to hand ffmpeg. */
  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** CONNECT host:port, to a checked address of host. */
  private async tunnel(req: http.IncomingMessage, socket: net.Socket, head: Buffer): Promise<void> {
    this.requests++;
    socket.on('error', () => socket.destroy());
    const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(req.url ?? '');
    const port = m ? Number(m[2]) : 0;
    if (!m || port < 1 || port > 65_535) {
      socket.end('HTTP/1.1 400 CONNECT needs host:port\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    let addresses: string[];
    try {
      addresses = await this.guard(m[1]!);
    } catch (err) {
      this.refused++;
      const why = err instanceof SourceError ? err.message : String(err);
      log.warn('refused a tunnel', { host: m[1], reason: why });
      socket.end(`HTTP/1.1 ${err instanceof SourceError && err.status === 403 ? 403 : 502} ${reasonPhrase(why)}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      return;
    }
    const upstream = net.connect({ host: addresses[0]!, port, timeout: UPSTREAM_TIMEOUT_MS });
    let open = false;
    upstream.once('connect', () => {
      open = true;
      upstream.setTimeout(0);
      socket.write('HTTP/1.1 200 Connection established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on('timeout', () => upstream.destroy(new Error('timeout')));
    upstream.on('error', (err) => {
      if (open) socket.destroy();
      else if (!socket.destroyed) socket.end(`HTTP/1.1 502 ${reasonPhrase(`cannot reach ${m[1]}: ${err.message}`)}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    });
    socket.on('close', () => upstream.destroy());
  }

  private async forward(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.requests++;
    const target = targetOf(req.url ?? '');
    if (!target) return answer(res, 400, 'only absolute http:// requests are relayed');
    let addresses: string[];
    try {
      addresses = await this.guard(target.host);
    } catch (err) {
      this.refused++;
      const why = err instanceof SourceError ? err.message : String(err);
      log.warn('refused a request of ffmpeg', { host: target.host, reason: why });
      return answer(res, err instanceof SourceError && err.status === 403 ? 403 : 502, why);
    }
    const headers: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) if (!HOP_HEADERS.has(name)) headers[name] = value;
    // A playlist is rewritten as text: ask for it uncompressed (ffmpeg needs no compression).
    Object.assign(headers, { host: target.hostHeader, 'accept-encoding': 'identity' });
    const options: https.RequestOptions = {
      host: target.host,
      // Node connects to these addresses only (trying each, as for any name), never resolving again.
      lookup: checkedLookup(addresses),
      port: target.port,
      method: req.method,
      path: target.path,
      headers,
      agent: false,
      timeout: UPSTREAM_TIMEOUT_MS,
    };
    const base = `${target.tls ? 'https' : 'http'}://${target.hostHeader}${target.path}`;
    const upstream = (target.tls ? https : http).request(options, (up) => {
      const out = { ...up.headers };
      delete out.connection;
      delete out['keep-alive'];
      if (typeof up.headers.location === 'string') out.location = forFfmpeg(up.headers.location, base);
      if (!isPlaylist(up.headers['content-type'], target.path)) {
        res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
        // A source cut off mid-body cuts ffmpeg's connection too (pipe() would leave it open,
        // waiting for bytes that never come): ffmpeg then reconnects, or fails and is retried.
        pipeline(up, res, () => undefined);
        return;
      }
      const chunks: Buffer[] = [];
      let bytes = 0;
      up.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (bytes > MAX_PLAYLIST_BYTES) {
          up.destroy();
          answer(res, 502, `playlist larger than ${MAX_PLAYLIST_BYTES} bytes`);
          return;
        }
        chunks.push(chunk);
      });
      up.on('end', () => {
        const body = Buffer.from(rewritePlaylist(Buffer.concat(chunks).toString('utf8'), base), 'utf8');
        delete out['content-length'];
        delete out['transfer-encoding'];
        delete out['content-encoding'];
        res.writeHead(up.statusCode ?? 502, up.statusMessage, { ...out, 'content-length': body.length });
        res.end(body);
      });
    });
    upstream.on('timeout', () => upstream.destroy(new Error(`no answer from ${target.host} in ${UPSTREAM_TIMEOUT_MS} ms`)));
    upstream.on('error', (err) => answer(res, 502, `cannot reach ${target.host}: ${err.message}`));
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  }
}

/** A dns.lookup stand-in that answers with addresses already checked. */
function checkedLookup(addresses: string[]): net.LookupFunction {
  const all = addresses.map((address) => ({ address, family: net.isIPv6(address) ? 6 : 4 }));
  return ((_host: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    if (options.all) callback(null, all);
    else callback(null, all[0]!.address, all[0]!.family);
  }) as net.LookupFunction;
}

function answer(res: http.ServerResponse, status: number, why: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, reasonPhrase(`${http.STATUS_CODES[status]}: ${why}`), { 'content-type': 'text/plain', connection: 'close' });
  res.end(`${why}\n`);
}
