import {
  AggregationTemporality,
  type Attributes,
  DataPointType,
  type DataPoint,
  type HrTime,
  type InstrumentationScope,
  type MetricData,
  type MetricDescriptor,
  type ResourceMetrics,
  ValueType,
} from './metric-data.ts';
import { CallHistogram, type HistogramSpec, hrTime } from './histogram.ts';

/**
 * The sidecar's metric instruments and their collection, in place of the OTel metrics SDK's
 * `MeterProvider` (whose import alone held ~3 MB of every sidecar's heap, docs/performance.md
 * "Memory"). ward needs few instruments, all cumulative, all with attribute sets its callers
 * build once and reuse:
 *
 * - `counter`: a monotonic sum, one series per attribute object (by identity, not by content:
 *   pass the same frozen object for the same series, as telemetry.ts does);
 * - `histogram`: explicit buckets (histogram.ts), keyed the same way;
 * - `observableCounter` / `observableGauge`: a callback run at each collection that observes
 *   the current values (plain numbers kept by their owners).
 *
 * `collect()` gives the SDK's `ResourceMetrics` shape (metric-data.ts), with the SDK's rules:
 * instruments in creation order, an instrument with no series left out (the call histograms
 * excepted: their family is always shown, as when the SDK read them through a producer), an
 * observation repeated for one attribute set in one callback keeps the last value, negative
 * increments of a counter are ignored. Series start when the registry does (the sidecar's
 * start): that is when every count began.
 */

export interface InstrumentSpec {
  readonly name: string;
  readonly description: string;
  readonly unit?: string;
}

export interface Counter {
  /** Adds `value` (ignored unless a finite number >= 0) to the series of `attributes`. */
  add(value: number, attributes: Attributes): void;
}

/** Observes one value; `attributes` omitted: the series without attributes. */
export type Observe = (value: number, attributes?: Attributes) => void;

interface Instrument {
  collect(start: HrTime, end: HrTime, endMs: number): MetricData | null;
}

const NO_ATTRIBUTES: Attributes = Object.freeze({});

function descriptor(spec: InstrumentSpec): MetricDescriptor {
  return { name: spec.name, description: spec.description, unit: spec.unit ?? '', valueType: ValueType.DOUBLE };
}

class SyncCounter implements Counter, Instrument {
  readonly #descriptor: MetricDescriptor;
  readonly #series = new Map<Attributes, number>();

  constructor(spec: InstrumentSpec) {
    this.#descriptor = descriptor(spec);
  }

  add(value: number, attributes: Attributes): void {
    if (!(value >= 0) || value === Infinity) return;
    this.#series.set(attributes, (this.#series.get(attributes) ?? 0) + value);
  }

  collect(start: HrTime, end: HrTime): MetricData | null {
    if (this.#series.size === 0) return null;
    const dataPoints: DataPoint<number>[] = [];
    for (const [attributes, value] of this.#series) dataPoints.push({ startTime: start, endTime: end, attributes, value });
    return { descriptor: this.#descriptor, aggregationTemporality: AggregationTemporality.CUMULATIVE, dataPointType: DataPointType.SUM, dataPoints, isMonotonic: true };
  }
}

class Observable implements Instrument {
  readonly #descriptor: MetricDescriptor;
  readonly #callback: (observe: Observe) => void;
  readonly #kind: 'counter' | 'gauge';
  readonly #onError: (name: string, err: unknown) => void;

  constructor(spec: InstrumentSpec, kind: 'counter' | 'gauge', callback: (observe: Observe) => void, onError: (name: string, err: unknown) => void) {
    this.#descriptor = descriptor(spec);
    this.#kind = kind;
    this.#callback = callback;
    this.#onError = onError;
  }

  collect(start: HrTime, end: HrTime): MetricData | null {
    // One point per attribute set (by content: callbacks build their attribute objects anew).
    const points = new Map<string, DataPoint<number>>();
    const observe: Observe = (value, attributes = NO_ATTRIBUTES) => {
      if (typeof value !== 'number' || Number.isNaN(value)) return;
      points.set(attributesKey(attributes), { startTime: start, endTime: end, attributes, value });
    };
    try {
      this.#callback(observe);
    } catch (err) {
      this.#onError(this.#descriptor.name, err); // what was observed before the throw is kept
    }
    if (points.size === 0) return null;
    const dataPoints = [...points.values()];
    const common = { descriptor: this.#descriptor, aggregationTemporality: AggregationTemporality.CUMULATIVE, dataPoints };
    return this.#kind === 'counter' ? { ...common, dataPointType: DataPointType.SUM, isMonotonic: true } : { ...common, dataPointType: DataPointType.GAUGE };
  }
}

/** An attribute set's identity by content, independent of member order. */
function attributesKey(a: Attributes): string {
  const keys = Object.keys(a).sort();
  let s = '';
  for (const k of keys) s += `${JSON.stringify(k)}:${JSON.stringify(a[k] ?? null)},`;
  return s;
}

class HistogramInstrument implements Instrument {
  readonly #h: CallHistogram;
  constructor(h: CallHistogram) {
    this.#h = h;
  }
  collect(_start: HrTime, _end: HrTime, endMs: number): MetricData {
    return this.#h.data(endMs);
  }
}

export class MetricRegistry {
  readonly #resource: ResourceMetrics['resource'];
  readonly #scope: InstrumentationScope;
  readonly #instruments: Instrument[] = [];
  readonly #now: () => number;
  readonly #start: HrTime;
  readonly #startMs: number;
  readonly #onError: (name: string, err: unknown) => void;

  /** `onError`: a callback threw (its metric keeps what it observed before). */
  constructor(resource: ResourceMetrics['resource'], scope: InstrumentationScope, onError: (name: string, err: unknown) => void, now: () => number = Date.now) {
    this.#resource = resource;
    this.#scope = scope;
    this.#onError = onError;
    this.#now = now;
    this.#startMs = now();
    this.#start = hrTime(this.#startMs);
  }

  counter(spec: InstrumentSpec): Counter {
    const c = new SyncCounter(spec);
    this.#instruments.push(c);
    return c;
  }

  histogram(spec: HistogramSpec): CallHistogram {
    const h = new CallHistogram(spec, this.#startMs);
    this.#instruments.push(new HistogramInstrument(h));
    return h;
  }

  observableCounter(spec: InstrumentSpec, callback: (observe: Observe) => void): void {
    this.#instruments.push(new Observable(spec, 'counter', callback, this.#onError));
  }

  observableGauge(spec: InstrumentSpec, callback: (observe: Observe) => void): void {
    this.#instruments.push(new Observable(spec, 'gauge', callback, this.#onError));
  }

  /** Every instrument's current values; no scope at all when none has any. */
  collect(): ResourceMetrics {
    const endMs = this.#now();
    const end = hrTime(endMs);
    const metrics: MetricData[] = [];
    for (const i of this.#instruments) {
      const m = i.collect(this.#start, end, endMs);
      if (m !== null) metrics.push(m);
    }
    return { resource: this.#resource, scopeMetrics: metrics.length === 0 ? [] : [{ scope: this.#scope, metrics }] };
  }
}
