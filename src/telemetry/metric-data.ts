/**
 * Collected metrics, in the shape of the OpenTelemetry JS SDK's `ResourceMetrics`
 * (`@opentelemetry/sdk-metrics` 3.x `export/MetricData`): ward's registry (metrics.ts) produces
 * it, the Prometheus writer (prometheus.ts) and the OTLP encoder (otlp-metrics.ts) read it.
 * Defined here, structurally equal to the SDK's, so that a sidecar does not load the SDK (~3 MB
 * of heap, docs/performance.md "Memory") while tests can still hand the SDK's own output to
 * ward's writers and compare the bytes with the SDK's serializers.
 */

/**
 * Attribute sets. Values as `@opentelemetry/api` 1.10's `AnyValue` (strings, numbers, booleans,
 * arrays, maps, bytes, null): ward's own are strings and numbers, but the writers take whatever
 * the SDK's type allows, as the SDK's serializers do.
 */
export type Attributes = Readonly<Record<string, unknown>>;

/** `[seconds, nanoseconds]` since the epoch, as the SDK's `HrTime`. */
export type HrTime = readonly [number, number];

/** The SDK's `DataPointType` values. */
export const DataPointType = { HISTOGRAM: 0, EXPONENTIAL_HISTOGRAM: 1, GAUGE: 2, SUM: 3 } as const;
/** The SDK's (and OTLP's) `AggregationTemporality` values. */
export const AggregationTemporality = { DELTA: 0, CUMULATIVE: 1 } as const;
/** `@opentelemetry/api` `ValueType`. */
export const ValueType = { INT: 0, DOUBLE: 1 } as const;

export interface MetricDescriptor {
  readonly name: string;
  readonly description: string;
  readonly unit: string;
  readonly valueType: number;
}

export interface DataPoint<T> {
  readonly startTime: HrTime;
  readonly endTime: HrTime;
  readonly attributes: Attributes;
  readonly value: T;
}

export interface Histogram {
  readonly buckets: { readonly boundaries: readonly number[]; readonly counts: readonly number[] };
  readonly sum?: number;
  readonly count: number;
  readonly min?: number;
  readonly max?: number;
}

interface BaseMetricData {
  readonly descriptor: MetricDescriptor;
  readonly aggregationTemporality: number;
}

export interface SumMetricData extends BaseMetricData {
  readonly dataPointType: typeof DataPointType.SUM;
  readonly dataPoints: readonly DataPoint<number>[];
  readonly isMonotonic: boolean;
}

export interface GaugeMetricData extends BaseMetricData {
  readonly dataPointType: typeof DataPointType.GAUGE;
  readonly dataPoints: readonly DataPoint<number>[];
}

export interface HistogramMetricData extends BaseMetricData {
  readonly dataPointType: typeof DataPointType.HISTOGRAM;
  readonly dataPoints: readonly DataPoint<Histogram>[];
}

/** Exponential histograms are neither produced nor written by ward; the writers skip them. */
export interface ExponentialHistogramMetricData extends BaseMetricData {
  readonly dataPointType: typeof DataPointType.EXPONENTIAL_HISTOGRAM;
  readonly dataPoints: readonly DataPoint<unknown>[];
}

export type MetricData = SumMetricData | GaugeMetricData | HistogramMetricData | ExponentialHistogramMetricData;

export interface InstrumentationScope {
  readonly name: string;
  readonly version?: string | undefined;
  readonly schemaUrl?: string | undefined;
}

export interface ScopeMetrics {
  readonly scope: InstrumentationScope;
  readonly metrics: readonly MetricData[];
}

export interface ResourceMetrics {
  readonly resource: { readonly attributes: Attributes };
  readonly scopeMetrics: readonly ScopeMetrics[];
}
