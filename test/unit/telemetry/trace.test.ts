import { describe, expect, it } from 'vitest';
import { newTraceId } from '../../../src/telemetry/otlp-encode.ts';
import { createWardSampler } from '../../../src/telemetry/sampler.ts';
import { formatTraceparent, parseTraceparent, remoteContext } from '../../../src/telemetry/traceparent.ts';

const TP = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

describe('W3C traceparent', () => {
  it('parses a valid traceparent with its tracestate and writes ours back', () => {
    const sc = parseTraceparent(TP, 'congo=t61rcWkgMzE');
    expect(sc).toEqual({ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1, traceState: 'congo=t61rcWkgMzE' });
    expect(formatTraceparent('a'.repeat(32), 'b'.repeat(16), false)).toBe(`00-${'a'.repeat(32)}-${'b'.repeat(16)}-00`);
    expect(formatTraceparent('a'.repeat(32), 'b'.repeat(16), true)).toBe(`00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`);
    // an over-long tracestate is dropped, the context kept
    expect(parseTraceparent(TP, 'a=' + 'x'.repeat(600))?.traceState).toBeNull();
  });

  it('ignores malformed values (a new trace starts)', () => {
    for (const bad of [
      '',
      'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', // version ff
      '00-00000000000000000000000000000000-b7ad6b7169203331-01', // zero trace id
      '00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01', // zero span id
      '00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01', // upper case
      '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra', // version 00 has no extra fields
      '00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01',
    ]) {
      expect(parseTraceparent(bad, undefined), bad).toBeNull();
    }
    // a future version may append fields
    expect(parseTraceparent('01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future', undefined)?.spanId).toBe('b7ad6b7169203331');
  });

  it('finds the context in raw header lists of any case; two traceparents invalidate it', () => {
    expect(remoteContext(['Host', 'x', 'TraceParent', TP])?.spanId).toBe('b7ad6b7169203331');
    expect(remoteContext(['traceparent', TP, 'tracestate', 'a=1', 'tracestate', 'b=2'])?.traceState).toBe('a=1,b=2');
    expect(remoteContext(['traceparent', TP, 'traceparent', TP])).toBeNull();
    expect(remoteContext(['tracestate', 'a=1'])).toBeNull();
  });
});

describe('ward sampler', () => {
  const sample = (ratio: number, parentBased: boolean, decision: 'allow' | 'deny' | 'dry-run-deny', parentFlags: number | null, traceId = 'f'.repeat(32)): boolean =>
    createWardSampler({ ratio, parentBased })(
      decision,
      parentFlags === null ? null : { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: parentFlags, traceState: null },
      traceId,
    );

  it('always samples denials and dry-run denials, even at 0 % and under an unsampled parent', () => {
    expect(sample(0, true, 'deny', null)).toBe(true);
    expect(sample(0, true, 'dry-run-deny', 0)).toBe(true);
    expect(sample(0, false, 'deny', 0)).toBe(true);
  });

  it('follows the parent for allows when parent-based, else the ratio', () => {
    expect(sample(0, true, 'allow', 1)).toBe(true);
    expect(sample(1, true, 'allow', 0)).toBe(false);
    expect(sample(0, true, 'allow', null)).toBe(false);
    expect(sample(1, true, 'allow', null)).toBe(true);
    expect(sample(0, false, 'allow', 1)).toBe(false);
  });

  it('applies the ratio to the trace id like the OpenTelemetry SDK (XOR of 32-bit words below ratio × 2^32)', () => {
    // words of 0x00…01 XOR to 1 (kept at any ratio > 0); of f…f XOR to 0 (four words cancel)
    expect(sample(0.01, false, 'allow', null, '0'.repeat(31) + '1')).toBe(true);
    expect(sample(0.5, false, 'allow', null, '80000000' + '0'.repeat(24))).toBe(false);
    expect(sample(0.5, false, 'allow', null, '7ffffffe' + '0'.repeat(24))).toBe(true);
    // over many random ids the share kept is the ratio
    let kept = 0;
    for (let i = 0; i < 4000; i++) if (sample(0.25, false, 'allow', null, newTraceId())) kept++;
    expect(kept / 4000).toBeGreaterThan(0.2);
    expect(kept / 4000).toBeLessThan(0.3);
  });
});
