import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { resolveTelemetry } from '../../../src/config/telemetry.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import { startTelemetry, type Telemetry } from '../../../src/telemetry/telemetry.ts';
import { decisionRecord } from './records.ts';

/**
 * Regression (found in review): the sidecar's control-plane bearer token went to whichever
 * collector `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` named when logs and metrics defaulted to the
 * control plane, and the control plane got decision records without it when only the metrics
 * endpoint was set elsewhere. The endpoint source was one value for three signals. Now each
 * target has its own, and `startTelemetry` attaches the token (which `cli/sidecar.ts` always
 * passes) only to channels whose target is the control plane.
 */

interface Seen {
  signal: 'traces' | 'logs' | 'metrics';
  authorization: string | undefined;
}

/** An OTLP/gRPC peer that records which signal each Export carried and its `authorization`. */
async function recordingServer(): Promise<{ port: number; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const server = new grpc.Server();
  const id = (b: Buffer): Buffer => b;
  for (const [svc, signal] of [
    ['opentelemetry.proto.collector.trace.v1.TraceService', 'traces'],
    ['opentelemetry.proto.collector.logs.v1.LogsService', 'logs'],
    ['opentelemetry.proto.collector.metrics.v1.MetricsService', 'metrics'],
  ] as const) {
    server.addService(
      { Export: { path: `/${svc}/Export`, requestStream: false, responseStream: false, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id } },
      {
        Export: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
          const a = call.metadata.get('authorization')[0];
          seen.push({ signal, authorization: a === undefined ? undefined : String(a) });
          cb(null, Buffer.alloc(0));
        },
      },
    );
  }
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { port, seen, close: () => new Promise<void>((res) => server.tryShutdown(() => res())) };
}

/** As `cli/sidecar.ts` starts it: a control plane in the context, its token always offered. */
function sidecarTelemetry(env: Record<string, string>, controlPlanePort: number): Telemetry {
  const tcfg = resolveTelemetry(
    { queue: { delayMs: 5 }, metricsIntervalMs: 100 },
    { service: 'orders', file: 'x', baseDir: '/', controlPlane: { address: `127.0.0.1:${controlPlanePort}`, tls: false } },
    env,
  );
  return startTelemetry(tcfg, { service: 'orders', instanceId: 'pod-1', log: silentLogger, token: async () => 'CONTROL-PLANE-TOKEN' });
}

const signals = (seen: Seen[]): string[] => [...new Set(seen.map((s) => s.signal))].sort();

describe('which exports carry the control-plane token', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  async function run(env: (collectorPort: number) => Record<string, string>): Promise<{ cp: Seen[]; collector: Seen[] }> {
    const cp = await recordingServer();
    cleanup.push(() => cp.close());
    const collector = await recordingServer();
    cleanup.push(() => collector.close());
    const t = sidecarTelemetry(env(collector.port), cp.port);
    t.inbound.begin(decisionRecord(), t.inbound.now(), [], null)?.end(403, -1, false);
    await t.flush(2000);
    await t.shutdown(2000); // the last metrics push
    return { cp: cp.seen, collector: collector.seen };
  }

  it('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set, the rest to the control plane: the traces collector never gets the token', async () => {
    const { cp, collector } = await run((port) => ({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `http://127.0.0.1:${port}` }));
    expect(signals(collector)).toEqual(['traces']);
    expect(signals(cp)).toEqual(['logs', 'metrics']);
    expect(collector.map((s) => s.authorization)).toEqual(collector.map(() => undefined));
    expect(cp.map((s) => s.authorization)).toEqual(cp.map(() => 'Bearer CONTROL-PLANE-TOKEN'));
  });

  it('OTEL_EXPORTER_OTLP_METRICS_ENDPOINT set, the rest to the control plane: decision records and spans still carry the token', async () => {
    const { cp, collector } = await run((port) => ({ OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: `http://127.0.0.1:${port}` }));
    expect(signals(collector)).toEqual(['metrics']);
    expect(signals(cp)).toEqual(['logs', 'traces']);
    expect(collector.map((s) => s.authorization)).toEqual(collector.map(() => undefined));
    expect(cp.map((s) => s.authorization)).toEqual(cp.map(() => 'Bearer CONTROL-PLANE-TOKEN'));
  });

  it('the same collector for every signal (OTEL_EXPORTER_OTLP_ENDPOINT): no export carries the token', async () => {
    const { cp, collector } = await run((port) => ({ OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}` }));
    expect(cp).toEqual([]);
    expect(signals(collector)).toEqual(['logs', 'metrics', 'traces']);
    expect(collector.filter((s) => s.authorization !== undefined)).toEqual([]);
  });
});
