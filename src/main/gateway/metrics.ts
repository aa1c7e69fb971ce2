/** The gateway's /metrics in Prometheus text format (totals and gauges; no per-session series). */
import { SESSION_STATES } from '../../shared/listener-protocol.js';
import type { Gateway } from './gateway.js';

export function renderMetrics(gateway: Gateway): string {
  const byState = new Map<string, number>(SESSION_STATES.map((s) => [s, 0]));
  let listeners = 0;
  let sent = 0;
  let skipped = 0;
  let dropped = 0;
  for (const session of gateway.allSessions()) {
    const summary = session.summary();
    byState.set(summary.state, (byState.get(summary.state) ?? 0) + 1);
    listeners += summary.listeners;
    sent += summary.sent;
    skipped += summary.skipped;
    dropped += summary.dropped;
  }
  const c = gateway.counters;
  const link = gateway.linkCounters;
  const lines = [
    '# HELP chorus_gateway_sessions Sessions by state.',
    '# TYPE chorus_gateway_sessions gauge',
    ...[...byState].map(([state, n]) => `chorus_gateway_sessions{state="${state}"} ${n}`),
    metric('chorus_gateway_listeners', 'gauge', 'WebSocket listeners connected.', listeners),
    metric('chorus_gateway_threads', 'gauge', 'Session worker threads alive.', gateway.threads),
    metric('chorus_gateway_engine_connected', 'gauge', '1 while the engine socket is connected.', gateway.engineConnected ? 1 : 0),
    metric('chorus_gateway_frames_routed_total', 'counter', 'Frames from the engine put into a ring.', c.framesRouted),
    metric('chorus_gateway_frames_unknown_total', 'counter', 'Frames for a session id the gateway does not know.', c.framesUnknown),
    metric('chorus_gateway_frames_stale_total', 'counter', 'Frames of a replaced or ended track, refused.', c.framesStale),
    metric('chorus_gateway_frames_overrun_total', 'counter', 'Frames a ring could not take despite credit.', c.framesOverrun),
    metric('chorus_gateway_frames_oversize_total', 'counter', 'Engine payloads larger than an Opus packet, refused at the demux.', c.framesOversize),
    metric('chorus_gateway_engine_starved', 'gauge', '1 while sessions play and the connected engine has sent nothing for CHORUS_ENGINE_STALL_MS.', gateway.engineStarved ? 1 : 0),
    metric('chorus_gateway_ready_timeouts_total', 'counter', 'Plays ended because the engine sent no ready within CHORUS_READY_TIMEOUT_MS.', c.readyTimeouts),
    metric('chorus_gateway_frames_delivered_total', 'counter', 'Paced frames handed to WebSocket listeners.', c.framesDelivered),
    metric('chorus_gateway_frames_sent_total', 'counter', 'Frames the session workers paced out (sessions alive now).', sent),
    metric('chorus_gateway_frames_skipped_total', 'counter', 'Frames skipped for slow listeners (drop policy).', skipped),
    metric('chorus_gateway_frames_dropped_total', 'counter', 'Frames dropped on ring overflow (seed engine, no credit).', dropped),
    metric('chorus_gateway_engine_reconnects_total', 'counter', 'Attempts to reconnect to the engine socket.', link.reconnects),
    metric('chorus_gateway_protocol_errors_total', 'counter', 'Engine streams dropped for a protocol error.', link.protocolErrors),
    metric('chorus_gateway_bad_events_total', 'counter', 'Engine events ignored as malformed or unknown.', link.badEvents),
    '# HELP chorus_gateway_refused_total Requests refused by access control (auth) or a limit, by kind.',
    '# TYPE chorus_gateway_refused_total counter',
    ...Object.entries(gateway.refusals.counts).map(([kind, n]) => `chorus_gateway_refused_total{kind="${kind}"} ${n}`),
  ];
  return lines.join('\n') + '\n';
}

function metric(name: string, type: 'gauge' | 'counter', help: string, value: number): string {
  return `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${name} ${value}`;
}
