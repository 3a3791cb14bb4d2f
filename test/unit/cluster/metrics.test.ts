import { describe, expect, it } from 'vitest';
import { mergeExpositions } from '../../../src/cluster/metrics.ts';

const W1 = `# HELP ward_decisions_total Decisions.
# TYPE ward_decisions_total counter
ward_decisions_total{ward_decision="allow"} 3
# HELP ward_up Up.
# TYPE ward_up gauge
ward_up 1
# HELP ward_latency Latency.
# TYPE ward_latency histogram
ward_latency_bucket{le="1"} 2
ward_latency_sum 0.5
ward_latency_count 2
`;
const W2 = `# HELP ward_decisions_total Decisions.
# TYPE ward_decisions_total counter
ward_decisions_total{ward_decision="allow"} 5
ward_decisions_total{ward_decision="deny"} 1
# HELP ward_up Up.
# TYPE ward_up gauge
ward_up{} 1
`;

describe('mergeExpositions', () => {
  it('groups each family once and labels every sample with its worker', () => {
    const out = mergeExpositions([
      { worker: '1', text: W1 },
      { worker: '2', text: W2 },
    ]);
    expect(out).toBe(`# HELP ward_decisions_total Decisions.
# TYPE ward_decisions_total counter
ward_decisions_total{worker="1",ward_decision="allow"} 3
ward_decisions_total{worker="2",ward_decision="allow"} 5
ward_decisions_total{worker="2",ward_decision="deny"} 1
# HELP ward_up Up.
# TYPE ward_up gauge
ward_up{worker="1"} 1
ward_up{worker="2"} 1
# HELP ward_latency Latency.
# TYPE ward_latency histogram
ward_latency_bucket{worker="1",le="1"} 2
ward_latency_sum{worker="1"} 0.5
ward_latency_count{worker="1"} 2
`);
  });

  it('is empty for no input and strips characters that would break the label', () => {
    expect(mergeExpositions([])).toBe('');
    expect(mergeExpositions([{ worker: 'a"b', text: 'x 1\n' }])).toBe('x{worker="ab"} 1\n');
  });
});
