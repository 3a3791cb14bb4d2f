/**
 * The per-call cost of telemetry: `CallTracer.begin` + `CallSpan.end`, the work the inbound
 * stack adds to every call when telemetry is on (metrics, and the span and decision log record
 * when exported), in these cases:
 *
 *   metrics only        no OTLP endpoint: counter + histogram, nothing else
 *   allow, sampled      span + log record + metrics, caller traceparent continued, traceparent set
 *   allow, unsampled    ratio 0, no sampled parent: non-recording span + log record + metrics
 *   deny, ratio 0       denials are always sampled: span + log record + metrics
 *
 * Exports go to 127.0.0.1:1 (nothing listens): batches fail fast and are dropped and counted,
 * so the numbers are the request-path cost, not the exporter's. Queues are large enough that
 * pushes are not dropped during a run.
 *
 *   node scripts/bench/micro-telemetry.ts [iterations per case, default 100000]
 *
 * Prints ops/s and ns/op per case and heap growth per op. Bounded; no assertions.
 */
import { resolveTelemetry } from '../../src/config/telemetry.ts';
import type { DecisionRecord } from '../../src/inbound/types.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { startTelemetry, type Telemetry } from '../../src/telemetry/telemetry.ts';

const N = Number(process.argv[2] ?? 100_000);
const TP = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
const RAW_WITH_PARENT = [':method', 'POST', ':path', '/ward.demo.v1.Orders/GetOrder', 'content-type', 'application/grpc', 'traceparent', TP];
const RAW = [':method', 'POST', ':path', '/ward.demo.v1.Orders/GetOrder', 'content-type', 'application/grpc'];

function rec(decision: 'allow' | 'deny'): DecisionRecord {
  return {
    decisionId: 'AAAAAAAAAAAAAAAAAAAAAA',
    time: Date.now(),
    service: 'orders',
    protocol: 'grpc',
    method: 'POST',
    route: decision === 'allow' ? '/ward.demo.v1.Orders/GetOrder' : '/ward.demo.v1.Orders/DeleteOrder',
    decision,
    code: decision === 'allow' ? null : 'ERR_POLICY_DENIED',
    rule: decision === 'allow' ? 'readers' : 'no-deletes',
    policyVersion: 'sha256-0123456789abcdef',
    issuer: 'https://idp.example.com',
    subject: 'reporting',
    dryRunCode: null,
    dryRunRule: null,
  };
}

function start(endpoint: string | undefined, sampleRatio: number): Telemetry {
  const cfg = resolveTelemetry(
    { ...(endpoint === undefined ? {} : { endpoint }), sampleRatio, queue: { maxSize: 1_000_000, batchSize: 512, delayMs: 50 }, exportTimeoutMs: 200 },
    { service: 'orders', file: 'bench', baseDir: '/' },
    {},
  );
  return startTelemetry(cfg, { service: 'orders', instanceId: 'bench', log: silentLogger });
}

async function run(name: string, t: Telemetry, r: DecisionRecord, raw: readonly string[]): Promise<void> {
  const fwd: Record<string, string> = {};
  for (let i = 0; i < Math.min(N, 5000); i++) t.inbound.begin(r, t.inbound.now(), raw, fwd)?.end(200, 0, false);
  global.gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const span = t.inbound.begin(r, t.inbound.now(), raw, fwd);
    span?.end(200, 0, false);
  }
  const ns = Number(process.hrtime.bigint() - t0);
  const heap = process.memoryUsage().heapUsed - heap0;
  console.log(`${name.padEnd(20)} ${Math.round((N / ns) * 1e9).toLocaleString('en').padStart(10)} ops/s ${(ns / N).toFixed(0).padStart(7)} ns/op  heap +${(heap / N).toFixed(0)} B/op (queued items included)`);
  await t.shutdown(500);
}

console.log(`node ${process.version}, ${N} calls per case`);
await run('metrics only', start(undefined, 1), rec('allow'), RAW_WITH_PARENT);
await run('allow, sampled', start('127.0.0.1:1', 1), rec('allow'), RAW_WITH_PARENT);
await run('allow, unsampled', start('127.0.0.1:1', 0), rec('allow'), RAW);
await run('deny, ratio 0', start('127.0.0.1:1', 0), rec('deny'), RAW);
