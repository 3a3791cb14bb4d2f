import { ValueType as ApiValueType } from '@opentelemetry/api';
import { ProtobufMetricsSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality as SdkTemporality, MeterProvider, MetricReader, type ResourceMetrics as SdkResourceMetrics } from '@opentelemetry/sdk-metrics';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import {
  AggregationTemporality,
  DataPointType,
  type HrTime,
  type MetricData,
  type ResourceMetrics,
  ValueType,
} from '../../../src/telemetry/metric-data.ts';
import { encodeMetricsRequest } from '../../../src/telemetry/otlp-metrics.ts';
import { PbWriter } from '../../../src/lib/protobuf.ts';

/**
 * ward's OTLP metrics encoding (otlp-metrics.ts) against @opentelemetry/otlp-transformer's
 * `ProtobufMetricsSerializer` (what the SDK's OTLP exporters send), byte for byte, on what the
 * metrics SDK collects and on hand-built input the SDK cannot produce; then decoded with the
 * vendored OTLP protos, so that the bytes are known to be right and not only equal.
 */

class Reader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: () => SdkTemporality.CUMULATIVE });
  }
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

async function collect(resource: Record<string, unknown>, record: (p: MeterProvider) => void): Promise<SdkResourceMetrics> {
  const reader = new Reader();
  const provider = new MeterProvider({ resource: resourceFromAttributes(resource), readers: [reader] });
  record(provider);
  const { resourceMetrics } = await reader.collect();
  await provider.shutdown();
  return resourceMetrics;
}

/** Where two encodings first differ, with the bytes around it in hex. */
function firstDifference(mine: Buffer, theirs: Buffer): string {
  let i = 0;
  while (i < mine.length && i < theirs.length && mine[i] === theirs[i]) i++;
  const from = Math.max(0, i - 16);
  return (
    `first difference at byte ${i} (ward ${mine.length} bytes, transformer ${theirs.length}); from byte ${from}:\n` +
    `  ward:        ${mine.subarray(from, i + 24).toString('hex')}\n` +
    `  transformer: ${theirs.subarray(from, i + 24).toString('hex')}`
  );
}

/** ward's encoding of `rm`, after checking it is the transformer's. */
function expectTransformerBytes(rm: ResourceMetrics | SdkResourceMetrics): Buffer {
  // the transformer reads only the plain fields both shapes share (not the SDK Resource's methods)
  const theirs = ProtobufMetricsSerializer.serializeRequest(rm as SdkResourceMetrics);
  if (theirs === undefined) throw new Error('the transformer wrote nothing');
  const mine = encodeMetricsRequest(rm);
  const a = Buffer.from(mine);
  const b = Buffer.from(theirs);
  // a readable diff first when the content differs, then the bytes (field order, encodings)
  if (!a.equals(b)) expect(decode(a)).toEqual(decode(b));
  expect(a.equals(b), a.equals(b) ? '' : firstDifference(a, b)).toBe(true);
  return a;
}

// ---- decoding with the vendored protos

const PROTO_ROOT = fileURLToPath(new URL('../../../proto/', import.meta.url));
const root = new protobuf.Root();
root.resolvePath = (_origin, target) => PROTO_ROOT + target;
root.loadSync('opentelemetry/proto/collector/metrics/v1/metrics_service.proto');
const Request = root.lookupType('opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest');

/** The request as plain objects: 64-bit integers as decimal strings, enums by name, unset fields absent. */
function decode(bytes: Uint8Array): Record<string, unknown> {
  return Request.toObject(Request.decode(bytes), { longs: String, enums: String, bytes: Array, defaults: false });
}

const big = (n: bigint): string => BigInt.asUintN(64, n).toString(16).padStart(16, '0');
/** The 8 little-endian bytes of `n` mod 2^64, in hex. */
const le64 = (n: bigint): string => Buffer.from(big(n), 'hex').reverse().toString('hex');

describe('PbWriter 64-bit fields', () => {
  const written = (write: (w: PbWriter) => void): string => {
    const w = new PbWriter(16);
    write(w);
    return w.bytes().toString('hex');
  };

  it('fixed64: whole numbers up to 2^64, exactly, past 2^53', () => {
    for (const n of [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53 + 2, 2 ** 63, 2 ** 64 - 2048]) {
      expect(written((w) => w.fixed64(4, n))).toBe(`21${le64(BigInt(n))}`); // tag (4 << 3) | 1
    }
    expect(written((w) => w.fixed64(4, 7.9))).toBe(`21${le64(7n)}`);
  });

  it('sfixed64: two’s complement of the truncated value, modulo 2^64; not a number is 0', () => {
    const cases: [number, bigint][] = [
      [0, 0n],
      [-0, 0n],
      [5, 5n],
      [-1, -1n],
      [-(2 ** 32), -(2n ** 32n)],
      [-(2 ** 32) - 1, -(2n ** 32n) - 1n],
      [2 ** 53 + 2, 2n ** 53n + 2n],
      [-(2 ** 53) - 2, -(2n ** 53n) - 2n],
      [-(2 ** 63), -(2n ** 63n)],
      [2 ** 63, 2n ** 63n], // reads back as -2^63
      [2 ** 64 + 4096, 4096n],
      [2.9, 2n],
      [-2.9, -2n],
      [Number.NaN, 0n],
      [Infinity, 0n],
      [-Infinity, 0n],
    ];
    for (const [n, want] of cases) expect(written((w) => w.sfixed64(6, n)), String(n)).toBe(`31${le64(want)}`);
  });

  it('hrTimeNanos: seconds · 10^9 + nanoseconds, exact', () => {
    const cases: [number, number][] = [
      [0, 0],
      [0, 999_999_999],
      [1, 0],
      [65_535, 999_999_999],
      [65_536, 1],
      [1_700_000_000, 123_456_789],
      [2 ** 32 - 1, 999_999_999],
      [2 ** 34, 17], // past 2^64 nanoseconds: modulo 2^64, as the field holds
      [2 ** 39 - 1, 999_999_999],
    ];
    for (const [s, ns] of cases) {
      expect(written((w) => w.hrTimeNanos(3, s, ns)), `[${s}, ${ns}]`).toBe(`19${le64(BigInt(s) * 1_000_000_000n + BigInt(ns))}`);
    }
  });

  it('packed fixed64 and double: one length-delimited field, nothing when empty', () => {
    expect(written((w) => w.packedFixed64(6, []))).toBe('');
    expect(written((w) => w.packedDouble(7, []))).toBe('');
    expect(written((w) => w.packedFixed64(6, [1, 2 ** 40]))).toBe(`3210${le64(1n)}${le64(2n ** 40n)}`);
    const d = Buffer.alloc(16);
    d.writeDoubleLE(0.5, 0);
    d.writeDoubleLE(-Infinity, 8);
    expect(written((w) => w.packedDouble(7, [0.5, -Infinity]))).toBe(`3a10${d.toString('hex')}`);
    // 16 values: a 128-byte body, a two-byte length
    expect(written((w) => w.packedFixed64(6, new Array<number>(16).fill(3))).slice(0, 6)).toBe('328001');
  });
});

describe('encodeMetricsRequest', () => {
  it('writes what the OTel transformer writes, for every instrument kind and attribute type', async () => {
    const rm = await collect(
      { 'service.name': 'orders', 'host.count': 3, 'host.ratio': 0.75, 'host.up': true, 'host.tags': ['a', 'b'], 'host.ports': [80, 443], empty: '', 'ünï.cödé': '日本 🚀' },
      (p) => {
        const ward = p.getMeter('ward', '0.1.0');
        const decisions = ward.createCounter('ward.decisions', { description: 'Authorization decisions.', unit: '{decision}' });
        decisions.add(3, { 'ward.service': 'orders', 'ward.decision': 'allow' });
        decisions.add(0.5, {
          str: 'x',
          empty: '',
          int: 7,
          negative: -12,
          zero: 0,
          negativeZero: -0,
          big: 2 ** 53 + 2,
          huge: 2 ** 63, // whole, but past int64: a double
          minInt64: -(2 ** 63),
          fraction: 1.5,
          nan: Number.NaN,
          inf: Infinity,
          yes: true,
          no: false,
          strings: ['a', '', 'ü'],
          numbers: [1, 2.5, -3],
          bools: [true, false],
          none: [],
          holes: ['a', null, undefined],
          unicode: 'naïve — 日本語 🚀',
          lone: '\ud800',
          '': 'empty key',
          long: 'x'.repeat(300),
          bytes: new Uint8Array([0, 1, 255]),
          map: { a: 1, b: ['c'], c: { d: true } },
          missing: undefined,
        });
        const ints = ward.createCounter('ward.int.count', { valueType: ApiValueType.INT });
        ints.add(2 ** 40, { k: 'v' });
        ints.add(5);
        const inflight = ward.createUpDownCounter('ward.inflight', { valueType: ApiValueType.INT, description: 'Calls in flight.' });
        inflight.add(2);
        inflight.add(-9); // a negative int: sfixed64 two's complement
        ward.createUpDownCounter('ward.balance').add(-0.25, { side: 'left' });
        const latency = ward.createHistogram('ward.authz.duration', { unit: 's', advice: { explicitBucketBoundaries: [0, 0.001, 0.01, 1] } });
        // 3 and 1000 overflow; the SDK drops negative values of a histogram (a negative min: below)
        for (const v of [-0.5, 0, 0.0007, 0.002, 0.5, 3, 1000]) latency.record(v, { 'ward.service': 'orders' });
        latency.record(0.004, { 'ward.service': 'billing' });
        const sizes = ward.createHistogram('ward.body.size', { unit: 'By', valueType: ApiValueType.INT, advice: { explicitBucketBoundaries: [100, 10_000] } });
        for (const v of [50, 5000, 2 ** 33]) sizes.record(v);
        ward.createHistogram('ward.default.buckets').record(42);
        ward.createGauge('ward.temperature', { valueType: ApiValueType.INT }).record(-40, { where: 'outside' });
        ward.createObservableGauge('ward.controlplane.connected', { description: 'Whether connected.\nSecond line.' }).addCallback((r) => {
          r.observe(1);
          r.observe(-2.5, { peer: 'b' });
        });
        ward.createObservableCounter('ward.jwks.fetches', { unit: '{fetch}', valueType: ApiValueType.INT }).addCallback((r) => {
          r.observe(4, { 'ward.issuer': 'https://idp.example', 'ward.result': 'ok' });
          r.observe(0, { 'ward.issuer': 'https://idp.example', 'ward.result': 'failed' });
        });
        ward.createObservableUpDownCounter('ward.queue.depth').addCallback((r) => r.observe(-3.5));
        // many series: messages past 128 and 16384 bytes (two- and three-byte lengths)
        const wide = ward.createCounter('ward.wide');
        for (let i = 0; i < 400; i++) wide.add(i, { series: `s${i}`, pad: 'p'.repeat(40) });
        // more scopes: no version, a schema URL, both, an empty name
        p.getMeter('other').createCounter('ward.decisions', { description: 'Another help.' }).add(9, { x: 'y' });
        p.getMeter('schema', undefined, { schemaUrl: 'https://opentelemetry.io/schemas/1.30.0' }).createCounter('s').add(1);
        p.getMeter('both', '2.0.0-rc.1', { schemaUrl: 'https://example.com/schema' }).createGauge('g').record(0.1);
        p.getMeter('').createCounter('unnamed.scope').add(1);
      },
    );
    const bytes = expectTransformerBytes(rm);
    expect(bytes.length).toBeGreaterThan(16_384);
    // and what was written is what was recorded
    const req = decode(bytes) as { resourceMetrics: { scopeMetrics: { scope: { name?: string; version?: string }; schemaUrl?: string; metrics: { name: string }[] }[] }[] };
    const scopes = req.resourceMetrics[0]?.scopeMetrics ?? [];
    // (in the SDK's order, which is not that of the meters' creation)
    expect(scopes.map((s) => [s.scope.name ?? '', s.scope.version, s.schemaUrl]).sort()).toEqual([
      ['', undefined, undefined],
      ['both', '2.0.0-rc.1', 'https://example.com/schema'],
      ['other', undefined, undefined],
      ['schema', undefined, 'https://opentelemetry.io/schemas/1.30.0'],
      ['ward', '0.1.0', undefined],
    ]);
    const ward = scopes.find((s) => s.scope.name === 'ward');
    const metric = (name: string): Record<string, unknown> => ward?.metrics.find((m) => m.name === name) as Record<string, unknown>;
    const kinds = (metric('ward.decisions')['sum'] as { dataPoints: { attributes: { key: string; value: unknown }[] }[] }).dataPoints[1]?.attributes ?? [];
    expect(Object.fromEntries(kinds.map((a) => [a.key, a.value]))).toEqual({
      str: { stringValue: 'x' },
      empty: { stringValue: '' },
      int: { intValue: '7' },
      negative: { intValue: '-12' },
      zero: { intValue: '0' },
      negativeZero: { intValue: '0' },
      big: { intValue: '9007199254740994' },
      huge: { doubleValue: 2 ** 63 },
      minInt64: { intValue: '-9223372036854775808' },
      fraction: { doubleValue: 1.5 },
      nan: { doubleValue: Number.NaN },
      inf: { doubleValue: Infinity },
      yes: { boolValue: true },
      no: { boolValue: false },
      strings: { arrayValue: { values: [{ stringValue: 'a' }, { stringValue: '' }, { stringValue: 'ü' }] } },
      numbers: { arrayValue: { values: [{ intValue: '1' }, { doubleValue: 2.5 }, { intValue: '-3' }] } },
      bools: { arrayValue: { values: [{ boolValue: true }, { boolValue: false }] } },
      none: { arrayValue: {} },
      holes: { arrayValue: { values: [{ stringValue: 'a' }, {}, {}] } },
      unicode: { stringValue: 'naïve — 日本語 🚀' },
      lone: { stringValue: '\ufffd' },
      '': { stringValue: 'empty key' },
      long: { stringValue: 'x'.repeat(300) },
      bytes: { bytesValue: [0, 1, 255] },
      map: {
        kvlistValue: {
          values: [
            { key: 'a', value: { intValue: '1' } },
            { key: 'b', value: { arrayValue: { values: [{ stringValue: 'c' }] } } },
            { key: 'c', value: { kvlistValue: { values: [{ key: 'd', value: { boolValue: true } }] } } },
          ],
        },
      },
      missing: {},
    });
    expect(metric('ward.inflight')).toMatchObject({ sum: { dataPoints: [{ asInt: '-7' }], aggregationTemporality: 'AGGREGATION_TEMPORALITY_CUMULATIVE' } });
    expect(metric('ward.inflight')['sum']).not.toHaveProperty('isMonotonic');
    expect(metric('ward.body.size')).toMatchObject({ histogram: { dataPoints: [{ count: '3', bucketCounts: ['1', '1', '1'], explicitBounds: [100, 10_000], min: 50, max: 2 ** 33 }] } });
    expect(metric('ward.authz.duration')).toMatchObject({ histogram: { dataPoints: [{ count: '6', bucketCounts: ['1', '1', '1', '1', '2'], min: 0, max: 1000 }, { count: '1' }] } });
  });

  it('writes what the OTel transformer writes with no metrics: no scopes at all', async () => {
    const rm = await collect({ 'service.name': 'idle' }, () => {});
    expect(rm.scopeMetrics).toEqual([]);
    const bytes = expectTransformerBytes(rm);
    expect(decode(bytes)).toEqual({
      resourceMetrics: [{ resource: { attributes: [{ key: 'service.name', value: { stringValue: 'idle' } }], droppedAttributesCount: 0 } }],
    });
  });

  it('writes what the OTel transformer writes for what the SDK does not produce', () => {
    const t0: HrTime = [1_700_000_000, 1];
    const t1: HrTime = [1_700_000_010, 999_999_999];
    const sum = (name: string, valueType: number, values: number[], aggregationTemporality: number = AggregationTemporality.DELTA): MetricData => ({
      descriptor: { name, description: '', unit: '', valueType },
      aggregationTemporality,
      dataPointType: DataPointType.SUM,
      isMonotonic: false,
      dataPoints: values.map((value, i) => ({ startTime: t0, endTime: t1, attributes: { i }, value })),
    });
    const extremes = [0, -0, 1, -1, 2 ** 31, -(2 ** 31), 2 ** 32, 2 ** 53 + 2, -(2 ** 53) - 2, 2 ** 63, -(2 ** 63), 2 ** 64 + 4096, -(2 ** 64) - 4096, 1.5, -1.5, 1e300, Number.NaN, Infinity, -Infinity];
    const rm: ResourceMetrics = {
      resource: { attributes: {} },
      scopeMetrics: [
        { scope: { name: 'empty', version: '', schemaUrl: '' }, metrics: [] },
        {
          scope: { name: 'edges' },
          metrics: [
            sum('int.extremes', ValueType.INT, extremes),
            sum('double.extremes', ValueType.DOUBLE, extremes),
            sum('unspecified.temporality', ValueType.DOUBLE, [1], 7),
            sum('no.points', ValueType.INT, []),
            { descriptor: { name: '', description: '', unit: '', valueType: ValueType.DOUBLE }, aggregationTemporality: AggregationTemporality.CUMULATIVE, dataPointType: DataPointType.GAUGE, dataPoints: [] },
            {
              descriptor: { name: 'hist', description: 'ü', unit: 'ms', valueType: ValueType.DOUBLE },
              aggregationTemporality: AggregationTemporality.DELTA,
              dataPointType: DataPointType.HISTOGRAM,
              dataPoints: [
                // no sum, min or max; no buckets at all
                { startTime: [0, 0], endTime: [0, 0], attributes: {}, value: { buckets: { boundaries: [], counts: [] }, count: 0 } },
                // negative values: a negative sum and min, one in the overflow bucket
                { startTime: t0, endTime: t1, attributes: { a: 'b' }, value: { buckets: { boundaries: [-5, 0, 10], counts: [1, 2, 0, 1] }, count: 4, sum: -3.25, min: -7.5, max: 12 } },
                // counts past 2^32 and 2^53, a zero sum
                { startTime: t0, endTime: t1, attributes: { a: 'b' }, value: { buckets: { boundaries: [-1, 1e-9], counts: [2 ** 32 + 1, 0, 2 ** 53 + 2] }, count: 2 ** 53 + 2 ** 32 + 4, sum: 0, min: -Infinity, max: 0 } },
                // timestamps no clock gives: fractional, far future
                { startTime: [1.5, 0.5], endTime: [2 ** 36, 999_999_999], attributes: {}, value: { buckets: { boundaries: [0], counts: [1, 1] }, count: 2, sum: -0, min: -0, max: Number.NaN } },
              ],
            },
            { descriptor: { name: 'empty.hist', description: '', unit: '', valueType: ValueType.INT }, aggregationTemporality: AggregationTemporality.CUMULATIVE, dataPointType: DataPointType.HISTOGRAM, dataPoints: [] },
          ],
        },
      ],
    };
    expectTransformerBytes(rm);
  });

  it('writes what the decoder reads back, field by field', () => {
    const start: HrTime = [1_700_000_000, 123_456_789];
    const end: HrTime = [1_700_000_060, 5];
    const rm: ResourceMetrics = {
      resource: { attributes: { 'service.name': 'orders', 'host.count': 3, ratio: 0.5, up: true, tags: ['a', 'b'] } },
      scopeMetrics: [
        {
          scope: { name: 'ward', version: '0.1.0', schemaUrl: 'https://opentelemetry.io/schemas/1.30.0' },
          metrics: [
            {
              descriptor: { name: 'ward.decisions', description: 'Authorization decisions.', unit: '{decision}', valueType: ValueType.INT },
              aggregationTemporality: AggregationTemporality.CUMULATIVE,
              dataPointType: DataPointType.SUM,
              isMonotonic: true,
              dataPoints: [{ startTime: start, endTime: end, attributes: { 'ward.decision': 'deny', 'ward.code': 403 }, value: 2 ** 53 + 2 }],
            },
            {
              descriptor: { name: 'ward.inflight', description: '', unit: '', valueType: ValueType.INT },
              aggregationTemporality: AggregationTemporality.DELTA,
              dataPointType: DataPointType.SUM,
              isMonotonic: false,
              dataPoints: [{ startTime: start, endTime: end, attributes: {}, value: -3 }],
            },
            {
              descriptor: { name: 'ward.load', description: '', unit: '1', valueType: ValueType.DOUBLE },
              aggregationTemporality: AggregationTemporality.CUMULATIVE,
              dataPointType: DataPointType.GAUGE,
              dataPoints: [{ startTime: start, endTime: end, attributes: { core: 1.5 }, value: 0.25 }],
            },
            {
              descriptor: { name: 'ward.authz.duration', description: 'Time to a decision.', unit: 's', valueType: ValueType.DOUBLE },
              aggregationTemporality: AggregationTemporality.CUMULATIVE,
              dataPointType: DataPointType.HISTOGRAM,
              dataPoints: [
                { startTime: start, endTime: end, attributes: { 'ward.service': 'orders' }, value: { buckets: { boundaries: [0.001, 0.01, 1], counts: [1, 0, 2, 1] }, count: 4, sum: 3.5, min: -0.5, max: 3 } },
              ],
            },
          ],
        },
      ],
    };
    const bytes = expectTransformerBytes(rm);
    const s = '1700000000123456789';
    const e = '1700000060000000005';
    expect(decode(bytes)).toEqual({
      resourceMetrics: [
        {
          resource: {
            attributes: [
              { key: 'service.name', value: { stringValue: 'orders' } },
              { key: 'host.count', value: { intValue: '3' } },
              { key: 'ratio', value: { doubleValue: 0.5 } },
              { key: 'up', value: { boolValue: true } },
              { key: 'tags', value: { arrayValue: { values: [{ stringValue: 'a' }, { stringValue: 'b' }] } } },
            ],
            droppedAttributesCount: 0,
          },
          scopeMetrics: [
            {
              scope: { name: 'ward', version: '0.1.0' },
              schemaUrl: 'https://opentelemetry.io/schemas/1.30.0',
              metrics: [
                {
                  name: 'ward.decisions',
                  description: 'Authorization decisions.',
                  unit: '{decision}',
                  sum: {
                    dataPoints: [
                      {
                        startTimeUnixNano: s,
                        timeUnixNano: e,
                        asInt: '9007199254740994',
                        attributes: [
                          { key: 'ward.decision', value: { stringValue: 'deny' } },
                          { key: 'ward.code', value: { intValue: '403' } },
                        ],
                      },
                    ],
                    aggregationTemporality: 'AGGREGATION_TEMPORALITY_CUMULATIVE',
                    isMonotonic: true,
                  },
                },
                {
                  name: 'ward.inflight',
                  sum: { dataPoints: [{ startTimeUnixNano: s, timeUnixNano: e, asInt: '-3' }], aggregationTemporality: 'AGGREGATION_TEMPORALITY_DELTA' },
                },
                {
                  name: 'ward.load',
                  unit: '1',
                  gauge: { dataPoints: [{ startTimeUnixNano: s, timeUnixNano: e, asDouble: 0.25, attributes: [{ key: 'core', value: { doubleValue: 1.5 } }] }] },
                },
                {
                  name: 'ward.authz.duration',
                  description: 'Time to a decision.',
                  unit: 's',
                  histogram: {
                    dataPoints: [
                      {
                        startTimeUnixNano: s,
                        timeUnixNano: e,
                        count: '4',
                        sum: 3.5,
                        bucketCounts: ['1', '0', '2', '1'],
                        explicitBounds: [0.001, 0.01, 1],
                        attributes: [{ key: 'ward.service', value: { stringValue: 'orders' } }],
                        min: -0.5,
                        max: 3,
                      },
                    ],
                    aggregationTemporality: 'AGGREGATION_TEMPORALITY_CUMULATIVE',
                  },
                },
              ],
            },
          ],
        },
      ],
    });
  });

  it('leaves out exponential histograms (ward makes none) and the metrics around them are unchanged', () => {
    const gauge = (name: string): MetricData => ({
      descriptor: { name, description: '', unit: '', valueType: ValueType.DOUBLE },
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.GAUGE,
      dataPoints: [{ startTime: [1, 0], endTime: [2, 0], attributes: {}, value: 1 }],
    });
    const exponential: MetricData = {
      descriptor: { name: 'exp', description: '', unit: '', valueType: ValueType.DOUBLE },
      aggregationTemporality: AggregationTemporality.CUMULATIVE,
      dataPointType: DataPointType.EXPONENTIAL_HISTOGRAM,
      dataPoints: [{ startTime: [1, 0], endTime: [2, 0], attributes: {}, value: { count: 0, scale: 0, zeroCount: 0, positive: { offset: 0, bucketCounts: [] }, negative: { offset: 0, bucketCounts: [] } } }],
    };
    const rm = (metrics: MetricData[]): ResourceMetrics => ({ resource: { attributes: {} }, scopeMetrics: [{ scope: { name: 's' }, metrics }] });
    expect(encodeMetricsRequest(rm([gauge('a'), exponential, gauge('b')])).equals(expectTransformerBytes(rm([gauge('a'), gauge('b')])))).toBe(true);
  });

  it('does not write a resource schema URL (metric-data.ts has none): the only difference from the transformer', async () => {
    const attributes = { 'service.name': 'orders' };
    const reader = new Reader();
    const provider = new MeterProvider({ resource: resourceFromAttributes(attributes, { schemaUrl: 'https://opentelemetry.io/schemas/1.30.0' }), readers: [reader] });
    provider.getMeter('ward').createCounter('c').add(1);
    const { resourceMetrics } = await reader.collect();
    await provider.shutdown();
    const withUrl = decode(Buffer.from(ProtobufMetricsSerializer.serializeRequest(resourceMetrics) ?? [])) as { resourceMetrics: Record<string, unknown>[] };
    expect(withUrl.resourceMetrics[0]?.['schemaUrl']).toBe('https://opentelemetry.io/schemas/1.30.0');
    delete withUrl.resourceMetrics[0]?.['schemaUrl'];
    expect(decode(encodeMetricsRequest(resourceMetrics))).toEqual(withUrl);
  });

  it('does not keep a reference to its buffer: each request is its own copy', () => {
    const rm = (name: string): ResourceMetrics => ({ resource: { attributes: { 'service.name': name } }, scopeMetrics: [] });
    const first = encodeMetricsRequest(rm('first'));
    const copy = Buffer.from(first);
    encodeMetricsRequest(rm('second'));
    expect(first.equals(copy)).toBe(true);
  });
});
