import { describe, expect, it } from 'vitest';
import { CallHistogram } from '../../../src/telemetry/histogram.ts';

describe('call histogram (authorization latency, recorded outside the SDK)', () => {
  it('counts each value in the first bucket whose inclusive upper bound holds it, per attribute object', () => {
    const h = new CallHistogram({ name: 'x', description: 'd', unit: 's', boundaries: [0.001, 0.01] }, 1000);
    const allow = { d: 'allow' };
    const deny = { d: 'deny' };
    for (const v of [0.0005, 0.001, 0.005, 0.5]) h.record(v, allow);
    h.record(0.02, deny);
    const data = h.data(2000);
    expect(data.dataPoints.map((p) => [p.attributes, p.value.buckets.counts, p.value.count, p.value.sum, p.value.min, p.value.max])).toEqual([
      [allow, [2, 1, 1], 4, 0.5065, 0.0005, 0.5],
      [deny, [0, 0, 1], 1, 0.02, 0.02, 0.02],
    ]);
    expect(data.dataPoints[0]?.startTime).toEqual([1, 0]);
    expect(data.dataPoints[0]?.endTime).toEqual([2, 0]);
    // cumulative: a later read includes earlier values
    h.record(0.002, allow);
    expect(h.data().dataPoints[0]?.value.count).toBe(5);
  });
});
