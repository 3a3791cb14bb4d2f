import { ROOT_CONTEXT, SpanKind, trace, TraceFlags } from '@opentelemetry/api';
import { SamplingDecision } from '@opentelemetry/sdk-trace';
import { describe, expect, it } from 'vitest';
import { createWardSampler } from '../../../src/telemetry/sampler.ts';
import { formatTraceparent, parseTraceparent, remoteContext } from '../../../src/telemetry/traceparent.ts';

const TP = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

describe('W3C traceparent', () => {
  it('parses a valid traceparent with its tracestate and writes ours back', () => {
    const sc = parseTraceparent(TP, 'congo=t61rcWkgMzE');
    expect(sc).toMatchObject({ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: TraceFlags.SAMPLED, isRemote: true });
    expect(sc?.traceState?.get('congo')).toBe('t61rcWkgMzE');
    expect(formatTraceparent({ traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), traceFlags: 0 })).toBe(`00-${'a'.repeat(32)}-${'b'.repeat(16)}-00`);
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
    expect(remoteContext(['traceparent', TP, 'tracestate', 'a=1', 'tracestate', 'b=2'])?.traceState?.serialize()).toBe('a=1,b=2');
    expect(remoteContext(['traceparent', TP, 'traceparent', TP])).toBeNull();
    expect(remoteContext(['tracestate', 'a=1'])).toBeNull();
  });
});

describe('ward sampler', () => {
  const sample = (ratio: number, parentBased: boolean, decision: string, parentFlags: number | null): SamplingDecision => {
    const ctx =
      parentFlags === null
        ? ROOT_CONTEXT
        : trace.setSpanContext(ROOT_CONTEXT, { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: parentFlags, isRemote: true });
    return createWardSampler({ ratio, parentBased }).shouldSample(ctx, 'f'.repeat(32), 'x', SpanKind.SERVER, { 'ward.decision': decision }, []).decision;
  };

  it('always samples denials and dry-run denials, even at 0 % and under an unsampled parent', () => {
    expect(sample(0, true, 'deny', null)).toBe(SamplingDecision.RECORD_AND_SAMPLED);
    expect(sample(0, true, 'dry-run-deny', 0)).toBe(SamplingDecision.RECORD_AND_SAMPLED);
    expect(sample(0, false, 'deny', 0)).toBe(SamplingDecision.RECORD_AND_SAMPLED);
  });

  it('follows the parent for allows when parent-based, else the ratio', () => {
    expect(sample(0, true, 'allow', TraceFlags.SAMPLED)).toBe(SamplingDecision.RECORD_AND_SAMPLED);
    expect(sample(1, true, 'allow', 0)).toBe(SamplingDecision.NOT_RECORD);
    expect(sample(0, true, 'allow', null)).toBe(SamplingDecision.NOT_RECORD);
    expect(sample(1, true, 'allow', null)).toBe(SamplingDecision.RECORD_AND_SAMPLED);
    expect(sample(0, false, 'allow', TraceFlags.SAMPLED)).toBe(SamplingDecision.NOT_RECORD);
  });
});
