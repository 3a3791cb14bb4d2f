import { fileURLToPath } from 'node:url';
import type * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/**
 * The OTLP collector services (proto/opentelemetry, vendored) as grpc-js service definitions
 * whose request deserializer keeps the raw bytes: the receiver forwards exactly what it received,
 * and reads only the decision records out of log requests (scan.ts), in place.
 */

const PROTO_ROOT = fileURLToPath(new URL('../../../../proto/', import.meta.url));

export const OTLP_SERVICES = {
  traces: 'opentelemetry.proto.collector.trace.v1.TraceService',
  logs: 'opentelemetry.proto.collector.logs.v1.LogsService',
  metrics: 'opentelemetry.proto.collector.metrics.v1.MetricsService',
} as const;

export type OtlpSignal = keyof typeof OTLP_SERVICES;

const FILES = [
  'opentelemetry/proto/collector/trace/v1/trace_service.proto',
  'opentelemetry/proto/collector/logs/v1/logs_service.proto',
  'opentelemetry/proto/collector/metrics/v1/metrics_service.proto',
];

interface Loaded {
  readonly raw: Record<OtlpSignal, grpc.ServiceDefinition>;
}

let loaded: Loaded | undefined;

function load(): Loaded {
  if (loaded === undefined) {
    const def = protoLoader.loadSync(FILES, {
      keepCase: false,
      longs: String,
      enums: Number,
      defaults: true,
      oneofs: true,
      includeDirs: [PROTO_ROOT],
    });
    const raw = {} as Record<OtlpSignal, grpc.ServiceDefinition>;
    for (const signal of Object.keys(OTLP_SERVICES) as OtlpSignal[]) {
      const svc = def[OTLP_SERVICES[signal]] as unknown as grpc.ServiceDefinition;
      const exp = svc['Export'] as grpc.MethodDefinition<unknown, unknown>;
      raw[signal] = { Export: { ...exp, requestDeserialize: (b: Buffer) => b } };
    }
    loaded = { raw };
  }
  return loaded;
}

/** The service definition of one signal, with raw (Buffer) requests. */
export function rawOtlpService(signal: OtlpSignal): grpc.ServiceDefinition {
  return load().raw[signal];
}

// ---- wire shapes (what scan.ts reads of a log record; the names are the OTLP fields, camel-cased)

export interface AnyValueWire {
  value?: 'stringValue' | 'boolValue' | 'intValue' | 'doubleValue' | 'arrayValue' | 'kvlistValue' | 'bytesValue';
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string;
  doubleValue?: number;
  bytesValue?: Buffer;
  /** Set by the scan: more than one field of the oneof, or one of the wrong wire type (scan.ts `anyValue`). */
  ambiguous?: true;
}

export interface KeyValueWire {
  key: string;
  value: AnyValueWire | null;
  /** Set by the scan: `value` sent in more than one part, or itself ambiguous (scan.ts `keyValue`). */
  ambiguous?: true;
}

export interface LogRecordWire {
  timeUnixNano: string;
  observedTimeUnixNano: string;
  eventName: string;
  body: AnyValueWire | null;
  attributes: KeyValueWire[];
  traceId: Buffer;
  spanId: Buffer;
}
