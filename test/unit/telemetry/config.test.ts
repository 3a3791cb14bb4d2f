import { describe, expect, it } from 'vitest';
import { parseEndpoint, resolveTelemetry, type TelemetryConfig } from '../../../src/config/telemetry.ts';
import { ConfigError } from '../../../src/errors/ward-error.ts';

const ctx = { service: 'orders', file: '/etc/ward/sidecar.yaml', baseDir: '/etc/ward' };
const cp = { ...ctx, controlPlane: { address: 'cp.ward-system:15010', tls: false } };

function resolve(cfg: TelemetryConfig, env: Record<string, string> = {}, c: typeof ctx = ctx): ReturnType<typeof resolveTelemetry> {
  return resolveTelemetry(cfg, c, env);
}

function issuesOf(f: () => unknown): { path: string; file: string }[] {
  try {
    f();
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => ({ path: i.path, file: i.file }));
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('telemetry config and OTEL_* environment', () => {
  it('defaults: enabled, service name from the sidecar, export to the control plane, parent-based always-on sampling', () => {
    const r = resolve({}, {}, cp);
    expect(r.enabled).toBe(true);
    expect(r.serviceName).toBe('orders');
    expect(r.traces).toMatchObject({ address: 'cp.ward-system:15010', tls: false, timeoutMs: 10_000, source: 'control-plane' });
    expect(r.logs?.address).toBe('cp.ward-system:15010');
    expect(r.metrics?.address).toBe('cp.ward-system:15010');
    expect(r.sampler).toEqual({ ratio: 1, parentBased: true });
    expect(r.spanQueue).toEqual({ maxSize: 2048, batchSize: 512, delayMs: 1000 });
    expect(r.metricsIntervalMs).toBe(60_000);
  });

  it('exports nowhere without an endpoint or a control plane', () => {
    const r = resolve({});
    expect([r.traces, r.logs, r.metrics]).toEqual([null, null, null]);
  });

  it('honours the standard variables', () => {
    const r = resolve(
      {},
      {
        OTEL_EXPORTER_OTLP_ENDPOINT: 'https://collector.obs:4317',
        OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: 'http://logs.obs:4317',
        OTEL_EXPORTER_OTLP_HEADERS: 'x-api-key=s%20ecret,X-Tenant=acme',
        OTEL_SERVICE_NAME: 'orders-sidecar',
        OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=prod,k8s.pod.name=orders-1',
        OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
        OTEL_TRACES_SAMPLER_ARG: '0.25',
        OTEL_BSP_MAX_QUEUE_SIZE: '100',
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '500',
        OTEL_EXPORTER_OTLP_TIMEOUT: '3000',
        OTEL_METRIC_EXPORT_INTERVAL: '5000',
        OTEL_METRICS_EXPORTER: 'none',
      },
      cp,
    );
    expect(r.traces).toMatchObject({ address: 'collector.obs:4317', tls: true, timeoutMs: 3000, headers: { 'x-api-key': 's ecret', 'x-tenant': 'acme' }, source: 'env' });
    expect(r.logs).toMatchObject({ address: 'logs.obs:4317', tls: false, source: 'env' });
    expect(r.metrics).toBeNull();
    expect(r.serviceName).toBe('orders-sidecar');
    expect(r.resourceAttributes).toEqual({ 'deployment.environment.name': 'prod', 'k8s.pod.name': 'orders-1' });
    expect(r.sampler).toEqual({ ratio: 0.25, parentBased: true });
    expect(r.spanQueue).toEqual({ maxSize: 100, batchSize: 100, delayMs: 1000 });
    expect(r.metricsIntervalMs).toBe(5000);
  });

  it('a value in the file wins over the variable', () => {
    const r = resolve(
      { endpoint: '10.0.0.5:4317', sampleRatio: 0, serviceName: 'from-file', headers: { 'x-api-key': 'file' } },
      { OTEL_EXPORTER_OTLP_ENDPOINT: 'https://collector.obs:4317', OTEL_TRACES_SAMPLER: 'always_on', OTEL_SERVICE_NAME: 'env', OTEL_EXPORTER_OTLP_HEADERS: 'x-api-key=env' },
    );
    expect(r.traces).toMatchObject({ address: '10.0.0.5:4317', tls: false, headers: { 'x-api-key': 'file' }, source: 'config' });
    expect(r.sampler).toEqual({ ratio: 0, parentBased: true });
    expect(r.serviceName).toBe('from-file');
  });

  it('the endpoint source is per signal: one signal set elsewhere leaves the others on the control plane (regression)', () => {
    // Was one value for the three signals (the last resolved), which chose where the
    // control-plane token went (export-token.test.ts).
    const r = resolve({}, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector.obs:4317' }, cp);
    expect([r.traces?.source, r.logs?.source, r.metrics?.source]).toEqual(['env', 'control-plane', 'control-plane']);
    expect(r.traces?.address).toBe('collector.obs:4317');
    const m = resolve({}, { OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://collector.obs:4317' }, cp);
    expect([m.traces?.source, m.logs?.source, m.metrics?.source]).toEqual(['control-plane', 'control-plane', 'env']);
  });

  it('OTEL_SDK_DISABLED turns telemetry off; samplers map to ratios', () => {
    expect(resolve({}, { OTEL_SDK_DISABLED: 'true' }).enabled).toBe(false);
    expect(resolve({ enabled: true }, { OTEL_SDK_DISABLED: 'true' }).enabled).toBe(true);
    expect(resolve({}, { OTEL_TRACES_SAMPLER: 'always_off' }).sampler).toEqual({ ratio: 0, parentBased: false });
    expect(resolve({}, { OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.5' }).sampler).toEqual({ ratio: 0.5, parentBased: false });
  });

  it('refuses what it cannot honour, naming the variable or the field', () => {
    expect(issuesOf(() => resolve({}, { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }, cp)).map((i) => i.path)).toContain('OTEL_EXPORTER_OTLP_TRACES_PROTOCOL');
    expect(issuesOf(() => resolve({}, { OTEL_TRACES_SAMPLER: 'jaeger_remote' }))).toEqual([{ path: 'OTEL_TRACES_SAMPLER', file: '(environment)' }]);
    expect(issuesOf(() => resolve({}, { OTEL_TRACES_SAMPLER_ARG: '2' }))).toEqual([{ path: 'OTEL_TRACES_SAMPLER_ARG', file: '(environment)' }]);
    expect(issuesOf(() => resolve({}, { OTEL_BSP_MAX_QUEUE_SIZE: 'lots' }))).toEqual([{ path: 'OTEL_BSP_MAX_QUEUE_SIZE', file: '(environment)' }]);
    expect(issuesOf(() => resolve({}, { OTEL_TRACES_EXPORTER: 'zipkin' }))).toEqual([{ path: 'OTEL_TRACES_EXPORTER', file: '(environment)' }]);
    expect(issuesOf(() => resolve({ endpoint: 'ftp://x:1' }))).toEqual([
      { path: 'telemetry.endpoint', file: '/etc/ward/sidecar.yaml' },
      { path: 'telemetry.endpoint', file: '/etc/ward/sidecar.yaml' },
      { path: 'telemetry.endpoint', file: '/etc/ward/sidecar.yaml' },
    ]);
  });

  it('a CA file it cannot read is refused at its field, not an ENOENT at export (regression)', () => {
    expect(issuesOf(() => resolve({ endpoint: 'https://collector:4317', caFile: 'nope/ca.pem' }))).toEqual([{ path: 'telemetry.caFile', file: '/etc/ward/sidecar.yaml' }]);
    expect(issuesOf(() => resolve({ endpoint: 'https://collector:4317' }, { OTEL_EXPORTER_OTLP_CERTIFICATE: '/nonexistent/ca.pem' }))).toEqual([{ path: 'OTEL_EXPORTER_OTLP_CERTIFICATE', file: '(environment)' }]);
    // Not used (cleartext endpoint, or telemetry off): not read.
    expect(resolve({ endpoint: 'collector:4317', caFile: 'nope/ca.pem' }).traces?.caFile).toBeUndefined();
    expect(resolve({ enabled: false, endpoint: 'https://collector:4317', caFile: 'nope/ca.pem' }).enabled).toBe(false);
  });

  it('parses endpoints', () => {
    expect(parseEndpoint('127.0.0.1:15010')).toEqual({ address: '127.0.0.1:15010', tls: false });
    expect(parseEndpoint('http://collector:4317/')).toEqual({ address: 'collector:4317', tls: false });
    expect(parseEndpoint('https://collector')).toEqual({ address: 'collector:443', tls: true });
    expect(parseEndpoint('[::1]:4317')).toEqual({ address: '[::1]:4317', tls: false });
    expect(parseEndpoint('collector')).toBeNull();
    expect(parseEndpoint('collector:0')).toBeNull();
    expect(parseEndpoint('grpc://collector:4317')).toBeNull();
  });
});
