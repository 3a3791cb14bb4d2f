import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { describe, expect, it } from 'vitest';
import { DataPointType, type ResourceMetrics } from '../../../src/telemetry/metric-data.ts';
import { MetricRegistry } from '../../../src/telemetry/metrics.ts';
import { serializePrometheus } from '../../../src/telemetry/prometheus.ts';
import { WARD_VERSION } from '../../../src/telemetry/semconv.ts';
import pkg from '../../../package.json' with { type: 'json' };

/**
 * ward's metric registry, which replaced the OTel metrics SDK in the sidecar, against the SDK
 * itself (a dev dependency, kept for these comparisons): the same instruments fed the same
 * values collect to the same exposition.
 */

class Reader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE });
  }
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

const RESOURCE = { 'service.name': 'orders', 'ward.service': 'orders' };
const BOUNDS = [0.001, 0.01, 0.1];

/** Feeds the same calls to ward's registry and to the SDK; returns both collections. */
async function both(feed: (r: MetricRegistry, sdk: MeterProvider) => void): Promise<{ mine: ResourceMetrics; sdk: ResourceMetrics }> {
  const errors: string[] = [];
  const registry = new MetricRegistry({ attributes: RESOURCE }, { name: 'ward' }, (name) => errors.push(name));
  const reader = new Reader();
  const provider = new MeterProvider({ resource: resourceFromAttributes(RESOURCE), readers: [reader] });
  feed(registry, provider);
  const { resourceMetrics } = await reader.collect();
  await provider.shutdown();
  return { mine: registry.collect(), sdk: resourceMetrics };
}

describe('MetricRegistry', () => {
  it('collects what the OTel SDK collects for the same instruments and values (counters, histograms, observables)', async () => {
    const allow = Object.freeze({ 'ward.decision': 'allow' });
    const deny = Object.freeze({ 'ward.decision': 'deny', 'ward.reason': 'ERR_POLICY_DENIED' });
    let fetched = 0;
    const { mine, sdk } = await both((r, p) => {
      const m = p.getMeter('ward');
      const c1 = r.counter({ name: 'ward.exchange.cache.lookups', description: 'Lookups.', unit: '{lookup}' });
      const c2 = m.createCounter('ward.exchange.cache.lookups', { description: 'Lookups.', unit: '{lookup}' });
      for (const [v, a] of [[1, allow], [2, deny], [3, allow], [-1, allow]] as const) {
        c1.add(v, a);
        c2.add(v, a);
      }
      // Where ward differs on purpose: the SDK adds NaN and Infinity, which would poison the
      // cumulative count for the rest of the process; ward ignores them, as negative values.
      c1.add(Number.NaN, deny);
      c1.add(Infinity, deny);
      const h1 = r.histogram({ name: 'ward.exchange.duration', description: 'Durations.', unit: 's', boundaries: BOUNDS });
      const h2 = m.createHistogram('ward.exchange.duration', { description: 'Durations.', unit: 's', advice: { explicitBucketBoundaries: BOUNDS } });
      for (const v of [0.0005, 0.001, 0.05, 2, 0]) {
        h1.record(v, allow);
        h2.record(v, allow);
      }
      h1.record(0.003, deny);
      h2.record(0.003, deny);
      fetched = 4;
      r.observableCounter({ name: 'ward.jwks.fetches', description: 'Fetches.', unit: '{fetch}' }, (o) => {
        o(fetched, { 'ward.result': 'ok' });
        o(1, { 'ward.result': 'failed' });
      });
      m.createObservableCounter('ward.jwks.fetches', { description: 'Fetches.', unit: '{fetch}' }).addCallback((o) => {
        o.observe(fetched, { 'ward.result': 'ok' });
        o.observe(1, { 'ward.result': 'failed' });
      });
      r.observableGauge({ name: 'ward.controlplane.connected', description: 'Connected.' }, (o) => o(1));
      m.createObservableGauge('ward.controlplane.connected', { description: 'Connected.' }).addCallback((o) => o.observe(1));
      // observed nothing: left out by both
      r.observableGauge({ name: 'ward.policy.version', description: 'Version.' }, () => undefined);
      m.createObservableGauge('ward.policy.version', { description: 'Version.' }).addCallback(() => undefined);
    });
    expect(serializePrometheus(mine)).toBe(serializePrometheus(sdk));
    // and the content is what was fed, not merely equal
    const text = serializePrometheus(mine);
    expect(text).toContain('ward_exchange_cache_lookups_total{ward_decision="allow",otel_scope_name="ward"} 4\n');
    expect(text).toContain('ward_exchange_cache_lookups_total{ward_decision="deny",ward_reason="ERR_POLICY_DENIED",otel_scope_name="ward"} 2\n');
    expect(text).toContain('ward_exchange_duration_bucket{ward_decision="allow",otel_scope_name="ward",le="0.001"} 3\n');
    expect(text).toContain('ward_jwks_fetches_total{ward_result="ok",otel_scope_name="ward"} 4\n');
    expect(text).not.toContain('ward_policy_version');
    // the data model agrees field by field, apart from the timestamps
    const strip = (rm: ResourceMetrics): unknown =>
      rm.scopeMetrics.map((s) =>
        s.metrics.map((m) => {
          const { name, description, unit, valueType } = m.descriptor; // the SDK's also carries its instrument type and advice
          return { ...m, descriptor: { name, description, unit, valueType }, dataPoints: m.dataPoints.map((p) => ({ attributes: p.attributes, value: p.value })) };
        }),
      );
    expect(strip(mine)).toEqual(strip(sdk));
  });

  it('counters are cumulative and start when the registry does; observables read their values at each collection', () => {
    let t = 1_000_500;
    let value = 1;
    const r = new MetricRegistry({ attributes: {} }, { name: 'ward' }, () => undefined, () => t);
    const c = r.counter({ name: 'c', description: 'd' });
    const a = Object.freeze({ k: 'v' });
    r.observableGauge({ name: 'g', description: 'd' }, (o) => o(value));
    c.add(2, a);
    t = 1_002_000;
    const first = r.collect();
    c.add(3, a);
    value = 7;
    t = 1_003_250;
    const second = r.collect();
    const points = (rm: ResourceMetrics) => rm.scopeMetrics[0]?.metrics.map((m) => m.dataPoints.map((p) => [p.value, p.startTime, p.endTime]));
    expect(points(first)).toEqual([[[2, [1000, 500_000_000], [1002, 0]]], [[1, [1000, 500_000_000], [1002, 0]]]]);
    expect(points(second)).toEqual([[[5, [1000, 500_000_000], [1003, 250_000_000]]], [[7, [1000, 500_000_000], [1003, 250_000_000]]]]);
  });

  it('an observation repeated for one attribute set keeps the last value; a throwing callback is reported and keeps what it observed', () => {
    const errors: string[] = [];
    const r = new MetricRegistry({ attributes: {} }, { name: 'ward' }, (name, err) => errors.push(`${name}: ${(err as Error).message}`));
    r.observableCounter({ name: 'twice', description: 'd' }, (o) => {
      o(1, { a: '1', b: '2' });
      o(5, { b: '2', a: '1' }); // the same set, other order
      o(Number.NaN, { a: 'nan' });
    });
    r.observableCounter({ name: 'throws', description: 'd' }, (o) => {
      o(3, { x: 'y' });
      throw new Error('source gone');
    });
    const rm = r.collect();
    const metrics = rm.scopeMetrics[0]?.metrics ?? [];
    expect(metrics.map((m) => [m.descriptor.name, m.dataPointType, m.dataPoints.map((p) => [p.attributes, p.value])])).toEqual([
      ['twice', DataPointType.SUM, [[{ b: '2', a: '1' }, 5]]],
      ['throws', DataPointType.SUM, [[{ x: 'y' }, 3]]],
    ]);
    expect(errors).toEqual(['throws: source gone']);
  });

  it('no instrument with values: no scope at all, except histograms, whose family is always listed', () => {
    const r = new MetricRegistry({ attributes: { 'service.name': 'x' } }, { name: 'ward' }, () => undefined);
    r.counter({ name: 'c', description: 'd' });
    expect(r.collect().scopeMetrics).toEqual([]);
    r.histogram({ name: 'h', description: 'd', unit: 's', boundaries: [1] });
    const rm = r.collect();
    expect(rm.scopeMetrics.map((s) => s.metrics.map((m) => [m.descriptor.name, m.dataPoints.length]))).toEqual([[['h', 0]]]);
    expect(rm.resource.attributes).toEqual({ 'service.name': 'x' });
  });

  it('telemetry.sdk.version, ward\'s version, is package.json\'s', () => {
    expect(WARD_VERSION).toBe(pkg.version);
  });
});
