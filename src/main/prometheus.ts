/**
 * A /metrics registry (prom-client) whose values are read from the server's own counters when
 * scraped. Every registry carries prom-client's default process metrics: CPU, memory, handles,
 * garbage collection and the main thread's event-loop delay since the previous scrape
 * (`nodejs_eventloop_lag_p50_seconds`, `_p99_seconds`, `_max_seconds`, from perf_hooks'
 * monitorEventLoopDelay) — on the gateway, the delay every WebSocket frame waits behind.
 */
import client from 'prom-client';

/** How often the event-loop delay is sampled, in ms. */
const EVENT_LOOP_RESOLUTION_MS = 10;

export class PrometheusMetrics {
  private readonly registry = new client.Registry();
  private readonly scrapeHooks: (() => void)[] = [];

  constructor() {
    client.collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_RESOLUTION_MS });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  gauge(name: string, help: string, read: () => number): void {
    new client.Gauge({ name, help, registers: [this.registry], collect() { this.set(read()); } });
  }

  /** A total kept elsewhere (it only grows), shown as a counter. */
  counter(name: string, help: string, read: () => number): void {
    new client.Counter({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  }

  /** One series per value of `label`, each read afresh at every scrape. */
  labelled(type: 'gauge' | 'counter', name: string, help: string, label: string, read: () => Iterable<[string, number]>): void {
    const registers = [this.registry];
    if (type === 'gauge') {
      new client.Gauge({
        name, help, registers, labelNames: [label],
        collect() {
          this.reset();
          for (const [value, n] of read()) this.set({ [label]: value }, n);
        },
      });
    } else {
      new client.Counter({
        name, help, registers, labelNames: [label],
        collect() {
          this.reset();
          for (const [value, n] of read()) this.inc({ [label]: value }, n);
        },
      });
    }
  }

  /** `hook` runs at the start of every scrape, before any value is read. */
  beforeScrape(hook: () => void): void {
    this.scrapeHooks.push(hook);
  }

  render(): Promise<string> {
    for (const hook of this.scrapeHooks) hook();
    return this.registry.metrics();
  }
}
