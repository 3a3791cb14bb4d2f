import { describe, expect, it } from 'vitest';
import { renderMarkdown, summarize, type Results, type Sample } from '../../../scripts/bench/report.ts';

/** Three rounds of direct, ward and HAProxy, with the fixed rates given. */
function results(rates: readonly number[]): Results {
  const samples: Sample[] = [];
  for (let round = 0; round < 3; round++) {
    for (const [scenario, rps, cpu, p50] of [
      ['direct', 60_000, null, 200],
      ['ward', 45_000 + round * 1000, 20 + round, 280],
      ['haproxy', 26_000, 38, 900],
    ] as const) {
      const fixed: Sample['fixed'] = {};
      for (const r of rates) fixed[String(r)] = { rps: r, p50Us: p50, p90Us: p50 * 2, p99Us: p50 * 3, cpuUsPerReq: cpu === null ? null : cpu * 3, n: r * 8 };
      samples.push({ scenario, workload: 'grpc', round, saturationRps: rps, saturationCpuUsPerReq: cpu, fixed, peakRssMb: scenario === 'haproxy' ? 19.5 : 100 + round, peakPrivateMb: scenario === 'haproxy' ? 6.5 : 50 + 2 * round });
    }
  }
  return {
    generatedAt: '2026-11-27T00:00:00.000Z',
    machine: { cpu: 'test', cores: 2, kernel: 'test', node: 'v24', h2load: 'h2load', haproxy: 'HAProxy 2.6', app: 'nghttpd', commit: 'abc1234' },
    method: {
      rounds: 3,
      saturation: { clients: 4, streamsPerClient: 32, seconds: 5, warmupSeconds: 1 },
      fixedRate: { rates, clients: 2, seconds: 8, warmupSeconds: 1 },
      pinning: { proxy: '1', loadGeneratorAndApp: '0' },
      wardNodeFlags: ['--max-semi-space-size=1'],
      token: { alg: 'RS256', bytes: 701 },
      grpcRequestBytes: 1029,
      otlpSink: { calls: 0, bytes: 0 },
      extras: {},
    },
    scenarios: [
      { id: 'direct', label: 'direct' },
      { id: 'ward', label: 'ward, every feature on' },
      { id: 'haproxy', label: 'HAProxy' },
    ],
    samples,
    summary: summarize(samples, ['grpc'], rates),
  };
}

describe('the benchmark report (scripts/bench/report.ts)', () => {
  it('with fixed rates: a column per rate, the CPU at the highest, and the latency targets', () => {
    const md = renderMarkdown(results([1000, 2000]));
    expect(md).toContain('fixed rates 1000 and 2000 req/s');
    expect(md).toContain('| scenario | saturation req/s | × direct | × HAProxy | CPU µs/req (sat) | CPU µs/req @2000/s | @1000/s p50 / p99 ms (+added) | @2000/s p50 / p99 ms (+added) | peak RSS MB | of it private MB |');
    // ward's median round: 46k calls/s, 21 µs, 63 µs at 2000/s, +0.08 / +0.24 ms over direct
    expect(md).toContain('| ward, every feature on | 46,000 | 0.77 | 1.77 | 21.0 | 63.0 | 0.28 / 0.84 (+0.08 / +0.24) | 0.28 / 0.84 (+0.08 / +0.24) | 101.0 | 52.0 |');
    expect(md).toContain('| Added p99 @2000/s ≤ 1 ms | 0.24 ms | met |');
    expect(md).toContain('| Peak RSS under saturation ≤ 80 MB | 102.0 MB (max over rounds) | **missed** |');
    expect(md).not.toContain('undefined');
  });

  it('the cache-off ratio is taken within each round, as the other ratios, with the rounds and the ratio of the medians shown', () => {
    const r = results([2000]);
    // cache off: 20k, 26k and 23k calls/s against ward's 45k, 46k and 47k
    const off = [20_000, 26_000, 23_000].map((rps, round): Sample => ({ scenario: 'ward-nocache', workload: 'grpc', round, saturationRps: rps, saturationCpuUsPerReq: 40, fixed: {}, peakRssMb: 98, peakPrivateMb: 48 }));
    const samples = [...r.samples, ...off];
    const md = renderMarkdown({ ...r, samples, summary: summarize(samples, ['grpc'], [2000]) });
    // rounds 0.44, 0.57 and 0.49: median 0.49; the medians' ratio 23k / 46k = 0.50
    expect(md).toContain('| Token cache off ≥ 0.5 × cached throughput | 0.49 × (rounds 0.44, 0.57, 0.49; ratio of the medians 0.50) | **missed** |');
  });

  it('results written before the private peak was measured still render, with a dash', () => {
    const r = results([1000]);
    const old = r.samples.map(({ peakPrivateMb: _, ...rest }) => rest);
    const md = renderMarkdown({ ...r, samples: old, summary: summarize(old, ['grpc'], [1000]) });
    expect(md).toContain('| 101.0 | – |');
    expect(md).not.toContain('NaN');
  });

  it('with only saturation (`--rates saturation`): no fixed-rate columns or targets, and no "undefined"', () => {
    const md = renderMarkdown(results([]));
    expect(md).not.toContain('undefined');
    expect(md).toContain('no fixed rates;');
    expect(md).toContain('| scenario | saturation req/s | × direct | × HAProxy | CPU µs/req (sat) | peak RSS MB | of it private MB |');
    expect(md).toContain('|---|---:|---:|---:|---:|---:|---:|');
    expect(md).toContain('| ward, every feature on | 46,000 | 0.77 | 1.77 | 21.0 | 101.0 | 52.0 |');
    expect(md).toContain('| HAProxy | 26,000 | 0.43 | 1.00 | 38.0 | 19.5 | 6.5 |');
    expect(md).not.toContain('Added p50');
    expect(md).toContain('| Saturation through one sidecar core ≥ HAProxy | 1.77 × | met |');
  });

  it('says when each process was primed before it was measured, and says nothing for older files', () => {
    const r = results([1000]);
    expect(renderMarkdown({ ...r, method: { ...r.method, primeSeconds: 10 } })).toContain(
      '3 interleaved round(s); each proxy process first primed with 10 s of saturation per workload (not measured); saturation: 4 connections × 32 streams for 5 s (after 1 s warm-up);',
    );
    expect(renderMarkdown(r)).toContain('3 interleaved round(s); saturation: 4 connections');
  });
});
