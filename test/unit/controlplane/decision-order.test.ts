import { describe, expect, it } from 'vitest';
import { createDecisionStore, type DecisionFilter, matches, type StoredDecision } from '../../../src/controlplane/server/decisions/store.ts';
import { prng } from '../../support/prng.ts';
import { storedDecision } from '../telemetry/records.ts';

/**
 * Records reach the control plane in export batches (each sidecar sends what it decided during
 * `queue.delayMs`, 1 s by default), so arrival order across sidecars is not decision order.
 * proto/ward/v1/control_plane.proto StreamDecisions: "oldest first (at most `limit`, the most
 * recent ones)". Found in review: the store ordered and limited by arrival.
 */
describe('decision store: order and limit by decision time', () => {
  // sidecar B's batch (decided at 09:00:01.5) arrives before sidecar A's (decided at 09:00:00.2 and 09:00:00.9)
  const T = Date.parse('2026-11-26T09:00:00Z');
  function store(): ReturnType<typeof createDecisionStore> {
    const s = createDecisionStore({ capacity: 100 });
    s.add(storedDecision({ service: 'payments', decisionId: 'b1', timeMs: T + 1500 }));
    s.add(storedDecision({ service: 'orders', decisionId: 'a1', timeMs: T + 200 }));
    s.add(storedDecision({ service: 'orders', decisionId: 'a2', timeMs: T + 900 }));
    return s;
  }

  it('returns decisions oldest first (regression: in arrival order)', () => {
    expect(store().query({}, 100).map((d) => d.decisionId)).toEqual(['a1', 'a2', 'b1']);
  });

  it('--limit 1 gives the most recent decision (regression: the last to arrive)', () => {
    expect(store().query({}, 1).map((d) => d.decisionId)).toEqual(['b1']);
    expect(store().query({}, 2).map((d) => d.decisionId)).toEqual(['a2', 'b1']);
    expect(store().query({ service: 'orders' }, 1).map((d) => d.decisionId)).toEqual(['a2']);
    expect(store().query({}, 0)).toEqual([]);
  });

  it('decisions of the same millisecond keep their arrival order', () => {
    const s = createDecisionStore({ capacity: 10 });
    for (const id of ['x', 'y', 'z']) s.add(storedDecision({ decisionId: id, timeMs: T }));
    s.add(storedDecision({ decisionId: 'early', timeMs: T - 1 }));
    expect(s.query({}, 10).map((d) => d.decisionId)).toEqual(['early', 'x', 'y', 'z']);
    expect(s.query({}, 2).map((d) => d.decisionId)).toEqual(['y', 'z']);
  });

  it('matches a full sort by (time, arrival) on random batches, filters, limits and evictions', () => {
    const rnd = prng(11);
    for (let round = 0; round < 100; round++) {
      const capacity = 1 + Math.floor(rnd() * 60);
      const s = createDecisionStore({ capacity });
      const all: StoredDecision[] = [];
      const n = Math.floor(rnd() * 120);
      for (let i = 0; i < n; i++) {
        // several sidecars, each a few hundred ms behind: times roughly increasing, with ties
        const d = storedDecision({ decisionId: `d${i}`, timeMs: T + i * 10 - Math.floor(rnd() * 4) * 100, service: rnd() < 0.5 ? 'orders' : 'payments' });
        s.add(d);
        all.push(d);
      }
      const held = all.slice(Math.max(0, all.length - capacity));
      const f: DecisionFilter = rnd() < 0.5 ? {} : { service: 'orders' };
      const limit = Math.floor(rnd() * 70);
      const want = held
        .map((d, arrival) => ({ d, arrival }))
        .filter((x) => matches(x.d, f))
        .sort((a, b) => a.d.timeMs - b.d.timeMs || a.arrival - b.arrival)
        .slice(-limit || held.length + 1)
        .map((x) => x.d.decisionId);
      expect(s.query(f, limit).map((d) => d.decisionId), `round ${round}`).toEqual(want);
    }
  });

  it('the newest 100 of 200,000 records in random arrival order: a few comparisons per record, not a sort of the store', () => {
    const n = 200_000;
    const rnd = prng(5);
    const times = Array.from({ length: n }, (_, i) => T + i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(rnd() * (i + 1));
      [times[i], times[j]] = [times[j] as number, times[i] as number];
    }
    const s = createDecisionStore({ capacity: n });
    let reads = 0;
    const base = storedDecision();
    for (const t of times) {
      s.add({
        ...base,
        get timeMs() {
          reads++;
          return t;
        },
      });
    }
    const got = s.query({}, 100).map((d) => d.timeMs);
    expect(got).toEqual(Array.from({ length: 100 }, (_, i) => T + n - 100 + i));
    // A sort of every record reads timeMs some 2 n log2 n (~7 million) times.
    expect(reads).toBeLessThan(4 * n);
  });

  it('followers get records as they arrive: a late, older batch is delivered after newer ones, not dropped', async () => {
    const s = createDecisionStore({ capacity: 10 });
    const got: string[] = [];
    const sub = s.subscribe({}, (d) => got.push(d.decisionId));
    s.add(storedDecision({ decisionId: 'b1', timeMs: T + 1500 }));
    s.add(storedDecision({ decisionId: 'a1', timeMs: T + 200 }));
    await Promise.resolve();
    sub.close();
    expect(got).toEqual(['b1', 'a1']);
  });
});
