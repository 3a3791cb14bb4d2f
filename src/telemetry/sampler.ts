import { type Attributes, type Context, isSpanContextValid, TraceFlags, trace } from '@opentelemetry/api';
import { type Sampler, SamplingDecision, type SamplingResult, TraceIdRatioBasedSampler } from '@opentelemetry/sdk-trace';
import type { SamplerConfig } from '../config/telemetry.ts';
import { WARD_DECISION } from './semconv.ts';

/**
 * Parent-based ratio sampling, except that a decision other than `allow` (a denial or a dry-run
 * denial) is always recorded and sampled: "why was this call denied?" must have a trace even at
 * a 0 % sample rate. The decision is known when the span starts (the stacks start spans at the
 * decision, with the call's arrival as start time), so the sampler can see it.
 */

const SAMPLED: SamplingResult = Object.freeze({ decision: SamplingDecision.RECORD_AND_SAMPLED });
const DROPPED: SamplingResult = Object.freeze({ decision: SamplingDecision.NOT_RECORD });

export function createWardSampler(cfg: SamplerConfig): Sampler {
  const ratio = new TraceIdRatioBasedSampler(cfg.ratio);
  const always = cfg.ratio >= 1;
  const never = cfg.ratio <= 0;
  return {
    shouldSample(ctx: Context, traceId: string, _name, _kind, attributes: Attributes): SamplingResult {
      const d = attributes[WARD_DECISION];
      if (d !== undefined && d !== 'allow') return SAMPLED;
      if (cfg.parentBased) {
        const parent = trace.getSpanContext(ctx);
        if (parent !== undefined && isSpanContextValid(parent)) return (parent.traceFlags & TraceFlags.SAMPLED) !== 0 ? SAMPLED : DROPPED;
      }
      if (always) return SAMPLED;
      if (never) return DROPPED;
      return ratio.shouldSample(ctx, traceId);
    },
    toString: () => `WardSampler{ratio=${cfg.ratio},parentBased=${cfg.parentBased},denials=always}`,
  };
}
