import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveTelemetry } from '../../../src/config/telemetry.ts';
import { compileBindings } from '../../../src/controlplane/server/access.ts';
import { createDecisionStore, type DecisionStore } from '../../../src/controlplane/server/decisions/store.ts';
import { telemetryReceiverSchema } from '../../../src/controlplane/server/otlp/config.ts';
import { createOtlpReceiver, type OtlpReceiver } from '../../../src/controlplane/server/otlp/receiver.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import { startTelemetry, type Telemetry } from '../../../src/telemetry/telemetry.ts';
import { tableAuthenticator } from '../controlplane/harness.ts';
import { startReceiver } from './receiver-rig.ts';
import { decisionRecord } from './records.ts';

/**
 * The sidecar's exporter against the control plane's OTLP receiver, over real gRPC on loopback:
 * decision records land in the store with every field; an authenticated exporter writes only
 * decisions of services it is bound to; a refused exporter drops and counts, the call path never
 * sees an error.
 */

const record = decisionRecord;

const TP = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

describe('OTLP receiver and the sidecar exporter', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  async function receiver(allowLoopbackWithoutToken = true, forwarded: string[] = []): Promise<{ port: number; store: DecisionStore; otlp: OtlpReceiver }> {
    const r = await startReceiver(allowLoopbackWithoutToken, (path) => forwarded.push(path));
    cleanup.push(() => r.close());
    return r;
  }

  function sidecar(port: number, service: string, token?: string): Telemetry {
    // the receiver as the sidecar's control plane: the only target its token is sent to
    const cfg = resolveTelemetry({ queue: { delayMs: 5 } }, { service, file: 'x', baseDir: '/', controlPlane: { address: `127.0.0.1:${port}`, tls: false } }, {});
    const t = startTelemetry(cfg, { service, instanceId: 'pod-1', log: silentLogger, ...(token === undefined ? {} : { token: async () => token }) });
    cleanup.push(() => t.shutdown(1000));
    return t;
  }

  it('stores each decision record with its fields and trace context', async () => {
    const { port, store } = await receiver();
    const t = sidecar(port, 'orders');
    const fwd: Record<string, string> = {};
    const span = t.inbound.begin(record({ decision: 'allow', code: null, rule: 'readers', route: '/ward.demo.v1.Orders/GetOrder', dryRunCode: 'ERR_SCOPE_INSUFFICIENT', dryRunRule: 'scoped-reads' }), t.inbound.now(), ['traceparent', TP], fwd);
    span?.end(200, 0, false);
    t.inbound.begin(record({ decisionId: 'd-2', protocol: 'http', method: 'GET', route: '/api/orders/7', subject: null, issuer: null }), t.inbound.now(), [], null)?.end(403, -1, false);
    await t.flush(2000);
    const got = store.query({}, 10);
    expect(got).toHaveLength(2);
    expect(got[0]).toEqual({
      timeMs: 1_700_000_000_123,
      service: 'orders',
      direction: 'inbound',
      decision: 'dry-run-deny',
      reason: 'ERR_SCOPE_INSUFFICIENT',
      rule: 'readers',
      policyVersion: 'v1abc',
      issuer: 'http://idp',
      subject: 'reporting',
      method: 'POST',
      route: '/ward.demo.v1.Orders/GetOrder',
      decisionId: 'd-1',
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: (fwd['traceparent'] ?? '').slice(36, 52),
      instanceId: 'pod-1',
      destination: '',
      exchangeOutcome: '',
      // the dry-run rule that would have denied reaches the decision log (regression: it was dropped)
      dryRunRule: 'scoped-reads',
    });
    // the next hop continues our span, in the caller's trace
    expect(fwd['traceparent']).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
    expect(got[1]).toMatchObject({ decision: 'deny', method: 'GET', route: '/api/orders/7', subject: '', issuer: '', traceId: expect.stringMatching(/^[0-9a-f]{32}$/) as unknown });
    expect(t.counters().logs.exported).toBe(2);
  });

  it('an outbound call gets its own span in the caller\'s trace, propagated to the destination', async () => {
    const { port, store } = await receiver();
    const t = sidecar(port, 'orders');
    const fwd: Record<string, string> = {};
    const egress = { decisionId: 'o-9', time: 1_700_000_000_500, service: 'orders', direction: 'outbound' as const, destination: 'payments', protocol: 'grpc' as const, method: 'POST', route: '/ward.demo.v1.Payments/Charge', decision: 'allow' as const, code: null, oauthError: null, token: 'exchange' as const, cached: false, tokenMs: 3 };
    const span = t.outbound.call(egress, t.outbound.now(), ['traceparent', TP], fwd);
    expect(span).not.toBeNull();
    span?.end(200, 0, false);
    await t.flush(2000);
    const [d] = store.query({}, 10);
    expect(d).toMatchObject({ direction: 'outbound', destination: 'payments', exchangeOutcome: 'exchanged', traceId: '0af7651916cd43dd8448eb211c80319c' });
    // the destination continues this (new) span, not the app's
    expect(fwd['traceparent']).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-[0-9a-f]{16}-01$/);
    expect(fwd['traceparent']?.slice(36, 52)).not.toBe(TP.slice(36, 52));
    expect(fwd['traceparent']?.slice(36, 52)).toBe(d?.spanId);
    expect(t.counters().traces.exported).toBe(1);
  });

  it('keeps only decisions of services bound to an authenticated exporter, and forwards no export that carried others (regression: forwarded byte for byte)', async () => {
    const forwarded: string[] = [];
    const { port, store, otlp } = await receiver(true, forwarded);
    const own = sidecar(port, 'orders', 'orders-token');
    own.inbound.begin(record(), own.inbound.now(), [], null)?.end(200, 0, false);
    const other = sidecar(port, 'payments', 'orders-token');
    other.inbound.begin(record({ service: 'payments' }), other.inbound.now(), [], null)?.end(200, 0, false);
    await Promise.all([own.flush(2000), other.flush(2000)]);
    expect(store.query({}, 10).map((d) => d.service)).toEqual(['orders']);
    // payments' exports (a resource named payments) are refused whole: its decision records
    // never reach the record-level check, and its spans are not forwarded either
    expect(otlp.counters.refused).toBe(2);
    expect(other.counters().logs.droppedExportFailed).toBe(1);
    // orders' own exports went on (logs and spans); payments' did not.
    expect(forwarded.filter((p) => p.includes('LogsService'))).toHaveLength(1);
    expect(forwarded.filter((p) => p.includes('TraceService'))).toHaveLength(1);
  });

  it('refuses an exporter without a token when loopback is not trusted: dropped and counted, never thrown', async () => {
    const { port, store, otlp } = await receiver(false);
    const t = sidecar(port, 'orders');
    expect(() => t.inbound.begin(record(), t.inbound.now(), [], null)).not.toThrow();
    await t.flush(2000);
    expect(store.size()).toBe(0);
    expect(otlp.counters.refused).toBeGreaterThanOrEqual(1);
    expect(t.counters().logs.droppedExportFailed).toBe(1);
    const bad = sidecar(port, 'orders', 'forged');
    bad.inbound.begin(record(), bad.inbound.now(), [], null);
    await bad.flush(2000);
    expect(store.size()).toBe(0);
    expect(bad.counters().logs.droppedExportFailed).toBe(1);
  });

  it('an unreachable endpoint costs the caller nothing: begin returns at once and the drop is counted', async () => {
    const t = sidecar(1, 'orders');
    for (let i = 0; i < 5; i++) t.inbound.begin(record({ decisionId: `d-${i}` }), t.inbound.now(), [], {})?.end(200, 0, false);
    await t.flush(3000);
    expect(t.counters().logs.droppedExportFailed).toBe(5);
    expect(t.counters().traces.droppedExportFailed).toBe(5); // denials are always sampled
  });
});

describe('outbound decisions (egress onDecision hook)', () => {
  it('become decision records with the exchange outcome, and count cache hits and misses', async () => {
    const store = createDecisionStore({ capacity: 10 });
    const otlp = createOtlpReceiver({
      config: telemetryReceiverSchema.parse({}),
      store,
      forwarder: null,
      authenticator: tableAuthenticator({}),
      bindings: compileBindings([]),
      log: silentLogger,
    });
    const server = new grpc.Server();
    otlp.register(server);
    const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
    const cfg = resolveTelemetry({ endpoint: `127.0.0.1:${port}`, queue: { delayMs: 5 } }, { service: 'orders', file: 'x', baseDir: '/' }, {});
    const t = startTelemetry(cfg, { service: 'orders', instanceId: 'pod-1', log: silentLogger });
    try {
      const base = { time: 5000, service: 'orders', direction: 'outbound' as const, protocol: 'grpc' as const, method: 'POST', route: '/ward.demo.v1.Payments/Charge' };
      t.outbound.decision({ ...base, decisionId: 'o-1', destination: 'payments', decision: 'allow', code: null, oauthError: null, token: 'exchange', cached: false, tokenMs: 42 });
      t.outbound.decision({ ...base, decisionId: 'o-2', destination: 'payments', decision: 'allow', code: null, oauthError: null, token: 'exchange', cached: true, tokenMs: null });
      t.outbound.decision({ ...base, decisionId: 'o-3', destination: 'ledger', decision: 'deny', code: 'ERR_EXCHANGE_REFUSED', oauthError: 'invalid_target', token: null, cached: false, tokenMs: 7 });
      await t.flush(2000);
      expect(store.query({}, 10).map((d) => [d.direction, d.destination, d.decision, d.reason, d.exchangeOutcome])).toEqual([
        ['outbound', 'payments', 'allow', '', 'exchanged'],
        ['outbound', 'payments', 'allow', '', 'hit'],
        ['outbound', 'ledger', 'deny', 'ERR_EXCHANGE_REFUSED', 'refused'],
      ]);
      const text = await t.metricsText();
      expect(text).toMatch(/ward_exchange_cache_lookups_total\{ward_cache_result="hit"[^}]*\} 1\n/);
      expect(text).toMatch(/ward_exchange_cache_lookups_total\{ward_cache_result="miss"[^}]*\} 1\n/);
      // token-exchange latency: one request each for the exchanged and the refused call, none for the hit
      expect(text).toMatch(/ward_exchange_duration_count\{[^}]*ward_exchange_outcome="exchanged"[^}]*\} 1\n/);
      expect(text).toMatch(/ward_exchange_duration_count\{[^}]*ward_exchange_outcome="refused"[^}]*\} 1\n/);
      expect(text).not.toMatch(/ward_exchange_duration_count\{[^}]*ward_exchange_outcome="hit"/);
      expect(text).toMatch(/ward_decisions_total\{[^}]*ward_direction="outbound",ward_decision="deny",ward_reason="ERR_EXCHANGE_REFUSED"[^}]*\} 1\n/);
    } finally {
      await t.shutdown(1000);
      await new Promise<void>((res) => server.tryShutdown(() => res()));
    }
  });
});
