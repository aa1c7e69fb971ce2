/**
 * Both servers' /metrics: every figure they have always shown (dashboards and docs use these
 * names), the process's own metrics, and the main thread's event-loop delay, which a blocked
 * gateway main thread (/debug/block) raises.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { client } from '../../helpers/http.js';
import { startStack, stopStack, type Stack } from '../../helpers/stack.js';

const GATEWAY_NAMES = [
  'chorus_gateway_sessions', 'chorus_gateway_listeners', 'chorus_gateway_threads', 'chorus_gateway_engine_connected',
  'chorus_gateway_frames_routed_total', 'chorus_gateway_frames_unknown_total', 'chorus_gateway_frames_stale_total',
  'chorus_gateway_frames_overrun_total', 'chorus_gateway_frames_oversize_total', 'chorus_gateway_engine_starved',
  'chorus_gateway_ready_timeouts_total', 'chorus_gateway_frames_delivered_total', 'chorus_gateway_frames_sent_total',
  'chorus_gateway_frames_skipped_total', 'chorus_gateway_frames_dropped_total', 'chorus_gateway_engine_reconnects_total',
  'chorus_gateway_protocol_errors_total', 'chorus_gateway_bad_events_total', 'chorus_gateway_refused_total',
  'chorus_gateway_bridge_sessions', 'chorus_gateway_bridge_moves_total', 'chorus_gateway_bridge_moves_given_up_total',
];
const ENGINE_NAMES = [
  'chorus_engine_sessions', 'chorus_engine_plays_total', 'chorus_engine_ffmpeg_started_total', 'chorus_engine_plays_ended_total',
  'chorus_engine_queued_frames', 'chorus_engine_frames_encoded_total', 'chorus_engine_frames_sent_total', 'chorus_engine_events_sent_total',
  'chorus_engine_socket_drain_waits_total', 'chorus_engine_gateway_connected', 'chorus_engine_gateway_credit_mode',
  'chorus_engine_gateway_connections_total', 'chorus_engine_gateway_refused_total', 'chorus_engine_gateway_takeovers_total', 'chorus_engine_protocol_errors_total', 'chorus_engine_socket_rebinds_total',
  'chorus_engine_egress_requests_total', 'chorus_engine_egress_refused_total', 'chorus_engine_encoder_threads',
  'chorus_engine_resident_memory_bytes', 'chorus_engine_heap_used_bytes',
];
const PROCESS_NAMES = ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_p50_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_eventloop_lag_max_seconds'];

/** CPU seconds (user + system) of `pid` so far, from /proc (100 ticks a second on Linux). */
function procCpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  if (line === undefined) throw new Error(`no ${series} in /metrics`);
  return Number(line.slice(series.length + 1));
}

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({}, {}, { CHORUS_DEBUG_ENDPOINTS: '1' });
});
afterAll(() => stopStack(stack));

describe('/metrics', () => {
  it("the gateway's: every chorus_gateway_ figure, a sample per state and refusal kind, the process's metrics", async () => {
    const res = await client(stack.url)('GET', '/metrics');
    expect(res.status).toBe(200);
    expect(res.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    for (const name of [...GATEWAY_NAMES, ...PROCESS_NAMES]) expect(res.text).toMatch(new RegExp(`^# TYPE ${name} (gauge|counter)$`, 'm'));
    expect(value(res.text, 'chorus_gateway_sessions{state="idle"}')).toBe(0);
    expect(value(res.text, 'chorus_gateway_refused_total{kind="auth"}')).toBe(0);
    expect(value(res.text, 'chorus_gateway_engine_connected')).toBe(1);
    // Counted from the gateway's start (Node's own boot before it is not), not from its first scrape.
    expect(value(res.text, 'process_cpu_seconds_total')).toBeGreaterThan(0.2 * procCpuSeconds(stack.gateway.pid));
  });

  it("the engine's: every chorus_engine_ figure and the process's metrics", async () => {
    const res = await client(stack.engine.httpUrl)('GET', '/metrics');
    expect(res.status).toBe(200);
    for (const name of [...ENGINE_NAMES, ...PROCESS_NAMES]) expect(res.text).toMatch(new RegExp(`^# TYPE ${name} (gauge|counter)$`, 'm'));
    expect(value(res.text, 'chorus_engine_gateway_connected')).toBe(1);
    expect(value(res.text, 'chorus_engine_sessions{state="streaming"}')).toBe(0);
  });

  it("a blocked gateway main thread shows in the event-loop delay of the next scrape", async () => {
    const api = client(stack.url);
    await api('GET', '/metrics');
    const quiet = await api('GET', '/metrics');
    expect(value(quiet.text, 'nodejs_eventloop_lag_max_seconds')).toBeLessThan(0.25);
    // The first 10 ms after a scrape are not measured (the histogram restarts its clock).
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect((await api('POST', '/debug/block?ms=300')).status).toBe(200);
    const blocked = await api('GET', '/metrics');
    expect(value(blocked.text, 'nodejs_eventloop_lag_max_seconds')).toBeGreaterThanOrEqual(0.25);
    expect(value(blocked.text, 'nodejs_eventloop_lag_p99_seconds')).toBeGreaterThanOrEqual(0.25);
  });
});
