/**
 * The gateway's limits and refusals: what each limit is called, the error a client gets when it
 * hits one, the token bucket behind CHORUS_PLAY_RATE, and the count (for /metrics) and the log
 * line of every refusal — at most a few lines a second per kind, so a flood cannot flood the log.
 *
 *   kind        variable                     answer
 *   auth        CHORUS_TOKEN                 401 (403: a listen token used for control)
 *   sessions    CHORUS_MAX_SESSIONS          429
 *   listeners   CHORUS_MAX_LISTENERS         429 on the WebSocket upgrade
 *   body        CHORUS_MAX_BODY_BYTES        413, and the connection is closed
 *   ws_message  CHORUS_MAX_WS_MESSAGE_BYTES  WebSocket close 1009
 *   ws_rate     CHORUS_WS_MESSAGE_RATE       WebSocket close 1008 (and the socket is no longer read)
 *   connections CHORUS_MAX_CONNECTIONS       the connection is closed at once, unanswered
 *   play_rate   CHORUS_PLAY_RATE             429 with Retry-After (HTTP), an error event (WebSocket)
 *   rtp_sinks   CHORUS_MAX_RTP_SINKS         429
 */
import { logger, type LogFields } from '../../shared/log.js';
import { HttpError } from '../http-kit.js';

const log = logger('gateway');

export const REFUSAL_KINDS = ['auth', 'sessions', 'listeners', 'body', 'ws_message', 'ws_rate', 'connections', 'play_rate', 'rtp_sinks'] as const;
export type RefusalKind = (typeof REFUSAL_KINDS)[number];

/** A request refused by access control or a limit: an HttpError that is counted and logged. */
export class RefusedError extends HttpError {
  override name = 'RefusedError';
  constructor(
    readonly kind: RefusalKind,
    status: number,
    message: string,
    headers: Readonly<Record<string, string>> = {},
  ) {
    super(status, message, headers);
  }
}

/**
 * A token bucket: holds up to `capacity` tokens and gains `perSecond` a second; taking one
 * answers 0, or how many ms until one is there (and takes nothing).
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly capacity: number,
    private readonly perSecond: number,
    now: number,
  ) {
    this.tokens = capacity;
    this.last = now;
  }

  take(now: number): number {
    this.tokens = Math.min(this.capacity, this.tokens + (Math.max(0, now - this.last) * this.perSecond) / 1000);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.tokens) * 1000) / this.perSecond);
  }
}

/**
 * CHORUS_PLAY_RATE: plays (play and seek, each starts an ffmpeg) per session per second, with
 * bursts of as many. Buckets hang off the session object, so they go when the session does.
 */
export class PlayRate {
  private readonly buckets = new WeakMap<object, TokenBucket>();

  constructor(
    private readonly perSecond: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** Takes a play for `session`, or throws a 429 with Retry-After. */
  take(session: object, id: string): void {
    const now = this.now();
    let bucket = this.buckets.get(session);
    if (!bucket) {
      bucket = new TokenBucket(this.perSecond, this.perSecond, now);
      this.buckets.set(session, bucket);
    }
    const waitMs = bucket.take(now);
    if (waitMs === 0) return;
    throw new RefusedError(
      'play_rate',
      429,
      `too many plays for session ${JSON.stringify(id)} (CHORUS_PLAY_RATE=${this.perSecond} per second); try again in ${(waitMs / 1000).toFixed(1)} s`,
      { 'retry-after': String(Math.max(1, Math.ceil(waitMs / 1000))) },
    );
  }
}

/** Lines per kind per window, past which refusals are only counted (and summed into the next line). */
const LOG_LINES_PER_WINDOW = 5;
const LOG_WINDOW_MS = 10_000;

/** Counts every refusal by kind and logs one line for each, a few per kind per window. */
export class Refusals {
  readonly counts: Record<RefusalKind, number> = Object.fromEntries(REFUSAL_KINDS.map((k) => [k, 0])) as Record<RefusalKind, number>;
  private readonly windows = new Map<RefusalKind, { start: number; lines: number; suppressed: number }>();

  note(err: RefusedError, fields: LogFields = {}, now = Date.now()): void {
    this.counts[err.kind]++;
    let w = this.windows.get(err.kind);
    if (!w || now - w.start >= LOG_WINDOW_MS) {
      w = { start: now, lines: 0, suppressed: w?.suppressed ?? 0 };
      this.windows.set(err.kind, w);
    }
    if (w.lines >= LOG_LINES_PER_WINDOW) {
      w.suppressed++;
      return;
    }
    w.lines++;
    const suppressed = w.suppressed;
    w.suppressed = 0;
    log.warn(`refused: ${err.message}`, { kind: err.kind, status: err.status, ...fields, ...(suppressed > 0 ? { suppressed } : {}) });
  }
}
