import { describe, expect, it } from 'vitest';
import { memoryReport } from '../../../src/admin/memory.ts';
import { MetricRegistry } from '../../../src/telemetry/metrics.ts';
import { serializePrometheus } from '../../../src/telemetry/prometheus.ts';
import { registerRuntimeMetrics } from '../../../src/telemetry/runtime.ts';
import { parsePrometheusText, sampleValue } from './prometheus-parser.ts';

function collect(r: MetricRegistry): ReturnType<typeof parsePrometheusText> {
  return parsePrometheusText(serializePrometheus(r.collect()));
}

describe('runtime metrics', () => {
  it('report the process: memory, CPU by mode, V8 heap by space and limit, event loop time', async () => {
    const errors: string[] = [];
    const r = new MetricRegistry({ attributes: {} }, { name: 'ward' }, (name) => errors.push(name));
    registerRuntimeMetrics(r);
    const before = collect(r);
    // Busy until this process has used 30 ms of user CPU (not 30 ms of wall time: on a loaded
    // machine the loop may not get the core), and at least 30 ms of active loop time.
    const cpu0 = process.cpuUsage().user;
    const start = Date.now();
    while (process.cpuUsage().user - cpu0 < 30_000 || Date.now() - start < 30);
    await new Promise((res) => setTimeout(res, 30)); // waiting: idle loop time
    const after = collect(r);
    expect(errors).toEqual([]);

    expect(after.get('process_memory_usage')?.type).toBe('gauge');
    expect(sampleValue(after, 'process_memory_usage')).toBeGreaterThan(10 * 1024 * 1024);
    expect(after.get('process_cpu_time_total')?.type).toBe('counter');
    const user = (f: typeof after): number => sampleValue(f, 'process_cpu_time_total', { cpu_mode: 'user' }) ?? NaN;
    expect(user(after) - user(before)).toBeGreaterThanOrEqual(0.02);
    expect(sampleValue(after, 'process_cpu_time_total', { cpu_mode: 'system' })).toBeGreaterThanOrEqual(0);

    const spaces = (after.get('v8js_memory_heap_used')?.samples ?? []).map((s) => s.labels['v8js_heap_space_name']);
    expect(spaces).toEqual(expect.arrayContaining(['new_space', 'old_space', 'code_space', 'large_object_space']));
    expect(spaces.filter((n) => n?.startsWith('shared_'))).toEqual([]);
    expect(sampleValue(after, 'v8js_memory_heap_used', { v8js_heap_space_name: 'old_space' })).toBeGreaterThan(0);
    expect(sampleValue(after, 'v8js_memory_heap_limit')).toBeGreaterThan(64 * 1024 * 1024);

    const loop = (f: typeof after, state: string): number => sampleValue(f, 'nodejs_eventloop_time_total', { nodejs_eventloop_state: state }) ?? NaN;
    expect(loop(after, 'active') - loop(before, 'active')).toBeGreaterThanOrEqual(0.02);
    expect(loop(after, 'idle') - loop(before, 'idle')).toBeGreaterThanOrEqual(0.02);
  });
});

describe('the admin /memory document', () => {
  it('reports RSS, its peak, the heap and its spaces, and buffers outside the heap', () => {
    const keep = Buffer.alloc(8 * 1024 * 1024, 1); // 8 MiB outside the heap
    const m = memoryReport();
    expect(m.rssBytes).toBeGreaterThan(10 * 1024 * 1024);
    expect(m.peakRssBytes).toBeGreaterThanOrEqual(m.rssBytes);
    expect(m.heap.usedBytes).toBeGreaterThan(0);
    expect(m.heap.usedBytes).toBeLessThanOrEqual(m.heap.totalBytes);
    expect(m.heap.limitBytes).toBeGreaterThan(m.heap.totalBytes);
    expect(m.heap.peakMallocedBytes).toBeGreaterThanOrEqual(m.heap.mallocedBytes);
    expect(m.spaces.map((s) => s.name)).toContain('old_space');
    expect(m.arrayBuffersBytes).toBeGreaterThanOrEqual(keep.length);
    expect(m.externalBytes).toBeGreaterThanOrEqual(m.arrayBuffersBytes);
    expect(JSON.parse(JSON.stringify(m))).toEqual(m);
  });
});
