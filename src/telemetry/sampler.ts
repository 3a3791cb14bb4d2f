import type { SamplerConfig } from '../config/telemetry.ts';
import type { RemoteContext } from './traceparent.ts';

/**
 * Parent-based ratio sampling, except that a decision other than `allow` (a denial or a dry-run
 * denial) is always recorded and sampled: "why was this call denied?" must have a trace even at
 * a 0 % sample rate. The decision is known when the span starts (the stacks start spans at the
 * decision, with the call's arrival as start time), so the sampler can see it.
 *
 * The ratio is applied to the trace id exactly as the OpenTelemetry JS `TraceIdRatioBasedSampler`
 * does (the XOR of its 32-bit words against `ratio × 2^32`), so every hop of a trace that samples
 * by ratio agrees with OTel SDKs elsewhere in the mesh.
 */

export type WardSampler = (decision: 'allow' | 'deny' | 'dry-run-deny', parent: RemoteContext | null, traceId: string) => boolean;

function accumulate(traceId: string): number {
  let acc = 0;
  for (let i = 0; i + 8 <= traceId.length; i += 8) acc = (acc ^ parseInt(traceId.slice(i, i + 8), 16)) >>> 0;
  return acc;
}

export function createWardSampler(cfg: SamplerConfig): WardSampler {
  const always = cfg.ratio >= 1;
  const never = cfg.ratio <= 0;
  const upper = Math.floor(cfg.ratio * 0xffffffff);
  const parentBased = cfg.parentBased;
  return (decision, parent, traceId) => {
    if (decision !== 'allow') return true;
    if (parentBased && parent !== null) return (parent.traceFlags & 1) !== 0;
    if (always) return true;
    if (never) return false;
    return accumulate(traceId) < upper;
  };
}
