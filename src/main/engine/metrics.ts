/** The engine's /metrics in Prometheus text format (version 0.0.4). */
import type { EgressProxy } from './egress-proxy.js';
import type { EncoderPool } from './encoder-pool.js';
import type { SessionManager } from './manager.js';
import type { Scheduler } from './scheduler.js';
import type { SocketServer } from './socket-server.js';

interface Parts {
  manager: SessionManager;
  scheduler: Scheduler;
  socket: SocketServer;
  pool: EncoderPool;
  egress: EgressProxy;
}

export function renderMetrics({ manager, scheduler, socket, pool, egress }: Parts): string {
  const lines: string[] = [];
  const metric = (name: string, type: 'counter' | 'gauge', help: string, samples: [string, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) lines.push(`${name}${labels} ${value}`);
  };
  const one = (value: number): [string, number][] => [['', value]];

  metric('chorus_engine_sessions', 'gauge', 'Sessions by state (ended ones are kept for a while for status).',
    Object.entries(manager.countByState()).map(([state, n]) => [`{state="${state}"}`, n]));
  metric('chorus_engine_plays_total', 'counter', 'Plays requested.', one(manager.plays));
  metric('chorus_engine_ffmpeg_started_total', 'counter', 'ffmpeg processes started.', one(manager.ffmpegStarted));
  metric('chorus_engine_source_retries_total', 'counter', 'Remote sources opened again at the frame reached after ending early.', one(manager.sourceRetries));
  metric('chorus_engine_plays_ended_total', 'counter', 'Plays that ended, by how.',
    Object.entries(manager.ended).map(([how, n]) => [`{how="${how}"}`, n]));
  let queued = 0;
  for (const s of manager.sessions.values()) queued += s.outbox.frames;
  metric('chorus_engine_queued_frames', 'gauge', 'Frames waiting in session outboxes.', one(queued));
  metric('chorus_engine_frames_encoded_total', 'counter', 'Opus frames encoded.', one(pool.framesEncoded));
  metric('chorus_engine_frames_sent_total', 'counter', 'Frames written to the gateway socket.', one(scheduler.framesSent));
  metric('chorus_engine_events_sent_total', 'counter', 'Events written to the gateway socket.', one(scheduler.eventsSent));
  metric('chorus_engine_socket_drain_waits_total', 'counter', 'Times the gateway socket was full and writing waited for drain.', one(scheduler.drainWaits));
  metric('chorus_engine_gateway_connected', 'gauge', '1 while a gateway is connected.', one(scheduler.connected ? 1 : 0));
  metric('chorus_engine_gateway_credit_mode', 'gauge', '1 while the gateway grants credits, 0 while frames are paced at real time.', one(scheduler.mode === 'credit' ? 1 : 0));
  metric('chorus_engine_gateway_connections_total', 'counter', 'Gateway connections accepted.', one(socket.connections));
  metric('chorus_engine_protocol_errors_total', 'counter', 'Gateway connections dropped for a protocol error.', one(socket.protocolErrors));
  metric('chorus_engine_socket_rebinds_total', 'counter', 'Times the socket file was found removed and bound again.', one(socket.rebinds));
  metric('chorus_engine_egress_requests_total', 'counter', 'Requests ffmpeg made through the egress proxy.', one(egress.requests));
  metric('chorus_engine_egress_refused_total', 'counter', 'Egress requests refused: a non-public address, or a host that does not resolve.', one(egress.refused));
  metric('chorus_engine_encoder_threads', 'gauge', 'Opus encoder threads.', one(pool.size));
  const mem = process.memoryUsage();
  metric('chorus_engine_resident_memory_bytes', 'gauge', 'Resident memory of the engine process (ffmpeg children excluded).', one(mem.rss));
  metric('chorus_engine_heap_used_bytes', 'gauge', 'JavaScript heap in use (what the engine holds, less what the allocator has not handed back).', one(mem.heapUsed));
  return lines.join('\n') + '\n';
}
