/**
 * The HTTP kit of both servers (the engine's control API, the gateway's API and its Lavalink
 * routes) and of the load scripts' synthetic engine: an error that carries its status and the
 * reason a client reads as `{"error": reason}`, a body reader bounded in bytes, and JSON answers.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    message: string,
    /** Extra response headers (Retry-After, WWW-Authenticate, Connection: close). */
    readonly headers: Readonly<Record<string, string>> = {},
    /** Extra fields of the JSON answer, next to `error` (the engine's session status). */
    readonly fields: Readonly<Record<string, unknown>> = {},
  ) {
    super(message);
  }
}

/** A 413 whose answer closes the connection, so the rest of the body is never read. */
export function bodyTooLarge(max: number, why = ''): HttpError {
  return new HttpError(413, `request body is larger than ${max} bytes${why}`, { connection: 'close' });
}

/**
 * The request body, up to `max` bytes. Past it, declared or streamed: `tooLarge()` (a 413 that
 * closes the connection), and nothing more of the body is kept meanwhile.
 */
export function readBody(req: IncomingMessage, max: number, tooLarge: () => Error = () => bodyTooLarge(max)): Promise<Buffer> {
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
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** A body that must be one JSON object; a 400 with `notJson` (or a plainer reason) otherwise. */
export function parseJsonObject(body: Buffer | string, notJson = 'body is not valid JSON'): Record<string, unknown> {
  const text = typeof body === 'string' ? body : body.toString('utf8');
  if (text.length === 0) throw new HttpError(400, 'body must be a JSON object');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new HttpError(400, notJson);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new HttpError(400, 'body must be a JSON object');
  return value as Record<string, unknown>;
}

/** A JSON answer with its length; nothing when an answer has already begun. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Readonly<Record<string, string>> = {}): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** `err` as the client gets it: an HttpError's status, headers and fields; any other error a 500. */
export function sendError(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (err instanceof HttpError) sendJson(res, err.status, { error: err.message, ...err.fields }, err.headers);
  else sendJson(res, 500, { error: errorMessage(err) });
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Aborted when the answer's connection closes before the answer is written: work for it may stop. */
export function gone(res: ServerResponse): AbortSignal {
  const controller = new AbortController();
  res.once('close', () => {
    if (!res.writableFinished) controller.abort();
  });
  return controller.signal;
}
