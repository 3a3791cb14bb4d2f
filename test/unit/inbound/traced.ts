import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { resolveTelemetry } from '../../../src/config/telemetry.ts';
import { createInbound, type Inbound } from '../../../src/inbound/server.ts';
import type { DecisionRecord, InboundDeps } from '../../../src/inbound/types.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import { evaluate } from '../../../src/policy/evaluate.ts';
import { parsePolicyText } from '../../../src/policy/load.ts';
import type { CompiledPolicy } from '../../../src/policy/model.ts';
import { startTelemetry, type Telemetry } from '../../../src/telemetry/telemetry.ts';
import { ISSUER, testAuthenticate, testConfig, testExtract } from './harness.ts';

/** Inbound calls with ward's telemetry: an OTLP collector decoding with the vendored protos, and a real inbound stack (real `evaluate`) traced to it. */

const PROTO_ROOT = fileURLToPath(new URL('../../../proto/', import.meta.url));

export type Attr = { key: string; value: { stringValue?: string; intValue?: string } };
export interface SpanWire {
  traceId: Buffer;
  spanId: Buffer;
  traceState?: string;
  parentSpanId?: Buffer;
  name: string;
  kind: string;
  attributes: Attr[];
  status?: { code: string };
}
export interface LogWire {
  body: { stringValue: string };
  attributes: Attr[];
  traceId?: Buffer;
  spanId?: Buffer;
  eventName: string;
}

export interface Collector {
  port: number;
  spans: SpanWire[];
  logs: LogWire[];
  close(): Promise<void>;
}

export async function collector(): Promise<Collector> {
  const protos = ['trace/v1/trace_service', 'logs/v1/logs_service', 'metrics/v1/metrics_service'].map((f) => `opentelemetry/proto/collector/${f}.proto`);
  const def = protoLoader.loadSync(protos, { longs: String, enums: String, defaults: false, includeDirs: [PROTO_ROOT] });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { opentelemetry: { proto: { collector: Record<'trace' | 'logs' | 'metrics', { v1: Record<string, grpc.ServiceClientConstructor> }> } } };
  const c = pkg.opentelemetry.proto.collector;
  const spans: SpanWire[] = [];
  const logs: LogWire[] = [];
  const server = new grpc.Server();
  server.addService((c.trace.v1['TraceService'] as grpc.ServiceClientConstructor).service, {
    Export: (call: grpc.ServerUnaryCall<{ resourceSpans: { scopeSpans: { spans: SpanWire[] }[] }[] }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      for (const rs of call.request.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
      cb(null, {});
    },
  });
  server.addService((c.logs.v1['LogsService'] as grpc.ServiceClientConstructor).service, {
    Export: (call: grpc.ServerUnaryCall<{ resourceLogs: { scopeLogs: { logRecords: LogWire[] }[] }[] }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      for (const rl of call.request.resourceLogs) for (const sl of rl.scopeLogs) logs.push(...sl.logRecords);
      cb(null, {});
    },
  });
  server.addService((c.metrics.v1['MetricsService'] as grpc.ServiceClientConstructor).service, {
    Export: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, {}),
  });
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { port, spans, logs, close: () => new Promise<void>((res) => server.tryShutdown(() => res())) };
}

export const attrs = (list: Attr[]): Record<string, string> => Object.fromEntries(list.map((a) => [a.key, a.value.stringValue ?? `int:${a.value.intValue}`]));

export function telemetryTo(port: number, service = 'orders'): Telemetry {
  const cfg = resolveTelemetry({ endpoint: `127.0.0.1:${port}`, sampleRatio: 1, queue: { delayMs: 5 } }, { service, file: 'x', baseDir: '/' }, {});
  return startTelemetry(cfg, { service, instanceId: 'pod-1', log: silentLogger });
}

export function policyText(rules: string, extra = ''): CompiledPolicy {
  return parsePolicyText(
    `apiVersion: ward.dev/v1
kind: Policy
service: orders
${extra}issuers:
  - issuer: ${ISSUER}
    audiences: [urn:ward:orders]
rules:
${rules}`,
    'test.yaml',
    { env: {} },
  );
}

export interface TracedProxy {
  inbound: Inbound;
  port: number;
  decisions: DecisionRecord[];
  telemetry: Telemetry;
  close(): Promise<void>;
}

/** A real inbound stack (real `evaluate` on `policy`) with ward's telemetry as its tracer; `policy` may be a snapshot reader, `extractBearer` a fake. */
export async function tracedProxy(o: {
  upstreamPort: number;
  protocol: 'h2c' | 'http1';
  policy: CompiledPolicy | (() => CompiledPolicy | null);
  collectorPort: number;
  extractBearer?: InboundDeps['extractBearer'];
}): Promise<TracedProxy> {
  const decisions: DecisionRecord[] = [];
  const telemetry = telemetryTo(o.collectorPort);
  const inbound = await createInbound({
    config: testConfig({ upstreamPort: o.upstreamPort, protocol: o.protocol }),
    authenticate: testAuthenticate(),
    extractBearer: o.extractBearer ?? testExtract,
    policy: typeof o.policy === 'function' ? o.policy : () => o.policy as CompiledPolicy,
    evaluate,
    log: silentLogger,
    clock: () => Date.now(),
    onDecision: (r) => decisions.push(r),
    tracer: telemetry.inbound,
  });
  return {
    inbound,
    port: inbound.ports.cleartext,
    decisions,
    telemetry,
    async close() {
      await inbound.close();
      await telemetry.shutdown(1000);
    },
  };
}

export async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}
