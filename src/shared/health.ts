/**
 * The one `GET /health` shape of the engine and the gateway (browser-safe: no Node imports).
 *
 * `status` is `ok` when the process can take plays, `unavailable` (with `reason`) when it cannot;
 * the HTTP status says the same for probes: 200 or 503. A process that answers at all is alive,
 * so a liveness probe takes any answer and a readiness probe (or a load balancer) wants 200.
 */
export interface Health {
  status: 'ok' | 'unavailable';
  /** Why it is unavailable (absent when ok). */
  reason?: string;
  /** Sessions with a track under way. */
  sessions: number;
  max_sessions: number;
  uptime_s: number;
}

export interface EngineHealth extends Health {
  gateway_connected: boolean;
  flow: 'paced' | 'credit';
  encoder_threads: number;
  ffmpeg: string;
}

export interface GatewayHealth extends Health {
  engine_connected: boolean;
  /** `credit` once the connected engine said hello with credits; `paced` for a seed engine, or before. */
  engine_flow: 'paced' | 'credit';
  /** Connected, sessions play, and nothing has come from the engine for CHORUS_ENGINE_STALL_MS. */
  engine_starved: boolean;
  /** Why the engine refuses this gateway's connection (another, healthy gateway holds it), while it does. */
  engine_refused?: string;
  /** Worker threads alive now. */
  threads: number;
}

export function healthHttpStatus(health: Pick<Health, 'status'>): 200 | 503 {
  return health.status === 'ok' ? 200 : 503;
}
