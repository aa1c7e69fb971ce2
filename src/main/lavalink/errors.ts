/**
 * Lavalink's error body, which its clients read on every non-2xx answer of /version and /v4/*:
 *
 *   { "timestamp": ms epoch, "status": 404, "error": "Not Found", "message": "Session not found",
 *     "path": "/v4/sessions/…" }
 *
 * (`trace` only with ?trace=true in Lavalink; chorus sends no stack traces.)
 */
import http, { type ServerResponse } from 'node:http';

export interface LavalinkErrorBody {
  timestamp: number;
  status: number;
  error: string;
  message: string;
  path: string;
}

export function lavalinkErrorBody(status: number, message: string, path: string, now = Date.now()): LavalinkErrorBody {
  return { timestamp: now, status, error: http.STATUS_CODES[status] ?? 'Error', message, path };
}

export function sendLavalinkError(res: ServerResponse, status: number, message: string, path: string, headers: Readonly<Record<string, string>> = {}): void {
  const text = JSON.stringify(lavalinkErrorBody(status, message, path));
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
