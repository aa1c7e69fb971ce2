/**
 * The gateway's HTTP API and WebSocket address, as the page uses them. URLs are relative to the
 * page, so the player also works behind a reverse proxy that mounts the gateway under a path.
 * The token (CHORUS_TOKEN, as the page got it: see token.ts) is passed on as `Authorization:
 * Bearer` on HTTP and as `?token=` on the WebSocket (a browser cannot set headers there; the
 * gateway logs paths without their query). Without one, nothing is sent.
 */
import type { SessionSummary, SessionsResponse } from '../shared/gateway-api.js';
import type { QueueItem, QueueOp, QueueState } from '../shared/queue.js';

/** GET /sessions/:id/queue: the queue, and what plays now if the queue started it. */
export interface QueueAnswer {
  queue: QueueState;
  nowPlaying?: { index: number; item: QueueItem; position: number; state: string };
}

export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export class GatewayApi {
  constructor(
    private readonly base: URL,
    private token?: string,
  ) {}

  setToken(token: string | undefined): void {
    this.token = token;
  }

  private url(path: string): URL {
    return new URL(path, this.base);
  }

  private async request<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await fetch(this.url(path), {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch {
      throw new ApiError('the gateway cannot be reached', 0);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const message =
        typeof json === 'object' && json !== null && typeof (json as { error?: unknown }).error === 'string'
          ? (json as { error: string }).error
          : text.trim() || res.statusText;
      throw new ApiError(message, res.status);
    }
    return json as T;
  }

  private action(id: string, verb: string, body?: unknown): Promise<SessionSummary | undefined> {
    return this.request<{ session?: SessionSummary } | undefined>(
      'POST',
      `sessions/${encodeURIComponent(id)}/${verb}`,
      body ?? {},
    ).then((r) => r?.session);
  }

  sessions(): Promise<SessionsResponse> {
    return this.request('GET', 'sessions');
  }

  play(id: string, url: string, format?: string): Promise<SessionSummary | undefined> {
    return this.action(id, 'play', format ? { url, format } : { url });
  }

  pause(id: string): Promise<SessionSummary | undefined> {
    return this.action(id, 'pause');
  }

  resume(id: string): Promise<SessionSummary | undefined> {
    return this.action(id, 'resume');
  }

  /** 401: the gateway wants a token (CHORUS_TOKEN is set) and had none or a wrong one. */
  static isAuthError(err: unknown): boolean {
    return err instanceof ApiError && err.status === 401;
  }

  stop(id: string): Promise<SessionSummary | undefined> {
    return this.action(id, 'stop');
  }

  seek(id: string, seconds: number): Promise<SessionSummary | undefined> {
    return this.action(id, 'seek', { seconds });
  }

  /** The session's queue; undefined when it has none (404). */
  async queue(id: string): Promise<QueueAnswer | undefined> {
    try {
      return await this.request<QueueAnswer>('GET', `sessions/${encodeURIComponent(id)}/queue`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return undefined;
      throw err;
    }
  }

  /** A queue operation (add, next, jump, …); answers the queue after it. */
  queueOp(id: string, op: QueueOp, body: Record<string, unknown> = {}): Promise<QueueState> {
    return this.request<{ queue: QueueState }>('POST', `sessions/${encodeURIComponent(id)}/queue/${op}`, body).then((r) => r.queue);
  }

  /** ws(s)://…/ws?session=<id>[&token=…] */
  socketUrl(id: string): string {
    const u = this.url('ws');
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.searchParams.set('session', id);
    if (this.token) u.searchParams.set('token', this.token);
    return u.toString();
  }
}
