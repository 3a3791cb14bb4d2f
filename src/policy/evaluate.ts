import { failure, holds, allHold, type CompiledCondition } from './conditions.ts';
import { type CompiledAllowRule, DRY_RUN_RULE, type PolicyProgram, programOf } from './compile.ts';
import type { AllowDecision, CompiledPolicy, DenyDecision, DryRunDenial, Facts, Identity, Permit, RequestFacts, Verdict } from './model.ts';
import { collectCandidates, grpcKey } from './routes.ts';

/**
 * The policy decision: pure and synchronous. No I/O, no clock, no awaiting; the same policy and
 * facts always give the same verdict. Authentication is the async stage before it, exchange the
 * one after it. This module is the only creator of `Permit`, and the forwarder accepts nothing
 * else, so "forwarded without a decision" does not type-check (linkerd `Permitted<T>`).
 *
 * Order (Istio AuthorizationPolicy, Pomerium PPL: deny beats allow):
 *  1. every deny rule whose route and conditions match refuses the call (ERR_POLICY_DENIED);
 *     a dry-run deny rule is recorded instead and evaluation goes on;
 *  2. the first allow rule, in file order, whose route, token requirement and conditions hold
 *     admits it;
 *  3. otherwise the call is refused with the most useful code: ERR_TOKEN_MISSING when the call
 *     had no token and the allow rules for its route need one (-> 401 challenge),
 *     ERR_SCOPE_INSUFFICIENT when one failed only on scope (-> insufficient_scope), else
 *     ERR_POLICY_NO_MATCH;
 *  4. a dry-run allow rule, on a route that no enforced allow rule covers, or a dry-run policy,
 *     turns that refusal into an allow that records it (`dryRunDenial`).
 *
 * `now` (ms since the epoch) is part of the contract for time-based conditions; none exist yet.
 */
export function evaluate(policy: CompiledPolicy, facts: Facts, _now: number): Verdict {
  const prog = programOf(policy);
  // A policy not made by compilePolicy() has no program: refuse rather than guess.
  if (prog === undefined) return unavailable(policy);
  const req = facts.request;
  const id = facts.identity;

  let dryDeny: DryRunDenial | undefined;
  if (prog.denyRules.length > 0) {
    const n = collectCandidates(prog.denyIndex, req, grpcKey(req, 'deny'));
    const scratch = prog.denyIndex.scratch;
    for (let k = 0; k < n; k++) {
      const rule = prog.denyRules[scratch[k] as number];
      if (rule === undefined || !allHold(rule.conditions, id)) continue;
      if (!rule.dryRun) return policy.dryRun ? dryRunAllow(rule.denyVerdict.decision, id) : rule.denyVerdict;
      dryDeny ??= rule.dryRunDenial;
    }
  }

  const n = collectCandidates(prog.allowIndex, req, grpcKey(req, 'allow'));
  const scratch = prog.allowIndex.scratch;
  for (let k = 0; k < n; k++) {
    const rule = prog.allowRules[scratch[k] as number];
    if (rule === undefined) continue;
    if (id === null ? rule.tokenRequired || rule.conditions.length > 0 : !allHold(rule.conditions, id)) continue;
    const decision = dryDeny === undefined ? rule.allowDecision : { ...rule.allowDecision, dryRunDenial: dryDeny };
    return permit(decision, id);
  }

  const denial = n === 0 ? prog.noMatch.decision : diagnose(prog, n, id);
  // A dry-run allow rule admits what its token requirement or conditions refused, but only on
  // a route no enforced allow rule covers: where one does, its refusal stands. Otherwise adding
  // a dry-run rule next to an enforced one let through every caller the enforced rule refused
  // (found in review; a shadow rule must not weaken enforcement, as in Envoy and Istio).
  let dryRule: CompiledAllowRule | undefined;
  for (let k = 0; k < n; k++) {
    const rule = prog.allowRules[scratch[k] as number];
    if (rule === undefined) continue;
    if (!rule.dryRun) {
      dryRule = undefined;
      break;
    }
    dryRule ??= rule;
  }
  if (dryRule !== undefined) {
    return permit({ ...dryRule.allowDecision, reason: `${dryRule.label}: allowed (dry-run; would deny: ${denial.reason})`, dryRunDenial: toDryRun(denial) }, id);
  }
  if (policy.dryRun) return dryRunAllow(denial, id);
  return n === 0 ? prog.noMatch : { decision: denial, permit: null };
}

/**
 * Whether an allow rule with `signIn: browser` matches the request's route: a browser session
 * may stand in for a bearer token there, and a browser without either is sent to sign in. Pure,
 * like `evaluate`; what the session's token may do is still decided by `evaluate` alone.
 */
export function isSignInRoute(policy: CompiledPolicy, req: RequestFacts): boolean {
  const index = programOf(policy)?.signInIndex;
  if (index === null || index === undefined) return false;
  return collectCandidates(index, req, grpcKey(req, 'allow')) > 0;
}

/**
 * No allow rule admitted a call whose route some allow rules match (positions in the allow
 * index's scratch). Picks the denial that tells the caller what to fix.
 */
function diagnose(prog: PolicyProgram, n: number, id: Identity | null): DenyDecision {
  const scratch = prog.allowIndex.scratch;
  const first = prog.allowRules[scratch[0] as number] as CompiledAllowRule;
  // Without a token nothing but token: optional rules (which have no conditions) can match, so
  // every rule here needs a token: ask for one (401 with a challenge), not a bare 403.
  if (id === null) return first.tokenMissing;
  for (let k = 0; k < n; k++) {
    const rule = prog.allowRules[scratch[k] as number] as CompiledAllowRule;
    const failed = failedConditions(rule.conditions, id);
    if (failed.length > 0 && failed.every((c) => c.scope)) {
      return deny('ERR_SCOPE_INSUFFICIENT', rule, failure(failed[0] as CompiledCondition, id), prog);
    }
  }
  const failed = failedConditions(first.conditions, id);
  return deny('ERR_POLICY_NO_MATCH', first, failed.length > 0 ? failure(failed[0] as CompiledCondition, id) : 'did not match', prog);
}

export function failedConditions(conds: readonly CompiledCondition[], id: Identity): CompiledCondition[] {
  return conds.filter((c) => !holds(c, id));
}

function deny(code: DenyDecision['code'], rule: CompiledAllowRule, why: string, prog: PolicyProgram): DenyDecision {
  return { kind: 'deny', code, rule: rule.name, reason: `${rule.label}: ${why}`, policyVersion: prog.noMatch.decision.policyVersion };
}

function toDryRun(d: DenyDecision): DryRunDenial {
  return { code: d.code, rule: d.rule, reason: d.reason };
}

function dryRunAllow(d: DenyDecision, id: Identity | null): Verdict {
  return permit(
    {
      kind: 'allow',
      rule: DRY_RUN_RULE,
      reason: `dry-run policy: would deny (${d.code}): ${d.reason}`,
      policyVersion: d.policyVersion,
      dryRunDenial: toDryRun(d),
    },
    id,
  );
}

function permit(decision: AllowDecision, identity: Identity | null): Verdict {
  return { decision, permit: Object.freeze({ decision, identity }) as unknown as Permit };
}

function unavailable(policy: CompiledPolicy): Verdict {
  return {
    decision: { kind: 'deny', code: 'ERR_POLICY_UNAVAILABLE', rule: null, reason: 'policy was not compiled by compilePolicy()', policyVersion: policy.version },
    permit: null,
  };
}
