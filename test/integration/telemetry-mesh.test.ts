import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Authenticator } from '../../src/authn/authenticator.ts';
import { formatDecision, streamDecisions } from '../../src/cli/decisions.ts';
import { startSidecar, type RunningSidecar } from '../../src/cli/sidecar.ts';
import { parseSidecarConfig } from '../../src/config/sidecar.ts';
import { parseControlPlaneConfig } from '../../src/controlplane/server/config.ts';
import { type RunningControlPlane, startControlPlane } from '../../src/controlplane/server/control-plane.ts';
import type { DecisionEntryWire } from '../../src/controlplane/server/decisions/service.ts';
import type { StoredDecision } from '../../src/controlplane/server/decisions/store.ts';
import { telemetryReceiverSchema } from '../../src/controlplane/server/otlp/config.ts';
import { validatePolicyForControlPlane } from '../../src/controlplane/server/validate.ts';
import { loadOrdersPackage } from '../../src/demo/orders-app.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { ordersPolicyText } from '../fixtures/policies/fixtures.ts';
import { startTestIdp, type TestIdp } from '../support/idp.ts';
import { controlPlaneAuthenticator, controlPlaneYaml } from '../unit/controlplane/idp-setup.ts';
import { parsePrometheusText, sampleValue } from '../unit/telemetry/prometheus-parser.ts';
import { type Mesh, OrdersClient, startMesh, waitFor } from './harness.ts';

/**
 * Telemetry end to end, all real and on loopback: the dev IdP; a control plane started in-process
 * (OTLP receiver + decision store) that forwards to a second, independent OTLP receiver written
 * here; sidecar A (`payments`, policy file) in front of a relay app that calls sidecar B
 * (`orders`, policy from the control plane, trace sample ratio 0) in front of the orders app.
 *
 *   client ─▶ sidecar A ─▶ relay app ─(traceparent)─▶ sidecar B ─▶ orders app
 *                 └──── OTLP ────▶ control plane ──── OTLP ────▶ collector (this file)
 */

const PROTO_ROOT = fileURLToPath(new URL('../../proto/', import.meta.url));

interface SpanWire {
  traceId: Buffer;
  spanId: Buffer;
  parentSpanId: Buffer;
  name: string;
  kind: number;
  attributes: { key: string; value: { stringValue?: string; intValue?: string } }[];
}

/** A minimal OTLP/gRPC receiver of its own (proto-loader decoding), standing in for a collector. */
/** What a collector decodes of an OTLP metrics export (proto-loader's JSON-ish form, 64-bit integers as strings). */
interface MetricsWire {
  resourceMetrics: {
    resource: { attributes: { key: string; value: { stringValue?: string } }[] };
    scopeMetrics: {
      scope: { name: string };
      metrics: {
        name: string;
        sum?: { isMonotonic: boolean; aggregationTemporality: number; dataPoints: { asDouble: number; attributes: { key: string; value: { stringValue?: string } }[] }[] };
        histogram?: { dataPoints: { count: string; bucketCounts: string[]; attributes: { key: string; value: { stringValue?: string } }[] }[] };
      }[];
    }[];
  }[];
}

async function startCollector(): Promise<{ port: number; spans: SpanWire[]; logs: number; metrics: MetricsWire[]; requests: Record<string, number>; close(): Promise<void> }> {
  const def = protoLoader.loadSync(
    [
      'opentelemetry/proto/collector/trace/v1/trace_service.proto',
      'opentelemetry/proto/collector/logs/v1/logs_service.proto',
      'opentelemetry/proto/collector/metrics/v1/metrics_service.proto',
    ],
    { keepCase: false, longs: String, defaults: true, oneofs: true, includeDirs: [PROTO_ROOT] },
  );
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    opentelemetry: { proto: { collector: Record<'trace' | 'logs' | 'metrics', { v1: Record<string, grpc.ServiceClientConstructor> }> } };
  };
  const c = pkg.opentelemetry.proto.collector;
  const state = { spans: [] as SpanWire[], logs: 0, metrics: [] as MetricsWire[], requests: { traces: 0, logs: 0, metrics: 0 } as Record<string, number> };
  const server = new grpc.Server();
  server.addService((c.trace.v1['TraceService'] as grpc.ServiceClientConstructor).service, {
    Export: (call: grpc.ServerUnaryCall<{ resourceSpans: { scopeSpans: { spans: SpanWire[] }[] }[] }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      state.requests['traces'] = (state.requests['traces'] ?? 0) + 1;
      for (const rs of call.request.resourceSpans) for (const ss of rs.scopeSpans) state.spans.push(...ss.spans);
      cb(null, {});
    },
  });
  server.addService((c.logs.v1['LogsService'] as grpc.ServiceClientConstructor).service, {
    Export: (call: grpc.ServerUnaryCall<{ resourceLogs: { scopeLogs: { logRecords: unknown[] }[] }[] }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      state.requests['logs'] = (state.requests['logs'] ?? 0) + 1;
      for (const rl of call.request.resourceLogs) for (const sl of rl.scopeLogs) state.logs += sl.logRecords.length;
      cb(null, {});
    },
  });
  server.addService((c.metrics.v1['MetricsService'] as grpc.ServiceClientConstructor).service, {
    Export: (call: grpc.ServerUnaryCall<MetricsWire, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      state.requests['metrics'] = (state.requests['metrics'] ?? 0) + 1;
      state.metrics.push(call.request);
      if (state.metrics.length > 20) state.metrics.shift();
      cb(null, {});
    },
  });
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return {
    port,
    get spans() {
      return state.spans;
    },
    get logs() {
      return state.logs;
    },
    metrics: state.metrics,
    requests: state.requests,
    close: () => new Promise<void>((res) => server.tryShutdown(() => res())),
  };
}

/** The app behind sidecar A: GetOrder calls sidecar B, passing on the `traceparent` it received (as an instrumented app does). */
async function startRelayApp(target: () => string, token: () => string): Promise<{ port: number; seen: string[]; close(): Promise<void> }> {
  const Orders = (loadOrdersPackage() as unknown as { ward: { demo: { v1: { Orders: grpc.ServiceClientConstructor } } } }).ward.demo.v1.Orders;
  const seen: string[] = [];
  let client: OrdersClient | undefined;
  const server = new grpc.Server();
  server.addService(Orders.service, {
    GetOrder: (call: grpc.ServerUnaryCall<{ id: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const tp = call.metadata.get('traceparent')[0];
      seen.push(typeof tp === 'string' ? tp : '');
      client ??= new OrdersClient(target());
      const md = new grpc.Metadata();
      md.set('authorization', `Bearer ${token()}`);
      if (typeof tp === 'string') md.set('traceparent', tp);
      (client.raw['GetOrder'] as (...a: unknown[]) => void).call(client.raw, call.request, md, (err: grpc.ServiceError | null, v: unknown) => cb(err, v));
    },
  });
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return {
    port,
    seen,
    close: async () => {
      client?.close();
      await new Promise<void>((res) => server.tryShutdown(() => res()));
    },
  };
}

const paymentsPolicy = (issuer: string): string => `apiVersion: ward.dev/v1
kind: Policy
service: payments
issuers:
  - issuer: ${issuer}
    audiences: [urn:ward:payments]
rules:
  - name: relay
    action: allow
    match:
      grpc: [/ward.demo.v1.Orders/GetOrder]
    when:
      - scopes: { allOf: [payments.charge] }
`;

function hex(b: Buffer): string {
  return Buffer.from(b).toString('hex');
}

function attr(s: SpanWire, key: string): string | undefined {
  const kv = s.attributes.find((a) => a.key === key);
  return kv?.value.stringValue ?? kv?.value.intValue;
}

async function metrics(port: number): Promise<ReturnType<typeof parsePrometheusText>> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(await res.text());
}

describe('telemetry through a chain of sidecars and the control plane', () => {
  let idp: TestIdp;
  let dir: string;
  let cp: RunningControlPlane | undefined;
  let cpAuthn: Authenticator;
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let b: Mesh;
  let relay: Awaited<ReturnType<typeof startRelayApp>>;
  let a: RunningSidecar;
  let ordersToken: string;
  let paymentsToken: string;
  let client: OrdersClient;

  beforeAll(async () => {
    idp = await startTestIdp();
    dir = mkdtempSync(join(tmpdir(), 'ward-telemetry-'));
    const policies = join(dir, 'policies');
    mkdirSync(policies);
    writeFileSync(join(policies, 'orders.yaml'), ordersPolicyText(idp.issuer));
    collector = await startCollector();

    const cfg = parseControlPlaneConfig(controlPlaneYaml(idp.issuer, policies), join(dir, 'cp.yaml'));
    cpAuthn = controlPlaneAuthenticator(cfg);
    cp = await startControlPlane(cfg, {
      log: silentLogger,
      parse: validatePolicyForControlPlane,
      authenticator: cpAuthn,
      telemetry: telemetryReceiverSchema.parse({ maxDecisions: 1000, forward: { endpoint: `127.0.0.1:${collector.port}`, timeoutMs: 2000 } }),
    });
    const cpAddress = `127.0.0.1:${cp.port}`;

    // B: policy and telemetry from the control plane (its own token), traces at a 0 % sample rate.
    b = await startMesh({
      idp,
      controlPlane: { address: cpAddress, stateDir: join(dir, 'state-b') },
      extraYaml: 'telemetry: { sampleRatio: 0, queue: { delayMs: 20, maxSize: 64 }, exportTimeoutMs: 1000, metricsIntervalMs: 200 }\n',
    });

    ordersToken = await idp.token('reporting', 'urn:ward:orders', 'orders.read');
    paymentsToken = await idp.token('orders-sidecar', 'urn:ward:payments', 'payments.charge');
    relay = await startRelayApp(() => b.target, () => ordersToken);

    // A: payments, policy file, telemetry to the control plane's address given explicitly.
    const aDir = join(dir, 'a');
    mkdirSync(aDir);
    writeFileSync(join(aDir, 'policy.yaml'), paymentsPolicy(idp.issuer));
    const yaml = `service: payments
inbound: { listen: { host: 127.0.0.1, port: 0 } }
upstream: { url: "http://127.0.0.1:${relay.port}", protocol: h2c }
admin: { host: 127.0.0.1, port: 0 }
policy: { file: policy.yaml }
drainTimeoutMs: 1000
telemetry: { endpoint: "${cpAddress}", queue: { delayMs: 20 }, exportTimeoutMs: 1000 }
`;
    writeFileSync(join(aDir, 'sidecar.yaml'), yaml);
    a = await startSidecar(parseSidecarConfig(yaml, join(aDir, 'sidecar.yaml')), { log: silentLogger, configFile: join(aDir, 'sidecar.yaml') });
    await waitFor(() => a.ready(), 10_000, 'sidecar A ready');
    client = new OrdersClient(`127.0.0.1:${a.ports.inbound}`);
  });

  afterAll(async () => {
    client.close();
    await a.stop();
    await relay.close();
    await b.close();
    await cp?.close();
    cpAuthn.close();
    await collector.close();
    await idp.close();
  });

  const decisions = (f: (d: StoredDecision) => boolean): StoredDecision[] => cp?.decisions?.query({}, 1000).filter(f) ?? [];

  it('links the spans of both hops, records one decision per call with its rule, and forwards everything to a second OTLP receiver', async () => {
    const r = await client.unary('GetOrder', { id: '1' }, paymentsToken);
    expect(r.code).toBe(grpc.status.OK);

    // one decision record per call, at each hop, with the rule that allowed it
    await waitFor(() => decisions((d) => d.decision === 'allow' && d.route === '/ward.demo.v1.Orders/GetOrder').length >= 2, 10_000, 'both decisions');
    const [da, db] = [decisions((d) => d.service === 'payments'), decisions((d) => d.service === 'orders')];
    expect(da).toHaveLength(1);
    expect(db).toHaveLength(1);
    const dA = da[0] as StoredDecision;
    const dB = db[0] as StoredDecision;
    expect(dA).toMatchObject({ decision: 'allow', reason: '', rule: 'relay', subject: 'orders-sidecar', direction: 'inbound', method: 'POST' });
    expect(dB).toMatchObject({ decision: 'allow', reason: '', rule: 'readers', subject: 'reporting', issuer: idp.issuer });
    expect(dA.policyVersion).toMatch(/\S/);
    expect(dB.policyVersion).toMatch(/\S/);
    expect(dB.instanceId).toMatch(/^mesh-/);

    // one trace: B continues A's span (through the relay app), even at B's 0 % sample rate
    expect(dA.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(dB.traceId).toBe(dA.traceId);
    expect(relay.seen[0]).toBe(`00-${dA.traceId}-${dA.spanId}-01`);
    await waitFor(() => collector.spans.filter((s) => hex(s.traceId) === dA.traceId).length >= 2, 10_000, 'both spans at the collector');
    const spans = collector.spans.filter((s) => hex(s.traceId) === dA.traceId);
    const spanA = spans.find((s) => hex(s.spanId) === dA.spanId) as SpanWire;
    const spanB = spans.find((s) => hex(s.spanId) === dB.spanId) as SpanWire;
    expect(hex(spanA.parentSpanId)).toBe('');
    expect(hex(spanB.parentSpanId)).toBe(dA.spanId);
    expect(spanB.name).toBe('ward.demo.v1.Orders/GetOrder');
    expect(spanB.kind).toBe(2); // SERVER
    expect(attr(spanB, 'rpc.system')).toBe('grpc');
    expect(attr(spanB, 'rpc.service')).toBe('ward.demo.v1.Orders');
    expect(attr(spanB, 'rpc.method')).toBe('GetOrder');
    expect(attr(spanB, 'ward.decision')).toBe('allow');
    expect(attr(spanB, 'ward.rule')).toBe('readers');
    expect(attr(spanB, 'ward.policy.version')).toBe(dB.policyVersion);
    expect(attr(spanB, 'rpc.grpc.status_code')).toBe('0');
    expect(attr(spanB, 'enduser.id')).toBeUndefined(); // subjects stay off spans
    // the orders app got B's span as its parent
    expect(b.app.calls.at(-1)?.metadata['traceparent']).toBe(`00-${dA.traceId}-${dB.spanId}-01`);
    // and the control plane forwarded the logs too
    await waitFor(() => collector.logs >= 2, 5000, 'forwarded decision logs');
  });

  it('keeps denials at a 0 % sample rate, and every decision in the log even when its trace is not sampled', async () => {
    const denied = await b.client().unary('DeleteOrder', { id: '1' }, ordersToken);
    expect(denied.code).toBe(grpc.status.PERMISSION_DENIED);
    const allowed = await b.client().unary('GetOrder', { id: '2' }, ordersToken);
    expect(allowed.code).toBe(grpc.status.OK);

    await waitFor(() => decisions((d) => d.service === 'orders' && d.route === '/ward.demo.v1.Orders/DeleteOrder').length === 1, 10_000, 'the denial');
    await waitFor(() => decisions((d) => d.service === 'orders' && d.decision === 'allow').length === 2, 10_000, 'the unsampled allow');
    const deny = decisions((d) => d.route === '/ward.demo.v1.Orders/DeleteOrder')[0] as StoredDecision;
    expect(deny).toMatchObject({ decision: 'deny', reason: 'ERR_POLICY_DENIED', rule: 'no-deletes', subject: 'reporting' });
    expect(b.app.calls.some((c) => c.method === 'DeleteOrder')).toBe(false);
    await waitFor(() => collector.spans.some((s) => hex(s.spanId) === deny.spanId), 10_000, 'the denial span');
    const span = collector.spans.find((s) => hex(s.spanId) === deny.spanId) as SpanWire;
    expect(attr(span, 'ward.decision')).toBe('deny');
    expect(attr(span, 'ward.reason')).toBe('ERR_POLICY_DENIED');
    expect(attr(span, 'ward.rule')).toBe('no-deletes');
    expect(attr(span, 'rpc.grpc.status_code')).toBe('7');

    // the direct allow at B had no sampled parent: logged (with a trace id), but no span
    const unsampled = decisions((d) => d.service === 'orders' && d.decision === 'allow').find((d) => d.traceId !== dOfFirstTrace());
    expect(unsampled?.traceId).toMatch(/^[0-9a-f]{32}$/);
    await new Promise((r) => setTimeout(r, 200));
    expect(collector.spans.some((s) => hex(s.traceId) === unsampled?.traceId)).toBe(false);

    function dOfFirstTrace(): string {
      return (decisions((d) => d.service === 'payments')[0] as StoredDecision).traceId;
    }
  });

  it('answers ward decisions: filters, one line per decision, and --follow', async () => {
    const got: DecisionEntryWire[] = [];
    await streamDecisions(
      { address: `127.0.0.1:${cp?.port}`, timeoutMs: 5000, query: { service: 'orders', decision: 'deny', reason: '', subject: 'reporting', sinceUnixMs: Date.now() - 60_000, untilUnixMs: 0, limit: 10, follow: false } },
      (e) => got.push(e),
    );
    expect(got).toHaveLength(1);
    const line = formatDecision(got[0] as DecisionEntryWire);
    for (const part of ['orders', 'reporting', '/ward.demo.v1.Orders/DeleteOrder', 'deny', 'ERR_POLICY_DENIED', 'no-deletes', (got[0] as DecisionEntryWire).traceId]) expect(line).toContain(part);

    // --follow: a new decision arrives on the open stream
    const abort = new AbortController();
    const followed: DecisionEntryWire[] = [];
    const done = streamDecisions(
      { address: `127.0.0.1:${cp?.port}`, timeoutMs: 5000, query: { service: 'orders', decision: 'deny', reason: 'ERR_TOKEN_MISSING', subject: '', sinceUnixMs: 0, untilUnixMs: 0, limit: 10, follow: true } },
      (e) => followed.push(e),
      abort.signal,
    );
    await new Promise((r) => setTimeout(r, 100));
    expect((await b.client().unary('GetOrder', { id: '3' })).code).toBe(grpc.status.UNAUTHENTICATED);
    await waitFor(() => followed.length === 1, 10_000, 'the followed decision');
    expect(followed[0]).toMatchObject({ service: 'orders', decision: 'deny', reason: 'ERR_TOKEN_MISSING', subject: '' });
    abort.abort();
    await done;
  });

  it('serves /metrics in the Prometheus text format', async () => {
    const fam = await metrics(b.sidecar.ports.admin);
    expect(fam.get('ward_decisions_total')?.type).toBe('counter');
    expect(sampleValue(fam, 'ward_decisions_total', { ward_service: 'orders', ward_decision: 'deny', ward_reason: 'ERR_POLICY_DENIED' })).toBeGreaterThanOrEqual(1);
    expect(sampleValue(fam, 'ward_decisions_total', { ward_service: 'orders', ward_decision: 'allow' })).toBeGreaterThanOrEqual(2);
    expect(fam.get('ward_authz_duration')?.type).toBe('histogram');
    expect(sampleValue(fam, 'ward_authz_duration_count', { ward_service: 'orders', ward_decision: 'allow' })).toBeGreaterThanOrEqual(2);
    expect(sampleValue(fam, 'ward_controlplane_connected')).toBe(1);
    expect(sampleValue(fam, 'ward_policy_version', { ward_service: 'orders' })).toBe(1);
    expect(sampleValue(fam, 'ward_jwks_fetches_total', { ward_issuer: idp.issuer, ward_result: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(sampleValue(fam, 'ward_telemetry_exported_total', { ward_signal: 'logs' })).toBeGreaterThanOrEqual(3);
    // every call so far is over (its place given back), and none met upstream.maxRequests (no limit here)
    expect(fam.get('ward_upstream_requests')?.type).toBe('gauge');
    expect(sampleValue(fam, 'ward_upstream_requests', { ward_service: 'orders' })).toBe(0);
    expect(sampleValue(fam, 'ward_upstream_overflow_total', { ward_service: 'orders' })).toBe(0);
    const status = (await (await fetch(`http://127.0.0.1:${b.sidecar.ports.admin}/status`)).json()) as { upstream: unknown; signatures: unknown };
    expect(status.upstream).toEqual({ requests: 0, maxRequests: 0, overflowed: 0 });
    // the IdP signs RS256: checked by the addon npm ci built (src/authn/native-verify.ts)
    expect(status.signatures).toEqual({ rsa: 'native', detail: null });
    // no subject or route ever becomes a metric label
    for (const f of fam.values()) for (const s of f.samples) expect(Object.keys(s.labels)).not.toContain('enduser_id');
  });

  it('reports its own footprint: runtime metrics in /metrics, and the admin /memory document', async () => {
    const fam = await metrics(b.sidecar.ports.admin);
    expect(sampleValue(fam, 'process_memory_usage')).toBeGreaterThan(10 * 1024 * 1024);
    expect(sampleValue(fam, 'process_cpu_time_total', { cpu_mode: 'user' })).toBeGreaterThan(0);
    expect(sampleValue(fam, 'v8js_memory_heap_used', { v8js_heap_space_name: 'old_space' })).toBeGreaterThan(0);
    expect(sampleValue(fam, 'nodejs_eventloop_time_total', { nodejs_eventloop_state: 'idle' })).toBeGreaterThan(0);
    const res = await fetch(`http://127.0.0.1:${b.sidecar.ports.admin}/memory`);
    expect(res.status).toBe(200);
    const mem = (await res.json()) as { rssBytes: number; peakRssBytes: number; spaces: { name: string }[] };
    expect(mem.rssBytes).toBeGreaterThan(10 * 1024 * 1024);
    expect(mem.peakRssBytes).toBeGreaterThanOrEqual(mem.rssBytes);
    expect(mem.spaces.map((s) => s.name)).toContain('old_space');
  });

  it('pushes metrics over OTLP, as /metrics shows them: decoded by a real collector behind the control plane', async () => {
    const str = (attrs: { key: string; value: { stringValue?: string } }[]): Record<string, string | undefined> => Object.fromEntries(attrs.map((a) => [a.key, a.value.stringValue]));
    /** The allowed-decision count and latency histogram of service `orders` in the newest push that has them. */
    const latest = (): { resource: Record<string, string | undefined>; allowed: number; latency: { count: string; bucketCounts: string[] }; monotonic: boolean; temporality: number } | undefined => {
      for (const req of [...collector.metrics].reverse()) {
        for (const rm of req.resourceMetrics) {
          const resource = str(rm.resource.attributes);
          if (resource['ward.service'] !== 'orders') continue;
          const metrics = rm.scopeMetrics.flatMap((sm) => sm.metrics);
          const decisionsMetric = metrics.find((m) => m.name === 'ward.decisions')?.sum;
          const allowed = decisionsMetric?.dataPoints.find((p) => str(p.attributes)['ward.decision'] === 'allow' && str(p.attributes)['ward.direction'] === 'inbound');
          const latency = metrics.find((m) => m.name === 'ward.authz.duration')?.histogram?.dataPoints.find((p) => str(p.attributes)['ward.decision'] === 'allow');
          if (decisionsMetric === undefined || allowed === undefined || latency === undefined) continue;
          return { resource, allowed: allowed.asDouble, latency, monotonic: decisionsMetric.isMonotonic, temporality: decisionsMetric.aggregationTemporality };
        }
      }
      return undefined;
    };
    const fam = await metrics(b.sidecar.ports.admin);
    const shown = sampleValue(fam, 'ward_decisions_total', { ward_service: 'orders', ward_direction: 'inbound', ward_decision: 'allow' }) ?? 0;
    expect(shown).toBeGreaterThanOrEqual(2);
    // pushed every 200 ms; no call in between, so a push after the scrape carries the same count
    await waitFor(() => (latest()?.allowed ?? 0) >= shown, 10_000, 'a metrics push with the scraped count');
    const pushed = latest();
    expect(pushed?.allowed).toBe(shown);
    expect(pushed?.monotonic).toBe(true);
    expect(pushed?.temporality).toBe(2); // AGGREGATION_TEMPORALITY_CUMULATIVE
    expect(Number(pushed?.latency.count)).toBe(sampleValue(fam, 'ward_authz_duration_count', { ward_service: 'orders', ward_direction: 'inbound', ward_decision: 'allow' }));
    expect(pushed?.latency.bucketCounts.reduce((a, c) => a + Number(c), 0)).toBe(Number(pushed?.latency.count));
    expect(pushed?.resource).toMatchObject({ 'service.name': 'orders', 'telemetry.sdk.name': 'ward', 'telemetry.sdk.language': 'nodejs' });
  });

  it('leaves traffic unaffected while the control plane is down: no errors, telemetry drops bounded and counted', async () => {
    await cp?.close();
    cp = undefined;
    const clientB = b.client();
    const results = await Promise.all(Array.from({ length: 150 }, (_, i) => clientB.unary('GetOrder', { id: String(i) }, ordersToken)));
    expect(results.every((r) => r.code === grpc.status.OK)).toBe(true);
    const chain = await Promise.all(Array.from({ length: 20 }, () => client.unary('GetOrder', { id: '1' }, paymentsToken)));
    expect(chain.every((r) => r.code === grpc.status.OK)).toBe(true);
    await waitFor(
      async () => {
        const fam = await metrics(b.sidecar.ports.admin);
        const failed = sampleValue(fam, 'ward_telemetry_dropped_total', { ward_signal: 'logs', reason: 'export_failed' }) ?? 0;
        const full = sampleValue(fam, 'ward_telemetry_dropped_total', { ward_signal: 'logs', reason: 'queue_full' }) ?? 0;
        return failed + full >= 150;
      },
      10_000,
      'dropped decision records to be counted',
    );
  });
});
