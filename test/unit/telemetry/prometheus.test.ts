import { PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality, MeterProvider, MetricReader, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { describe, expect, it } from 'vitest';
import { serializePrometheus } from '../../../src/telemetry/prometheus.ts';

/**
 * ward's Prometheus exposition against the OTel exporter's `PrometheusSerializer` (kept as a
 * dev dependency for this comparison only) on the same collected metrics: every kind of
 * instrument ward uses, label values that need escaping, non-string attribute values, scopes
 * with versions, a name two instruments share with different types, and no metrics at all.
 */

class Reader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

async function collect(record: (p: MeterProvider) => void): Promise<ResourceMetrics> {
  const reader = new Reader();
  const provider = new MeterProvider({
    resource: resourceFromAttributes({ 'service.name': 'orders', 'ward.service': 'orders "main"', 'host.count': 3, 'x.list': ['a', 'b'] }),
    readers: [reader],
  });
  record(provider);
  const { resourceMetrics } = await reader.collect();
  await provider.shutdown();
  return resourceMetrics;
}

describe('serializePrometheus', () => {
  it('writes what the OTel Prometheus serializer writes, for every instrument kind ward uses', async () => {
    const rm = await collect((p) => {
      const m = p.getMeter('ward', '0.1.0');
      const decisions = m.createCounter('ward.decisions', { description: 'Authorization decisions.', unit: '{decision}' });
      decisions.add(3, { 'ward.service': 'orders', 'ward.decision': 'allow' });
      decisions.add(1, { 'ward.service': 'orders', 'ward.decision': 'deny', 'ward.reason': 'ERR_POLICY_DENIED' });
      decisions.add(2, { 'ward.service': 'back\\slash "quoted"\nnewline', ok: true, n: 7 });
      const latency = m.createHistogram('ward.authz.duration', { description: 'Time to a decision.', unit: 's', advice: { explicitBucketBoundaries: [0.0005, 0.001, 0.01, 1] } });
      for (const v of [0.0001, 0.0007, 0.002, 0.5, 3]) latency.record(v, { 'ward.service': 'orders' });
      m.createObservableGauge('ward.controlplane.connected', { description: 'Whether connected.\nSecond line.' }).addCallback((r) => r.observe(1));
      m.createObservableCounter('ward.jwks.fetches', { unit: '{fetch}' }).addCallback((r) => {
        r.observe(4, { 'ward.issuer': 'https://idp.example', 'ward.result': 'ok' });
        r.observe(0, { 'ward.issuer': 'https://idp.example', 'ward.result': 'failed' });
      });
      m.createUpDownCounter('ward.inflight').add(5);
      m.createCounter('9starts.with-digit..and.dots_total').add(1);
      // the same exposed name from a second scope, and a type conflict that drops a family
      p.getMeter('other').createCounter('ward.decisions', { description: 'Another help.' }).add(9, { x: 'y' });
      p.getMeter('other').createCounter('ward.conflict').add(1);
      p.getMeter('third').createHistogram('ward.conflict.total').record(1);
    });
    const mine = serializePrometheus(rm);
    expect(mine).toBe(new PrometheusSerializer().serialize(rm));
    // and it is the content we expect, not merely equal
    expect(mine).toContain('ward_decisions_total{ward_service="orders",ward_decision="allow",otel_scope_name="ward",otel_scope_version="0.1.0"} 3\n');
    expect(mine).toContain('ward_decisions_total{ward_service="back\\\\slash \\"quoted\\"\\nnewline",ok="true",n="7",otel_scope_name="ward",otel_scope_version="0.1.0"} 2\n');
    expect(mine).toContain('ward_authz_duration_bucket{ward_service="orders",otel_scope_name="ward",otel_scope_version="0.1.0",le="+Inf"} 5\n');
    expect(mine).toMatch(/^# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info\{service_name="orders",ward_service="orders \\"main\\"",host_count="3",x_list="\[\\"a\\",\\"b\\"\]"\} 1\n/);
  });

  it('writes what the OTel serializer writes with no metrics', async () => {
    const rm = await collect(() => {});
    expect(serializePrometheus(rm)).toBe(new PrometheusSerializer().serialize(rm));
    expect(serializePrometheus(rm)).toContain('# no registered metrics');
  });

  it('keys that sanitize to one label name give one label, values joined in key order (regression: a repeated label name fails the whole scrape)', async () => {
    const reader = new Reader();
    const provider = new MeterProvider({ resource: resourceFromAttributes({ 'service.name': 'orders', 'team-name': 'b', team_name: 'a', '1st': 'z' }), readers: [reader] });
    provider.getMeter('ward').createCounter('ward.calls').add(1, { 'ward.route': '/x', 'ward-route': '/y' });
    const { resourceMetrics } = await reader.collect();
    await provider.shutdown();
    const text = serializePrometheus(resourceMetrics);
    expect(text).toContain('target_info{service_name="orders",team_name="b;a",key_1st="z"} 1\n');
    expect(text).toContain('ward_calls_total{ward_route="/y;/x",otel_scope_name="ward"} 1\n');
    for (const line of text.split('\n').filter((l) => l.includes('{'))) {
      const labels = [...line.slice(line.indexOf('{') + 1, line.lastIndexOf('}')).matchAll(/([A-Za-z_][A-Za-z0-9_]*)="/g)].map((m) => m[1]);
      expect(new Set(labels).size, line).toBe(labels.length);
    }
  });
});

