/**
 * What the gateway's HTTP routes and WebSocket upgrades check of a request before acting: its
 * Host and target, its body (bounded), and the values a client sends (a source URL, a format, an
 * RTP target). Each refusal is an HttpError whose message says what is wrong.
 */
import type { IncomingMessage } from 'node:http';
import net from 'node:net';
import { isLoopbackAddress } from '../../shared/access.js';
import type { RtpTarget } from '../../shared/worker-messages.js';
import { HttpError } from './errors.js';
import { isStreamFormat } from './track-run.js';
import { RefusedError } from './limits.js';

const MAX_URL_CHARS = 4096;

const URL_WITH_AUTHORITY = /^[a-z][a-z0-9+.-]*:\/\//i;

/** HTTP/1.1 requires a Host header (RFC 9112 §3.2); a request without one gets a JSON reason. */
export function requireHost(req: IncomingMessage): void {
  if (req.headers.host === undefined) throw new HttpError(400, 'the request has no Host header (HTTP/1.1 requires one)');
}

/** The request's target as a URL; one that is none (`//`, `http://[`) is a 400, not a throw. */
export function requestUrl(req: IncomingMessage): URL {
  try {
    return new URL(req.url ?? '/', 'http://gateway');
  } catch {
    throw new HttpError(400, 'the request target is not a valid path');
  }
}

export function checkUrl(value: unknown): string {
  if (typeof value !== 'string' || value.trim() === '') throw new HttpError(400, 'body needs "url", a non-empty string');
  if (value.length > MAX_URL_CHARS) throw new HttpError(400, `"url" is longer than ${MAX_URL_CHARS} characters`);
  // A URL with an authority must parse (host, port up to 65535) before it goes to the engine.
  if (URL_WITH_AUTHORITY.test(value) && !URL.canParse(value)) {
    throw new HttpError(400, '"url" is not a valid URL: check its host and its port (at most 65535)');
  }
  return value;
}

export function checkFormat(value: unknown) {
  if (value === undefined) return 'opus' as const;
  if (!isStreamFormat(value)) throw new HttpError(400, '"format" must be "opus" or "web" (listeners get Opus)');
  return value;
}

/** CHORUS_RTP_ALLOW as a BlockList, so that one address written two ways (::1, 0:0::1) matches. */
export function addressSet(addresses: readonly string[]): net.BlockList {
  const set = new net.BlockList();
  for (const a of addresses) set.addAddress(a, net.isIPv6(a) ? 'ipv6' : 'ipv4');
  return set;
}

/** RTP goes to loopback, or to addresses CHORUS_RTP_ALLOW lists: never anywhere a caller names. */
export function checkRtpTarget(body: Record<string, unknown>, allow: net.BlockList): RtpTarget {
  const { host, port } = body;
  if (typeof host !== 'string' || net.isIP(host) === 0) throw new HttpError(400, '"host" must be an IPv4 or IPv6 address');
  if (!Number.isInteger(port) || (port as number) < 1 || (port as number) > 65535) {
    throw new HttpError(400, '"port" must be an integer from 1 to 65535');
  }
  const family = net.isIPv6(host) ? 'ipv6' : 'ipv4';
  if (!isLoopbackAddress(host) && !allow.check(host, family)) {
    throw new HttpError(403, `RTP target ${host} is not allowed: only loopback and CHORUS_RTP_ALLOW`);
  }
  return { host, port: port as number };
}

export function methodNotAllowed(method: string, allowed: string): HttpError {
  return new HttpError(405, `${method} is not allowed here; use ${allowed}`);
}

/**
 * The request body, up to `max` bytes. Past it (declared or streamed): a 413 that closes the
 * connection once answered, so the rest is never read, and nothing more is kept meanwhile.
 */
export function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const tooLarge = () =>
    new RefusedError('body', 413, `request body is larger than ${max} bytes (CHORUS_MAX_BODY_BYTES)`, { connection: 'close' });
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > max) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      if (over) return;
      size += chunk.length;
      if (size > max) {
        over = true;
        chunks.length = 0;
        req.pause();
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export async function readJson(req: IncomingMessage, max: number): Promise<Record<string, unknown>> {
  const body = await readBody(req, max);
  if (body.length === 0) throw new HttpError(400, 'body must be a JSON object');
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new HttpError(400, 'body is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new HttpError(400, 'body must be a JSON object');
  return value as Record<string, unknown>;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The request's path for a log line (no query: it may hold a token), cut short. */
export function pathOf(req: IncomingMessage): string {
  const raw = req.url ?? '/';
  const q = raw.indexOf('?');
  return (q < 0 ? raw : raw.slice(0, q)).slice(0, 200);
}
