import {
  AggregationTemporality,
  type Attributes,
  DataPointType,
  type DataPoint,
  type Histogram,
  type MetricData,
  type ResourceMetrics,
  type ScopeMetrics,
  ValueType,
} from './metric-data.ts';
import { PbWriter, WIRE_LEN } from '../lib/protobuf.ts';

/**
 * OTLP protobuf `ExportMetricsServiceRequest` for collected metrics, byte for byte what
 * `ProtobufMetricsSerializer.serializeRequest` of @opentelemetry/otlp-transformer 0.301 writes
 * for the same input (the tests compare the two on the SDK's own output and on edge cases).
 * That package is not imported: it loads the metrics SDK, which a sidecar does not
 * (metric-data.ts).
 *
 * Its choices, kept because the bytes must match: fields in its order (a data point's
 * attributes after its value, a scope's `schema_url` after its metrics); the resource's
 * `dropped_attributes_count` always written, as 0; names always written, but an empty
 * description, unit, scope version or schema URL, an absent sum, min or max and an empty bucket
 * list left out; a point's value as `as_int` (sfixed64) when the instrument's
 * value type is INT, else as `as_double`; an attribute number as `int_value` when whole and
 * within int64, else as `double_value`.
 *
 * Left out, where the transformer would write them: exponential histograms (the whole
 * `Metric`), which ward never makes and whose points metric-data.ts does not describe; and a
 * resource `schema_url`, which metric-data.ts's resource does not carry.
 *
 * Field numbers: opentelemetry/proto/{collector/metrics,metrics,common,resource}/v1/*.proto
 * (vendored in proto/opentelemetry).
 */

/** Bounds of OTLP's `int64`: a whole attribute number outside them is written as a double. */
const MIN_INT64 = -(2 ** 63);
const MAX_INT64 = 2 ** 63;

/**
 * Reused from one export to the next: its buffer stays at the largest request so far instead
 * of growing anew each time; `bytes()` hands out a copy.
 */
const writer = new PbWriter(16 * 1024);

export function encodeMetricsRequest(rm: ResourceMetrics): Buffer {
  const w = writer;
  w.reset();
  const r = w.begin(1); // ExportMetricsServiceRequest.resource_metrics
  const res = w.begin(1); // ResourceMetrics.resource
  writeAttributes(w, 1, rm.resource.attributes);
  w.uint(2, 0); // dropped_attributes_count, written though 0 (proto3's default)
  w.end(res);
  for (const sm of rm.scopeMetrics) writeScopeMetrics(w, sm);
  w.end(r);
  return w.bytes();
}

/** `ResourceMetrics.scope_metrics` (2): scope, metrics, then the scope's schema URL. */
function writeScopeMetrics(w: PbWriter, sm: ScopeMetrics): void {
  const m = w.begin(2);
  const s = w.begin(1); // InstrumentationScope
  w.string(1, sm.scope.name);
  if (sm.scope.version) w.string(2, sm.scope.version);
  w.end(s);
  for (const metric of sm.metrics) writeMetric(w, metric);
  if (sm.scope.schemaUrl) w.string(3, sm.scope.schemaUrl);
  w.end(m);
}

/** `ScopeMetrics.metrics` (2). */
function writeMetric(w: PbWriter, metric: MetricData): void {
  if (metric.dataPointType === DataPointType.EXPONENTIAL_HISTOGRAM) return;
  const { name, description, unit, valueType } = metric.descriptor;
  const m = w.begin(2);
  w.string(1, name);
  if (description) w.string(2, description);
  if (unit) w.string(3, unit);
  switch (metric.dataPointType) {
    case DataPointType.GAUGE: {
      const g = w.begin(5);
      for (const dp of metric.dataPoints) writeNumberPoint(w, dp, valueType);
      w.end(g);
      break;
    }
    case DataPointType.SUM: {
      const s = w.begin(7);
      for (const dp of metric.dataPoints) writeNumberPoint(w, dp, valueType);
      writeTemporality(w, metric.aggregationTemporality);
      if (metric.isMonotonic) w.bool(3, true);
      w.end(s);
      break;
    }
    case DataPointType.HISTOGRAM: {
      const h = w.begin(9);
      for (const dp of metric.dataPoints) writeHistogramPoint(w, dp);
      writeTemporality(w, metric.aggregationTemporality);
      w.end(h);
      break;
    }
  }
  w.end(m);
}

/** `aggregation_temporality` (2): the SDK's DELTA (0) and CUMULATIVE (1) are OTLP's 1 and 2; anything else is UNSPECIFIED, not written. */
function writeTemporality(w: PbWriter, temporality: number): void {
  if (temporality === AggregationTemporality.DELTA) w.uint(2, 1);
  else if (temporality === AggregationTemporality.CUMULATIVE) w.uint(2, 2);
}

/** `data_points` (1) of a `Gauge` or `Sum`: a `NumberDataPoint`. */
function writeNumberPoint(w: PbWriter, dp: DataPoint<number>, valueType: number): void {
  const m = w.begin(1);
  w.hrTimeNanos(2, dp.startTime[0], dp.startTime[1]);
  w.hrTimeNanos(3, dp.endTime[0], dp.endTime[1]);
  if (valueType === ValueType.INT) w.sfixed64(6, dp.value);
  else w.double(4, dp.value);
  writeAttributes(w, 7, dp.attributes);
  w.end(m);
}

/** `data_points` (1) of a `Histogram`: a `HistogramDataPoint`. */
function writeHistogramPoint(w: PbWriter, dp: DataPoint<Histogram>): void {
  const h = dp.value;
  const m = w.begin(1);
  w.hrTimeNanos(2, dp.startTime[0], dp.startTime[1]);
  w.hrTimeNanos(3, dp.endTime[0], dp.endTime[1]);
  w.fixed64(4, h.count);
  if (h.sum !== undefined) w.double(5, h.sum);
  w.packedFixed64(6, h.buckets.counts);
  w.packedDouble(7, h.buckets.boundaries);
  writeAttributes(w, 9, dp.attributes);
  if (h.min !== undefined) w.double(11, h.min);
  if (h.max !== undefined) w.double(12, h.max);
  w.end(m);
}

/** Repeated `KeyValue` as field `field`, in the object's key order; an undefined value gives an empty `AnyValue`. */
function writeAttributes(w: PbWriter, field: number, attributes: Attributes): void {
  for (const key in attributes) {
    if (!Object.hasOwn(attributes, key)) continue;
    writeKeyValue(w, field, key, attributes[key]);
  }
}

function writeKeyValue(w: PbWriter, field: number, key: string, value: unknown): void {
  const m = w.begin(field);
  w.string(1, key);
  const v = w.begin(2);
  writeAnyValue(w, value);
  w.end(v);
  w.end(m);
}

/**
 * The body of an `AnyValue`. `unknown`, not `AttributeValue`: the SDK's attributes (which the
 * tests pass in) may hold any value, and bytes and maps are written as the transformer writes
 * them. null, undefined and other values (bigint, functions) give an empty `AnyValue`.
 */
function writeAnyValue(w: PbWriter, value: unknown): void {
  if (typeof value === 'string') {
    w.string(1, value);
  } else if (typeof value === 'boolean') {
    w.bool(2, value);
  } else if (typeof value === 'number') {
    if (Number.isInteger(value) && value >= MIN_INT64 && value < MAX_INT64) w.int64(3, value);
    else w.double(4, value);
  } else if (value instanceof Uint8Array) {
    w.tag(7, WIRE_LEN);
    w.varint(value.length);
    w.raw(value);
  } else if (Array.isArray(value)) {
    const a = w.begin(5); // ArrayValue
    for (const item of value) {
      const v = w.begin(1);
      writeAnyValue(w, item);
      w.end(v);
    }
    w.end(a);
  } else if (typeof value === 'object' && value !== null) {
    const l = w.begin(6); // KeyValueList
    for (const key in value) {
      if (Object.hasOwn(value, key)) writeKeyValue(w, 1, key, (value as Record<string, unknown>)[key]);
    }
    w.end(l);
  }
}
