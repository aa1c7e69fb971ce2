/**
 * The engine's HTTP control API (seed-compatible), as the gateway calls it. An engine that
 * answers with an error passes its status and reason on; one that cannot be reached is a 502.
 * With CHORUS_TOKEN set, every call carries it (the engine then requires it too).
 */
import type { AudioFilters } from '../../shared/audio-filters.js';
import { engineStateOf, type EngineState } from '../../shared/session-state.js';
import { HttpError } from './errors.js';

const TIMEOUT_MS = 5000;

export interface EnginePlayBody {
  url: string;
  format: string;
  start_at?: number;
  /** Linear gain on the PCM before encoding (the engine's volume filter). */
  gain?: number;
  /** Effects on the PCM before the gain (audio-filters.ts). */
  filters?: AudioFilters;
}

export interface EnginePlayAnswer {
  /** The engine's play counter for this id, when it reports one (a seed engine does not). */
  play?: number;
}

export class EngineApi {
  constructor(
    private readonly baseUrl: string,
    private readonly token?: string,
  ) {}

  async play(sessionId: string, body: EnginePlayBody): Promise<EnginePlayAnswer> {
    const answer = await this.post(`/session/${encodeURIComponent(sessionId)}/play`, body);
    return Number.isSafeInteger(answer.play) ? { play: answer.play as number } : {};
  }

  /** Stop, pause or resume; an id the engine does not know is not an error here. */
  async control(sessionId: string, action: 'stop' | 'pause' | 'resume'): Promise<void> {
    try {
      await this.post(`/session/${encodeURIComponent(sessionId)}/${action}`);
    } catch (err) {
      if (!(err instanceof HttpError && err.status === 404)) throw err;
    }
  }

  /**
   * The engine's state for a session, `unknown` for a word that is not ours (natashi's engine
   * says `playing`), or undefined when it does not know the id.
   */
  async status(sessionId: string): Promise<EngineState | 'unknown' | undefined> {
    try {
      const answer = await this.request('GET', `/session/${encodeURIComponent(sessionId)}/status`);
      // chorus answers `state`, natashi `status`.
      return engineStateOf(answer.state ?? answer.status);
    } catch (err) {
      if (err instanceof HttpError && err.status === 404) return undefined;
      throw err;
    }
  }

  private post(path: string, body?: unknown): Promise<Record<string, unknown>> {
    return this.request('POST', path, body);
  }

  private async request(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'application/json' };
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    let res: Response;
    try {
      res = await fetch(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
      throw new HttpError(502, `engine unreachable at ${this.baseUrl}: ${cause}`);
    }
    const text = await res.text();
    let answer: Record<string, unknown> = {};
    try {
      const parsed: unknown = text ? JSON.parse(text) : {};
      if (typeof parsed === 'object' && parsed !== null) answer = parsed as Record<string, unknown>;
    } catch {
      // A seed engine may answer with plain text; the status says enough.
    }
    if (!res.ok) {
      const reason = typeof answer.error === 'string' ? answer.error : text.slice(0, 200) || res.statusText;
      // A 401 is not the client's doing but a gateway and an engine with different tokens.
      if (res.status === 401) throw new HttpError(502, `engine refused the gateway (${reason}): give both the same CHORUS_TOKEN`);
      // The engine's 4xx is the client's fault and passes through; its 5xx is ours: 502.
      throw new HttpError(res.status >= 400 && res.status < 500 ? res.status : 502, `engine: ${reason}`);
    }
    return answer;
  }
}
