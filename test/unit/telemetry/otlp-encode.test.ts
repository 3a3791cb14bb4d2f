import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { resolveTelemetry } from '../../../src/config/telemetry.ts';
import { ERROR_TABLE } from '../../../src/errors/table.ts';
import type { DecisionRecord } from '../../../src/inbound/types.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import { startTelemetry, type Telemetry } from '../../../src/telemetry/telemetry.ts';
import { decisionRecord } from './records.ts';
import { type Attr, attrs } from '../inbound/traced.ts';

/**
 * ward writes its spans and decision log records as OTLP protobuf itself (otlp-encode.ts): here a
 * collector of our own decodes them with the vendored OTLP protos (protobufjs through
 * proto-loader, as any gRPC collector would) and every field is checked.
 */

const PROTO_ROOT = fileURLToPath(new URL('../../../proto/', import.meta.url));

interface SpanWire {
  traceId: Buffer;
  spanId: Buffer;
  traceState?: string;
  parentSpanId?: Buffer;
  name: string;
  kind: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: Attr[];
  status?: { code: string };
  // (Span.flags, field 16, is not in the vendored trace.proto: decoders that know it read 0x1 sampled, 0x100 | 0x200 remote parent)
}
interface LogWire {
  timeUnixNano: string;
  observedTimeUnixNano: string;
  severityNumber: string;
  severityText: string;
  body: { stringValue: string };
  attributes: Attr[];
  flags?: number;
  traceId?: Buffer;
  spanId?: Buffer;
  eventName: string;
}
interface Batch<T> {
  resource: { attributes: Attr[] };
  scope: string;
  items: T[];
}

interface MetricsWire {
  resourceMetrics: { scopeMetrics: { metrics: { name: string; sum?: { dataPoints: { asDouble: number; attributes: Attr[] }[] } }[] }[] }[];
}

async function collector(): Promise<{ port: number; spans: Batch<SpanWire>[]; logs: Batch<LogWire>[]; metrics: MetricsWire[]; close(): Promise<void> }> {
  const protos = ['trace/v1/trace_service', 'logs/v1/logs_service', 'metrics/v1/metrics_service'].map((f) => `opentelemetry/proto/collector/${f}.proto`);
  const def = protoLoader.loadSync(protos, {
    longs: String,
    enums: String,
    defaults: false,
    includeDirs: [PROTO_ROOT],
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { opentelemetry: { proto: { collector: Record<'trace' | 'logs' | 'metrics', { v1: Record<string, grpc.ServiceClientConstructor> }> } } };
  const c = pkg.opentelemetry.proto.collector;
  const spans: Batch<SpanWire>[] = [];
  const logs: Batch<LogWire>[] = [];
  type Req<K extends string, I extends string, T> = Record<K, ({ resource: { attributes: Attr[] } } & Record<I, { scope: { name: string }; [k: string]: unknown }[]>)[]> & Record<string, unknown> & { _t?: T };
  const server = new grpc.Server();
  server.addService((c.trace.v1['TraceService'] as grpc.ServiceClientConstructor).service, {
    Export: (call: grpc.ServerUnaryCall<Req<'resourceSpans', 'scopeSpans', SpanWire>, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      for (const rs of call.request.resourceSpans) for (const ss of rs.scopeSpans) spans.push({ resource: rs.resource, scope: ss.scope.name, items: ss['spans'] as SpanWire[] });
      cb(null, {});
    },
  });
  server.addService((c.logs.v1['LogsService'] as grpc.ServiceClientConstructor).service, {
    Export: (call: grpc.ServerUnaryCall<Req<'resourceLogs', 'scopeLogs', LogWire>, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      for (const rl of call.request.resourceLogs) for (const sl of rl.scopeLogs) logs.push({ resource: rl.resource, scope: sl.scope.name, items: sl['logRecords'] as LogWire[] });
      cb(null, {});
    },
  });
  const metrics: MetricsWire[] = [];
  server.addService((c.metrics.v1['MetricsService'] as grpc.ServiceClientConstructor).service, {
    Export: (call: grpc.ServerUnaryCall<MetricsWire, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      metrics.push(call.request);
      cb(null, {});
    },
  });
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { port, spans, logs, metrics, close: () => new Promise<void>((res) => server.tryShutdown(() => res())) };
}

const hex = (b: Buffer | undefined): string => (b === undefined ? '' : b.toString('hex'));

/** An allowed GetOrder call, by default. */
const record = (over: Partial<DecisionRecord> = {}): DecisionRecord =>
  decisionRecord({ time: 1_700_000_000_123.5, route: '/ward.demo.v1.Orders/GetOrder', decision: 'allow', code: null, rule: 'readers', ...over });

const TP = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

describe('OTLP spans and decision log records written by ward', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  async function setup(sampleRatio = 1): Promise<{ t: Telemetry; col: Awaited<ReturnType<typeof collector>>; clock: { now: number } }> {
    const col = await collector();
    cleanup.push(() => col.close());
    const cfg = resolveTelemetry({ endpoint: `127.0.0.1:${col.port}`, sampleRatio, resourceAttributes: { 'deployment.environment.name': 'test' }, queue: { delayMs: 5 } }, { service: 'orders', file: 'x', baseDir: '/' }, {});
    const clock = { now: 1_700_000_000_100.25 };
    const t = startTelemetry(cfg, { service: 'orders', instanceId: 'pod-1', log: silentLogger, now: () => clock.now });
    cleanup.push(() => t.shutdown(1000));
    return { t, col, clock };
  }

  it('metrics: shutdown makes a last push (the interval is a minute), so the counts of the final interval are not lost', async () => {
    const { t, col } = await setup();
    t.inbound.begin(record(), 0, [], null);
    t.inbound.begin(record(), 0, [], null);
    t.inbound.begin(record({ decision: 'deny', code: 'ERR_POLICY_DENIED', rule: null }), 0, [], null);
    expect(col.metrics).toEqual([]);
    await t.shutdown(2000);
    expect(col.metrics).toHaveLength(1);
    const decisions = col.metrics[0]?.resourceMetrics[0]?.scopeMetrics[0]?.metrics.find((m) => m.name === 'ward.decisions');
    expect(decisions?.sum?.dataPoints.map((p) => [attrs(p.attributes)['ward.decision'], p.asDouble])).toEqual([
      ['allow', 2],
      ['deny', 1],
    ]);
  });

  it('records and metrics left for after the call: a collection or a flush in the same turn has them (regression: written only at the end of the turn)', async () => {
    const { t, col } = await setup();
    const span = t.inbound.begin(record(), 1_700_000_000_100.25, [], {});
    span?.end(200, 0, false);
    t.inbound.begin(record({ decision: 'deny', code: 'ERR_POLICY_DENIED', rule: null }), 0, [], null)?.end(403, -1, false);
    // same turn: nothing has run since the calls
    expect(await t.metricsText()).toMatch(/^ward_decisions_total\{[^}]*ward_decision="allow"[^}]*\} 1$/m);
    const flushed = t.flush(2000);
    t.inbound.begin(record({ decisionId: 'd-3' }), 0, [], null);
    await flushed;
    expect(col.spans.flatMap((b) => b.items)).toHaveLength(2);
    expect(col.logs.flatMap((b) => b.items).length).toBeGreaterThanOrEqual(2);
    // the third decision, made after the flush began, is written at the end of its turn and
    // exported by the queue's timer: no flush, no collection
    await vi.waitFor(() => expect(col.logs.flatMap((b) => b.items)).toHaveLength(3), { timeout: 2000 });
    expect(await t.metricsText()).toMatch(/^ward_decisions_total\{[^}]*ward_decision="allow"[^}]*\} 2$/m);
    expect(col.logs.flatMap((b) => b.items).map((l) => l.body.stringValue)).toEqual(['allow /ward.demo.v1.Orders/GetOrder rule=readers', 'deny /ward.demo.v1.Orders/GetOrder ERR_POLICY_DENIED', 'allow /ward.demo.v1.Orders/GetOrder rule=readers']);
  });

  it('metrics: pushes go on while the collector is down, each failure counted (a push that fails at once does not block the next)', async () => {
    // A closed port: the first push fails on the connection, the next ones at once, during the
    // client's reconnect backoff.
    const closed = await collector();
    const port = closed.port;
    await closed.close();
    const cfg = resolveTelemetry({ endpoint: `127.0.0.1:${port}`, metricsIntervalMs: 100 }, { service: 'orders', file: 'x', baseDir: '/' }, {});
    const t = startTelemetry(cfg, { service: 'orders', instanceId: 'pod-1', log: silentLogger });
    cleanup.push(() => t.shutdown(1000));
    t.inbound.begin(record(), 0, [], null);
    await new Promise((r) => setTimeout(r, 850));
    expect(t.counters().metrics.failedExports).toBeGreaterThanOrEqual(5);
    expect(t.counters().metrics.exported).toBe(0);
  });

  it('an allowed gRPC call: a SERVER span in the caller\'s trace and a log record on that span', async () => {
    const { t, col, clock } = await setup();
    const fwd: Record<string, string> = {};
    const span = t.inbound.begin(record(), 1_700_000_000_100.25, ['traceparent', TP, 'tracestate', 'congo=t61rcWkgMzE'], fwd);
    clock.now = 1_700_000_000_101.75;
    span?.end(200, 0, false);
    // The span and the log record are encoded after the call's turn; their times are the call's.
    clock.now = 1_700_000_000_250;
    await t.flush(2000);

    expect(col.spans).toHaveLength(1);
    const batch = col.spans[0];
    expect(batch?.scope).toBe('ward');
    expect(attrs(batch?.resource.attributes ?? [])).toMatchObject({ 'service.name': 'orders', 'service.instance.id': 'pod-1', 'ward.service': 'orders', 'deployment.environment.name': 'test', 'telemetry.sdk.language': 'nodejs' });
    const s = batch?.items[0] as SpanWire;
    expect(hex(s.traceId)).toBe('0af7651916cd43dd8448eb211c80319c');
    expect(hex(s.parentSpanId)).toBe('b7ad6b7169203331');
    expect(fwd['traceparent']).toBe(`00-0af7651916cd43dd8448eb211c80319c-${hex(s.spanId)}-01`);
    expect(s.traceState).toBe('congo=t61rcWkgMzE');
    expect(s.name).toBe('ward.demo.v1.Orders/GetOrder');
    expect(s.kind).toBe('SPAN_KIND_SERVER');
    expect(s.startTimeUnixNano).toBe('1700000000100250000');
    expect(s.endTimeUnixNano).toBe('1700000000101750000');
    expect(s.status).toBeUndefined();
    expect(attrs(s.attributes)).toEqual({
      'ward.service': 'orders',
      'ward.direction': 'inbound',
      'ward.decision': 'allow',
      'ward.decision_id': 'd-1',
      'ward.rule': 'readers',
      'ward.policy.version': 'v1abc',
      'ward.issuer': 'http://idp',
      'rpc.system': 'grpc',
      'rpc.service': 'ward.demo.v1.Orders',
      'rpc.method': 'GetOrder',
      'rpc.grpc.status_code': 'int:0',
    });

    const l = col.logs[0]?.items[0] as LogWire;
    expect(l.timeUnixNano).toBe('1700000000123500000');
    expect(l.observedTimeUnixNano).toBe('1700000000100250000');
    expect(l.severityNumber).toBe('SEVERITY_NUMBER_INFO');
    expect(l.severityText).toBe('INFO');
    expect(l.eventName).toBe('ward.decision');
    expect(l.body.stringValue).toBe('allow /ward.demo.v1.Orders/GetOrder rule=readers');
    expect(hex(l.traceId)).toBe('0af7651916cd43dd8448eb211c80319c');
    expect(hex(l.spanId)).toBe(hex(s.spanId));
    expect(l.flags).toBe(1);
    expect(attrs(l.attributes)).toMatchObject({ 'enduser.id': 'reporting', 'ward.route': '/ward.demo.v1.Orders/GetOrder', 'http.request.method': 'POST', 'rpc.method': 'GetOrder' });
  });

  it('a denied HTTP call at sample ratio 0: a root span with error status, named by the method, no raw path', async () => {
    const { t, col } = await setup(0);
    const span = t.inbound.begin(record({ protocol: 'http', method: 'GET', route: '/api/orders/7', decision: 'deny', code: 'ERR_POLICY_DENIED', rule: 'no-deletes' }), 1_700_000_000_000, [], null);
    span?.end(403, -1, false);
    await t.flush(2000);
    const s = col.spans[0]?.items[0] as SpanWire;
    expect(s.name).toBe('GET');
    expect(s.parentSpanId === undefined || s.parentSpanId.length === 0).toBe(true);
    expect(hex(s.traceId)).toMatch(/^[0-9a-f]{32}$/);
    const a = attrs(s.attributes);
    expect(a).toMatchObject({ 'ward.decision': 'deny', 'ward.reason': 'ERR_POLICY_DENIED', 'error.type': 'ERR_POLICY_DENIED', 'http.request.method': 'GET', 'http.response.status_code': 'int:403' });
    expect(Object.values(a)).not.toContain('/api/orders/7');
    const l = col.logs[0]?.items[0] as LogWire;
    expect(l.severityNumber).toBe('SEVERITY_NUMBER_WARN');
    expect(l.body.stringValue).toBe('deny /api/orders/7 ERR_POLICY_DENIED rule=no-deletes');
    expect(attrs(l.attributes)['ward.route']).toBe('/api/orders/7');
  });

  it('a method the conventions do not know (the caller chooses it): http.request.method _OTHER, the span named HTTP, the original cut (regression: a 6 000-character method named the span)', async () => {
    const { t, col } = await setup(0);
    const method = `X${'Y'.repeat(6000)}`;
    const span = t.inbound.begin(record({ protocol: 'http', method, route: null, decision: 'deny', code: 'ERR_REQUEST_INVALID', rule: null }), 1_700_000_000_000, [], null);
    span?.end(400, -1, false);
    await t.flush(2000);
    const s = col.spans[0]?.items[0] as SpanWire;
    expect(s.name).toBe('HTTP');
    const a = attrs(s.attributes);
    expect(a['http.request.method']).toBe('_OTHER');
    expect(a['http.request.method_original']?.length).toBeLessThanOrEqual(1024);
    const l = col.logs[0]?.items[0] as LogWire;
    expect(l.body.stringValue).toBe('deny _OTHER ERR_REQUEST_INVALID');
  });

  it('tracestate goes on with a usable traceparent and is dropped with an unusable one (a new trace; regression: passed on)', async () => {
    const { t } = await setup();
    const kept: Record<string, string> = { tracestate: 'congo=t61rcWkgMzE' };
    t.inbound.begin(record(), 1_700_000_000_000, ['traceparent', TP, 'tracestate', 'congo=t61rcWkgMzE'], kept)?.end(200, 0, false);
    expect(kept['tracestate']).toBe('congo=t61rcWkgMzE');
    expect(kept['traceparent']?.slice(3, 35)).toBe('0af7651916cd43dd8448eb211c80319c');
    const dropped: Record<string, string> = { tracestate: 'congo=t61rcWkgMzE' };
    t.inbound.begin(record(), 1_700_000_000_000, ['traceparent', '00-zzzz-bad-01', 'tracestate', 'congo=t61rcWkgMzE'], dropped)?.end(200, 0, false);
    expect(dropped['tracestate']).toBeUndefined();
    expect(dropped['traceparent']).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
  });

  it('repeated values (encoded once, then copied) and values that do not repeat both come out right', async () => {
    const { t, col } = await setup();
    const rules = ['readers', 'writers', 'r'.repeat(200), 'readers'];
    const methods = Array.from({ length: 600 }, (_, i) => `M${i}`); // more than one cache holds
    for (let i = 0; i < methods.length; i++) {
      t.inbound.begin(record({ decisionId: `d-${i}`, rule: rules[i % rules.length] as string, route: `/ward.demo.v1.Orders/${methods[i]}` }), 1_700_000_000_000, [], {})?.end(200, 0, false);
    }
    await t.flush(5000);
    const spans = col.spans.flatMap((b) => b.items);
    expect(spans).toHaveLength(methods.length);
    spans.forEach((s, i) => {
      const a = attrs(s.attributes);
      expect([a['ward.decision_id'], a['ward.rule'], a['rpc.method'], a['rpc.service']]).toEqual([`d-${i}`, rules[i % rules.length], methods[i], 'ward.demo.v1.Orders']);
    });
  });

  it('an unsampled allow: no span, the next hop gets our ids unsampled, the log record still carries them', async () => {
    const { t, col } = await setup(0);
    const fwd: Record<string, string> = {};
    expect(t.inbound.begin(record(), 1_700_000_000_000, [], fwd)).toBeNull();
    await t.flush(2000);
    expect(col.spans).toHaveLength(0);
    expect(fwd['traceparent']).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
    const l = col.logs[0]?.items[0] as LogWire;
    expect(`00-${hex(l.traceId)}-${hex(l.spanId)}-00`).toBe(fwd['traceparent']);
    expect(l.flags ?? 0).toBe(0);
  });

  // Regression (found in review): a denial answered with a 5xx or a server-error gRPC status
  // had that status as its `error.type`; docs/telemetry.md promises the reason code.
  it.each([
    ['HTTP', 'ERR_POLICY_UNAVAILABLE', 'http'],
    ['gRPC', 'ERR_KEYS_UNAVAILABLE', 'grpc'],
    ['gRPC', 'ERR_REQUEST_INVALID', 'grpc'],
    ['HTTP', 'ERR_POLICY_DENIED', 'http'],
  ] as const)('%s denial %s: error.type is the reason code, whatever status answered it', async (_p, code, protocol) => {
    const { t, col } = await setup();
    const rec = protocol === 'http' ? record({ protocol: 'http', method: 'GET', route: '/api/x', decision: 'deny', code, rule: null }) : record({ decision: 'deny', code, rule: null });
    const span = t.inbound.begin(rec, 1_700_000_000_000, [], null);
    if (protocol === 'http') span?.end(ERROR_TABLE[code].http, -1, false);
    else span?.end(200, ERROR_TABLE[code].grpc, false);
    await t.flush(2000);
    const a = attrs((col.spans[0]?.items[0] as SpanWire).attributes);
    expect([a['ward.reason'], a['error.type']]).toEqual([code, code]);
  });

  it('an outbound refusal (ERR_DESTINATION_UNKNOWN): the CLIENT span\'s error.type is the reason code, not the status ward answered the app with (regression)', async () => {
    const { t, col } = await setup();
    const refused = { decisionId: 'o-1', time: 1_700_000_000_500, service: 'orders', direction: 'outbound' as const, destination: null, protocol: 'http' as const, method: 'GET', route: '/x', decision: 'deny' as const, code: 'ERR_DESTINATION_UNKNOWN' as const, oauthError: null, token: null, cached: false, tokenMs: null };
    t.outbound.call(refused, 1_700_000_000_499, [], null)?.end(ERROR_TABLE.ERR_DESTINATION_UNKNOWN.http, -1, false);
    await t.flush(2000);
    const s = col.spans[0]?.items[0] as SpanWire;
    expect(s.status?.code).toBe('STATUS_CODE_ERROR');
    expect(attrs(s.attributes)['error.type']).toBe('ERR_DESTINATION_UNKNOWN');
  });

  it('a gRPC call whose route is not a method name in form (a path): the span is named by the HTTP method, no rpc.* (regression: named by the path)', async () => {
    const { t, col } = await setup();
    t.inbound.begin(record({ route: '/users/alice.smith@example.com', decision: 'deny', code: 'ERR_POLICY_DENIED', rule: null }), 1_700_000_000_000, [], null)?.end(200, 7, false);
    const egress = { decisionId: 'o-1', time: 1_700_000_000_500, service: 'orders', direction: 'outbound' as const, destination: 'payments', protocol: 'grpc' as const, method: 'POST', route: '/api/users/alice.smith@example.com/reset', decision: 'allow' as const, code: null, oauthError: null, token: 'exchange' as const, cached: true, tokenMs: null };
    t.outbound.call(egress, 1_700_000_000_499, [], {})?.end(200, 0, false);
    await t.flush(2000);
    const spans = col.spans.flatMap((b) => b.items);
    expect(spans.map((s) => s.name)).toEqual(['POST', 'POST']);
    for (const s of spans) {
      const a = attrs(s.attributes);
      expect(Object.values(a).join(' ')).not.toContain('alice');
      expect([a['rpc.system'], a['rpc.service'], a['http.request.method']]).toEqual([undefined, undefined, 'POST']);
    }
  });

  it('an outbound call whose destination failed: a CLIENT span with error status and the exchange outcome', async () => {
    const { t, col } = await setup();
    const fwd: Record<string, string> = {};
    const egress = { decisionId: 'o-1', time: 1_700_000_000_500, service: 'orders', direction: 'outbound' as const, destination: 'payments', protocol: 'grpc' as const, method: 'POST', route: '/ward.demo.v1.Payments/Charge', decision: 'allow' as const, code: null, oauthError: null, token: 'exchange' as const, cached: true, tokenMs: null };
    t.outbound.call(egress, 1_700_000_000_499, ['traceparent', TP], fwd)?.end(200, 14, false);
    await t.flush(2000);
    const s = col.spans[0]?.items[0] as SpanWire;
    expect(s.kind).toBe('SPAN_KIND_CLIENT');
    expect(s.status?.code).toBe('STATUS_CODE_ERROR');
    expect(attrs(s.attributes)).toMatchObject({ 'ward.direction': 'outbound', 'ward.destination': 'payments', 'ward.exchange.outcome': 'hit', 'error.type': '14', 'rpc.grpc.status_code': 'int:14' });
  });
});
