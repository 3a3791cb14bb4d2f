import { failure, holds } from './conditions.ts';
import type { CompiledRule } from './compile.ts';
import { evaluate } from './evaluate.ts';
import type { CompiledPolicy, Facts, Verdict } from './model.ts';
import { routeMatches } from './routes.ts';

/**
 * `ward policy explain`: the verdict of `evaluate()` (the only authority), plus a trace of every
 * rule saying whether it applied and why not. The trace re-checks each rule on its own with the
 * linear route matcher, which also makes it an independent cross-check of the evaluator's index.
 * Not for the request path: it allocates freely.
 */
export interface RuleTrace {
  readonly name: string;
  readonly action: 'allow' | 'deny';
  readonly dryRun: boolean;
  /** The rule's match (gRPC method or HTTP route) covers the request. */
  readonly routeMatched: boolean;
  /** Route, token requirement and every condition hold. */
  readonly applies: boolean;
  /** One line: what the rule did, or why it did not apply. */
  readonly why: string;
}

export interface Explanation {
  readonly verdict: Verdict;
  readonly rules: readonly RuleTrace[];
}

export function explain(policy: CompiledPolicy, facts: Facts, now: number): Explanation {
  const verdict = evaluate(policy, facts, now);
  const rules = (policy.rules as readonly CompiledRule[]).map((r) => traceRule(r, facts));
  return { verdict, rules };
}

function traceRule(rule: CompiledRule, facts: Facts): RuleTrace {
  const base = { name: rule.name, action: rule.action, dryRun: rule.dryRun };
  const routeMatched = rule.routes.some((m) => routeMatches(m, facts.request, rule.action));
  if (!routeMatched) return { ...base, routeMatched, applies: false, why: 'route does not match' };
  const id = facts.identity;
  const effect = rule.action === 'deny' ? (rule.dryRun ? 'would deny (dry-run rule, not enforced)' : 'denies') : 'allows';
  if (id === null) {
    if (rule.action === 'allow' && rule.tokenRequired) return { ...base, routeMatched, applies: false, why: 'requires a token; the call has none' };
    if (rule.conditions.length > 0) return { ...base, routeMatched, applies: false, why: 'has conditions; without a token none can hold' };
    return { ...base, routeMatched, applies: true, why: `route matches: ${effect}` };
  }
  const failed = rule.conditions.filter((c) => !holds(c, id));
  if (failed.length > 0) return { ...base, routeMatched, applies: false, why: failed.map((c) => failure(c, id)).join('; ') };
  const all = rule.conditions.length === 0 ? 'route matches' : 'route and all conditions match';
  return { ...base, routeMatched, applies: true, why: `${all}: ${effect}` };
}
