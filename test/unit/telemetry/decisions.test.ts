import { describe, expect, it } from 'vitest';
import { formatDecision, formatHeader, formatSummary, jsonLine, parseTime } from '../../../src/cli/decisions.ts';
import { UsageError } from '../../../src/cli/command.ts';
import { toWire } from '../../../src/controlplane/server/decisions/service.ts';
import { createDecisionStore, OTHER_SERVICES } from '../../../src/controlplane/server/decisions/store.ts';
import { parsePrometheusText, sampleValue } from './prometheus-parser.ts';
import { storedDecision } from './records.ts';

const d = storedDecision;

describe('decision store', () => {
  it('keeps the most recent records up to its capacity, counts evictions, and aggregates per service', () => {
    const s = createDecisionStore({ capacity: 3 });
    for (let i = 1; i <= 5; i++) s.add(d({ timeMs: i, decision: i % 2 === 0 ? 'allow' : 'deny', reason: i % 2 === 0 ? '' : 'ERR_POLICY_DENIED' }));
    expect(s.query({}, 10).map((x) => x.timeMs)).toEqual([3, 4, 5]);
    expect(s.query({}, 2).map((x) => x.timeMs)).toEqual([4, 5]);
    expect(s.query({ decision: 'deny' }, 10).map((x) => x.timeMs)).toEqual([3, 5]);
    expect(s.query({ sinceMs: 4, untilMs: 4 }, 10).map((x) => x.timeMs)).toEqual([4]);
    expect(s.query({ subject: 'nobody' }, 10)).toEqual([]);
    const sum = s.summary();
    expect(sum).toMatchObject({ received: 5, evicted: 2, capacity: 3 });
    expect(sum.services).toEqual([{ service: 'orders', allowed: 2, denied: 3, dryRunDenied: 0, reasons: { ERR_POLICY_DENIED: 3 }, lastMs: 5 }]);
  });

  it('bounds the services it aggregates', () => {
    const s = createDecisionStore({ capacity: 10, maxServices: 2 });
    for (const svc of ['a', 'b', 'c', 'd']) s.add(d({ service: svc }));
    expect(s.summary().services.map((x) => x.service)).toEqual([OTHER_SERVICES, 'a', 'b'].sort());
    expect(s.summary().services.find((x) => x.service === OTHER_SERVICES)?.denied).toBe(2);
  });

  it('delivers new matching records to followers, and tells a slow one how many it missed', async () => {
    const s = createDecisionStore({ capacity: 10, maxBacklog: 2 });
    const got: number[] = [];
    const gaps: number[] = [];
    const sub = s.subscribe({ service: 'orders' }, (x) => got.push(x.timeMs), (n) => gaps.push(n));
    for (let i = 1; i <= 4; i++) s.add(d({ timeMs: i }));
    s.add(d({ timeMs: 9, service: 'payments' }));
    expect(got).toEqual([]); // delivery is deferred, never inside add()
    await Promise.resolve();
    expect(got).toEqual([1, 2]);
    expect(gaps).toEqual([2]);
    sub.close();
    s.add(d({ timeMs: 5 }));
    await Promise.resolve();
    expect(got).toEqual([1, 2]);
  });
});

describe('ward decisions output', () => {
  it('one line per decision with every column', () => {
    const line = formatDecision(toWire(d()));
    expect(line.startsWith('1970-01-01T00:00:01.000Z')).toBe(true);
    for (const part of ['orders', 'reporting', '/ward.demo.v1.Orders/DeleteOrder', 'deny', 'ERR_POLICY_DENIED', 'no-deletes', '0123456789ab', '0af7651916cd43dd8448eb211c80319c']) expect(line).toContain(part);
    expect(line).not.toContain('0123456789abcdef'); // versions shortened
    expect(formatHeader().split(/\s+/)).toEqual(['TIME', 'SERVICE', 'CALLER', 'ROUTE', 'DECISION', 'REASON', 'RULE', 'POLICY', 'TRACE']);
    const http = formatDecision(toWire(d({ method: 'GET', route: '/api/orders', subject: '', reason: 'ERR_TOKEN_MISSING', rule: '', traceId: '' })));
    expect(http).toContain('GET /api/orders');
    expect(http.split(/\s+/).filter((c) => c === '-')).toHaveLength(3); // caller, rule, trace
    // a dry-run denial shows the rule that allowed and the dry-run rule that would have denied
    expect(formatDecision(toWire(d({ decision: 'dry-run-deny', rule: 'readers', dryRunRule: 'no-deletes' })))).toContain(' readers>no-deletes ');
    expect(formatDecision({ ...toWire(d()), missed: 7 })).toContain('7 decision(s) not shown');
  });

  it('control characters from a record are printed escaped, never raw (regression: an ESC sequence in a caller\'s sub could rewrite the operator\'s screen)', () => {
    const evil = 'mallory\u001b[2K\r\u001b[1A\u009b forged';
    const line = formatDecision(toWire(d({ subject: evil, route: '/x\u0007', service: 'orders\u007f' })));
    // eslint-disable-next-line no-control-regex
    expect(line).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
    expect(line).toContain('mallory\\x1b[2K\\x0d\\x1b[1A\\x9b forged');
    const s = createDecisionStore({ capacity: 10 });
    s.add(d({ service: 'ord\u001bers', reason: 'ERR_POLICY_DENIED' }));
    const out = formatSummary({ ...s.summary(), services: s.summary().services.map((x) => ({ ...x, reasons: Object.entries(x.reasons).map(([reason, count]) => ({ reason, count })), lastUnixMs: x.lastMs })) });
    // eslint-disable-next-line no-control-regex
    expect(out).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    expect(out).toContain('ord\\x1bers');
  });

  it('--json escapes DEL and C1 too (JSON.stringify leaves them raw, and U+009B is a CSI)', () => {
    const line = jsonLine(toWire(d({ subject: 'a\u009b2J\u007fb\u001b' })));
    // eslint-disable-next-line no-control-regex
    expect(line).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
    expect(line).toContain('a\\u009b2J\\u007fb\\u001b');
    expect((JSON.parse(line) as { subject: string }).subject).toBe('a\u009b2J\u007fb\u001b');
  });

  it('summary table', () => {
    const s = createDecisionStore({ capacity: 10 });
    s.add(d());
    const out = formatSummary({ ...s.summary(), services: s.summary().services.map((x) => ({ ...x, reasons: Object.entries(x.reasons).map(([reason, count]) => ({ reason, count })), lastUnixMs: x.lastMs })) });
    expect(out).toMatch(/orders\s+0\s+1\s+0\s+1970-01-01T00:00:01.000Z\s+ERR_POLICY_DENIED=1/);
  });

  it('time arguments: durations ago or ISO times', () => {
    expect(parseTime('10m', 1_000_000)).toBe(400_000);
    expect(parseTime('2h', 10_000_000)).toBe(2_800_000);
    expect(parseTime('2026-01-02T03:04:05Z', 0)).toBe(Date.parse('2026-01-02T03:04:05Z'));
    expect(() => parseTime('yesterday', 0)).toThrow(UsageError);
  });
});

describe('the strict Prometheus text parser used by the tests', () => {
  it('accepts a valid exposition', () => {
    const f = parsePrometheusText('# HELP a_total A.\n# TYPE a_total counter\na_total{x="1",y="q\\"uote"} 3\n# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_sum 0.5\nh_count 1\n');
    expect(sampleValue(f, 'a_total', { y: 'q"uote' })).toBe(3);
    expect(f.get('h')?.samples).toHaveLength(3);
  });

  it('rejects what the format does not allow', () => {
    for (const bad of ['a 1', 'a{x=1} 1\n', 'a{x="1"}1\n', '# TYPE a counter\na -1\n', '# TYPE h histogram\nh_bucket 1\n', 'a 1\n# TYPE a counter\n', 'a{x="1",x="2"} 1\n', 'a 1\na 1\n', 'a one\n']) {
      expect(() => parsePrometheusText(bad), bad).toThrow();
    }
  });
});
