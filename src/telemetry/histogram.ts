import { AggregationTemporality, type Attributes, DataPointType, type HistogramMetricData, ValueType } from './metric-data.ts';

/**
 * A cumulative explicit-bucket histogram recorded per call without the SDK's per-call attribute
 * hashing: each series is keyed by its attribute object, which callers build once and reuse
 * (telemetry.ts caches them), so `record` is a map lookup by identity and a bucket scan.
 * Collected through the registry (metrics.ts) like ward's other instruments.
 */

interface Series {
  readonly attrs: Attributes;
  readonly counts: number[];
  sum: number;
  count: number;
  min: number;
  max: number;
}

export interface HistogramSpec {
  readonly name: string;
  readonly description: string;
  readonly unit: string;
  /** Finite bucket upper bounds (inclusive), ascending. */
  readonly boundaries: readonly number[];
}

export class CallHistogram {
  readonly #spec: HistogramSpec;
  readonly #bounds: readonly number[];
  readonly #series = new Map<Attributes, Series>();
  readonly #start: [number, number];

  constructor(spec: HistogramSpec, now: number = Date.now()) {
    this.#spec = spec;
    this.#bounds = spec.boundaries;
    this.#start = hrTime(now);
  }

  /** Records `value` for the series `attrs` (pass the same object for the same series). */
  record(value: number, attrs: Attributes): void {
    let s = this.#series.get(attrs);
    if (s === undefined) {
      s = { attrs, counts: new Array<number>(this.#bounds.length + 1).fill(0), sum: 0, count: 0, min: Infinity, max: -Infinity };
      this.#series.set(attrs, s);
    }
    const b = this.#bounds;
    let i = 0;
    while (i < b.length && value > (b[i] as number)) i++;
    s.counts[i] = (s.counts[i] as number) + 1;
    s.sum += value;
    s.count++;
    if (value < s.min) s.min = value;
    if (value > s.max) s.max = value;
  }

  /** The collected histogram (cumulative), in the SDK's shape (metric-data.ts). */
  data(now: number = Date.now()): HistogramMetricData {
    const end = hrTime(now);
    return {
      descriptor: { name: this.#spec.name, description: this.#spec.description, unit: this.#spec.unit, valueType: ValueType.DOUBLE },
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.HISTOGRAM,
      dataPoints: [...this.#series.values()].map((s) => ({
        startTime: this.#start,
        endTime: end,
        attributes: s.attrs,
        value: { buckets: { boundaries: [...this.#bounds], counts: [...s.counts] }, sum: s.sum, count: s.count, min: s.min, max: s.max },
      })),
    };
  }
}

/** Milliseconds since the epoch as `[seconds, nanoseconds]`. */
export function hrTime(ms: number): [number, number] {
  const secs = Math.floor(ms / 1000);
  return [secs, Math.round((ms - secs * 1000) * 1e6)];
}
