/**
 * The gateway's /metrics (Prometheus text, prom-client): totals and gauges, no per-session
 * series, then the process's own (the main thread's event-loop delay among them).
 */
import { SESSION_STATES } from '../../shared/listener-protocol.js';
import { PrometheusMetrics } from '../prometheus.js';
import type { Gateway } from './gateway.js';

/** The sessions' summed figures, taken once per scrape. */
interface SessionTotals {
  byState: Map<string, number>;
  listeners: number;
  sent: number;
  skipped: number;
  dropped: number;
}

function sessionTotals(gateway: Gateway): SessionTotals {
  const t: SessionTotals = { byState: new Map(SESSION_STATES.map((s) => [s, 0])), listeners: 0, sent: 0, skipped: 0, dropped: 0 };
  for (const session of gateway.allSessions()) {
    const summary = session.summary();
    t.byState.set(summary.state, (t.byState.get(summary.state) ?? 0) + 1);
    t.listeners += summary.listeners;
    t.sent += summary.sent;
    t.skipped += summary.skipped;
    t.dropped += summary.dropped;
  }
  return t;
}

function createMetrics(gateway: Gateway): PrometheusMetrics {
  const m = new PrometheusMetrics();
  // Summed once per scrape, read by every session metric.
  let totals: SessionTotals | undefined;
  m.beforeScrape(() => (totals = undefined));
  const sessions = () => (totals ??= sessionTotals(gateway));
  m.labelled('gauge', 'chorus_gateway_sessions', 'Sessions by state.', 'state', () => sessions().byState);
  m.gauge('chorus_gateway_listeners', 'WebSocket listeners connected.', () => sessions().listeners);
  m.gauge('chorus_gateway_threads', 'Session worker threads alive.', () => gateway.threads);
  m.gauge('chorus_gateway_bridge_sessions', 'Sessions playing on a shared bridge thread while their own boots (CHORUS_BRIDGE_THREAD).', () => gateway.bridgeCounters.sessions);
  m.counter('chorus_gateway_bridge_moves_total', 'Sessions moved mid-track from the bridge to their own thread.', () => gateway.bridgeCounters.moves);
  m.counter('chorus_gateway_bridge_moves_given_up_total', 'Moves to an own thread given up (a splice under way at every try): the session stayed on the bridge.', () => gateway.bridgeCounters.givenUp);
  m.gauge('chorus_gateway_engine_connected', '1 while the engine socket is connected.', () => (gateway.engineConnected ? 1 : 0));
  const c = gateway.counters;
  m.counter('chorus_gateway_frames_routed_total', 'Frames from the engine put into a ring.', () => c.framesRouted);
  m.counter('chorus_gateway_frames_unknown_total', 'Frames for a session id the gateway does not know.', () => c.framesUnknown);
  m.counter('chorus_gateway_frames_stale_total', 'Frames of a replaced or ended track, refused.', () => c.framesStale);
  m.counter('chorus_gateway_frames_overrun_total', 'Frames a ring could not take despite credit.', () => c.framesOverrun);
  m.counter('chorus_gateway_frames_oversize_total', 'Engine payloads larger than an Opus packet, refused at the demux.', () => c.framesOversize);
  m.gauge('chorus_gateway_engine_starved', '1 while sessions play and the connected engine has sent nothing for CHORUS_ENGINE_STALL_MS.', () => (gateway.engineStarved ? 1 : 0));
  m.counter('chorus_gateway_ready_timeouts_total', 'Plays ended because the engine sent no ready within CHORUS_READY_TIMEOUT_MS.', () => c.readyTimeouts);
  m.counter('chorus_gateway_frames_delivered_total', 'Paced frames handed to WebSocket listeners.', () => c.framesDelivered);
  m.counter('chorus_gateway_frames_sent_total', 'Frames the session workers paced out (sessions alive now).', () => sessions().sent);
  m.counter('chorus_gateway_frames_skipped_total', 'Frames skipped for slow listeners (drop policy).', () => sessions().skipped);
  m.counter('chorus_gateway_frames_dropped_total', 'Frames dropped on ring overflow (seed engine, no credit).', () => sessions().dropped);
  m.counter('chorus_gateway_engine_reconnects_total', 'Attempts to reconnect to the engine socket.', () => gateway.linkCounters.reconnects);
  m.counter('chorus_gateway_protocol_errors_total', 'Engine streams dropped for a protocol error.', () => gateway.linkCounters.protocolErrors);
  m.counter('chorus_gateway_bad_events_total', 'Engine events ignored as malformed or unknown.', () => gateway.linkCounters.badEvents);
  m.labelled('counter', 'chorus_gateway_refused_total', 'Requests refused by access control (auth) or a limit, by kind.', 'kind', () => Object.entries(gateway.refusals.counts));
  return m;
}

const byGateway = new WeakMap<Gateway, PrometheusMetrics>();

/**
 * The gateway's metrics, made on the first call: call it as the gateway starts, so the process's
 * counters (CPU seconds, garbage collection) count from then and not from the first scrape.
 */
export function gatewayMetrics(gateway: Gateway): PrometheusMetrics {
  let m = byGateway.get(gateway);
  if (!m) byGateway.set(gateway, (m = createMetrics(gateway)));
  return m;
}

/** The gateway's /metrics text and its content type. */
export async function renderMetrics(gateway: Gateway): Promise<{ text: string; contentType: string }> {
  const m = gatewayMetrics(gateway);
  return { text: await m.render(), contentType: m.contentType };
}
