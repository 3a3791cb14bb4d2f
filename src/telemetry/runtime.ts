import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';
import type { MetricRegistry } from './metrics.ts';
import * as sc from './semconv.ts';

/**
 * The sidecar's own footprint as metrics, so a platform team sees what a sidecar costs where it
 * runs (Envoy's `server.memory_*`, Linkerd's `process_*`): resident memory, CPU time, the V8 heap
 * by space, and the time the event loop spent busy and idle (`rate()` of the busy share is the
 * sidecar core's saturation). Read when metrics are collected (a scrape of `/metrics` or an OTLP
 * push), never on the request path.
 */
export function registerRuntimeMetrics(registry: MetricRegistry): void {
  registry.observableGauge({ name: sc.M_PROCESS_MEMORY, description: 'Resident memory of the sidecar process (RSS).', unit: 'By' }, (observe) => {
    observe(process.memoryUsage.rss());
  });
  registry.observableCounter({ name: sc.M_PROCESS_CPU, description: 'CPU time of the sidecar process, by mode.', unit: 's' }, (observe) => {
    const u = process.cpuUsage();
    observe(u.user / 1e6, { [sc.CPU_MODE]: 'user' });
    observe(u.system / 1e6, { [sc.CPU_MODE]: 'system' });
  });
  registry.observableGauge({ name: sc.M_V8_HEAP_USED, description: 'V8 heap in use, by heap space.', unit: 'By' }, (observe) => {
    for (const s of getHeapSpaceStatistics()) {
      // The shared spaces belong to a heap Node never creates: always empty.
      if (!s.space_name.startsWith('shared_')) observe(s.space_used_size, { [sc.V8_HEAP_SPACE]: s.space_name });
    }
  });
  registry.observableGauge({ name: sc.M_V8_HEAP_LIMIT, description: 'Largest size the V8 heap may grow to (`--max-old-space-size` and the young generation).', unit: 'By' }, (observe) => {
    observe(getHeapStatistics().heap_size_limit);
  });
  registry.observableCounter({ name: sc.M_EVENTLOOP_TIME, description: 'Time the event loop spent running callbacks (active) and waiting for I/O (idle).', unit: 's' }, (observe) => {
    const elu = performance.eventLoopUtilization();
    observe(elu.active / 1000, { [sc.EVENTLOOP_STATE]: 'active' });
    observe(elu.idle / 1000, { [sc.EVENTLOOP_STATE]: 'idle' });
  });
}
