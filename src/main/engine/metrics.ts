/** The engine's /metrics (Prometheus text, prom-client): its own figures, then the process's. */
import { PrometheusMetrics } from '../prometheus.js';
import type { EgressProxy } from './egress-proxy.js';
import type { EncoderPool } from './encoder-pool.js';
import type { PassthroughCounters } from './pipeline.js';
import type { SessionManager } from './manager.js';
import type { FrameScheduler } from './scheduler.js';
import type { SocketServer } from './socket-server.js';

interface Parts {
  manager: SessionManager;
  scheduler: FrameScheduler;
  socket: SocketServer;
  /** Absent in the load scripts' synthetic engine, which encodes nothing and fetches nothing. */
  pool?: EncoderPool;
  egress?: EgressProxy;
  passthrough?: PassthroughCounters;
}

export function engineMetrics({ manager, scheduler, socket, pool, egress, passthrough }: Parts): PrometheusMetrics {
  const m = new PrometheusMetrics();
  m.labelled('gauge', 'chorus_engine_sessions', 'Sessions by state (ended ones are kept for a while for status).', 'state', () => Object.entries(manager.countByState()));
  m.counter('chorus_engine_plays_total', 'Plays requested.', () => manager.plays);
  m.counter('chorus_engine_ffmpeg_started_total', 'ffmpeg processes started.', () => manager.ffmpegStarted);
  m.counter('chorus_engine_source_retries_total', 'Remote sources opened again at the frame reached after ending early.', () => manager.sourceRetries);
  m.labelled('counter', 'chorus_engine_plays_ended_total', 'Plays that ended, by how.', 'how', () => Object.entries(manager.ended));
  m.gauge('chorus_engine_queued_frames', 'Frames waiting in session outboxes.', () => {
    let queued = 0;
    for (const s of manager.sessions.values()) queued += s.outbox.frames;
    return queued;
  });
  m.counter('chorus_engine_frames_sent_total', 'Frames written to the gateway socket.', () => scheduler.framesSent);
  m.counter('chorus_engine_events_sent_total', 'Events written to the gateway socket.', () => scheduler.eventsSent);
  m.counter('chorus_engine_socket_drain_waits_total', 'Times the gateway socket was full and writing waited for drain.', () => scheduler.drainWaits);
  m.gauge('chorus_engine_gateway_connected', '1 while a gateway is connected.', () => (scheduler.connected ? 1 : 0));
  m.gauge('chorus_engine_gateway_credit_mode', '1 while the gateway grants credits, 0 while frames are paced at real time.', () => (scheduler.mode === 'credit' ? 1 : 0));
  m.counter('chorus_engine_gateway_connections_total', 'Gateway connections accepted.', () => socket.connections);
  m.counter('chorus_engine_gateway_refused_total', 'Gateway connections refused because the current gateway was connected and healthy.', () => socket.refusals);
  m.counter('chorus_engine_gateway_takeovers_total', 'Gateway connections that took the engine from a current gateway that was not healthy.', () => socket.takeovers);
  m.counter('chorus_engine_protocol_errors_total', 'Gateway connections dropped for a protocol error.', () => socket.protocolErrors);
  m.counter('chorus_engine_socket_rebinds_total', 'Times the socket file was found removed and bound again.', () => socket.rebinds);
  if (pool) {
    m.counter('chorus_engine_frames_encoded_total', 'Opus frames encoded.', () => pool.framesEncoded);
    m.gauge('chorus_engine_encoder_threads', 'Opus encoder threads.', () => pool.size);
  }
  if (passthrough) {
    m.counter('chorus_engine_frames_passthrough_total', "Frames sent as the source's own Opus packets, not encoded (CHORUS_OPUS_PASSTHROUGH).", () => passthrough.frames);
    m.counter('chorus_engine_passthrough_runs_total', "ffmpeg runs started to pass a source's Opus packets through.", () => passthrough.runs);
    m.counter('chorus_engine_passthrough_fallbacks_total', 'Passthrough runs that found the source could not pass through (not Opus, not 20 ms packets) and handed it to encoding.', () => passthrough.fallbacks);
  }
  if (egress) {
    m.counter('chorus_engine_egress_requests_total', 'Requests ffmpeg made through the egress proxy.', () => egress.requests);
    m.counter('chorus_engine_egress_refused_total', 'Egress requests refused: a non-public address, or a host that does not resolve.', () => egress.refused);
  }
  m.gauge('chorus_engine_resident_memory_bytes', 'Resident memory of the engine process (ffmpeg children excluded).', () => process.memoryUsage.rss());
  m.gauge('chorus_engine_heap_used_bytes', 'JavaScript heap in use (what the engine holds, less what the allocator has not handed back).', () => process.memoryUsage().heapUsed);
  return m;
}
