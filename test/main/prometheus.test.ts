/** The /metrics registry both servers use: values read at scrape time, the process's own metrics. */
import { describe, expect, it } from 'vitest';
import { PrometheusMetrics } from '../../src/main/prometheus.js';

function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  if (line === undefined) throw new Error(`no ${series} in\n${text}`);
  return Number(line.slice(series.length + 1));
}

describe('PrometheusMetrics', () => {
  it('reads gauges, counters and labelled series afresh at every scrape', async () => {
    const m = new PrometheusMetrics();
    let total = 3;
    let level = 7;
    const byKind = new Map([['a', 1], ['b', 0]]);
    m.counter('x_total', 'A total.', () => total);
    m.gauge('x_level', 'A level.', () => level);
    m.labelled('counter', 'x_by_kind_total', 'By kind.', 'kind', () => byKind);
    let text = await m.render();
    expect(text).toMatch(/^# TYPE x_total counter$/m);
    expect(text).toMatch(/^# TYPE x_level gauge$/m);
    expect(sample(text, 'x_total')).toBe(3);
    expect(sample(text, 'x_level')).toBe(7);
    expect(sample(text, 'x_by_kind_total{kind="a"}')).toBe(1);
    expect(sample(text, 'x_by_kind_total{kind="b"}')).toBe(0);
    total = 10;
    level = 2;
    byKind.set('a', 5);
    text = await m.render();
    expect(sample(text, 'x_total')).toBe(10);
    expect(sample(text, 'x_level')).toBe(2);
    expect(sample(text, 'x_by_kind_total{kind="a"}')).toBe(5);
  });

  it("includes the process's metrics, and a blocked main thread raises the event-loop delay", async () => {
    const m = new PrometheusMetrics();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const before = await m.render();
    for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p50_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_eventloop_lag_max_seconds']) {
      expect(before).toMatch(new RegExp(`^${name} `, 'm'));
    }
    expect(sample(before, 'nodejs_eventloop_lag_max_seconds')).toBeLessThan(0.2);
    // The first interval after a scrape's reset is not measured (Node's histogram restarts its clock).
    await new Promise((resolve) => setTimeout(resolve, 50));
    const until = performance.now() + 250;
    while (performance.now() < until);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const after = await m.render();
    expect(sample(after, 'nodejs_eventloop_lag_max_seconds')).toBeGreaterThanOrEqual(0.2);
    expect(sample(after, 'nodejs_eventloop_lag_p99_seconds')).toBeGreaterThanOrEqual(0.2);
  });
});
