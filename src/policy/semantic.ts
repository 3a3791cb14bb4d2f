import type { FileIssue } from '../errors/ward-error.ts';
import type { FieldPath, YamlLocator } from '../lib/yaml-locate.ts';
import { compileGlob, pathProblem } from './paths.ts';
import {
  CLAIM_OPERATORS,
  CONDITION_SUBJECTS,
  type PolicyCondition,
  type PolicyFile,
  type PolicyRule,
} from './schema.ts';

/** One RFC 6749 §3.3 scope-token: `1*( %x21 / %x23-5B / %x5D-7E )`. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

/**
 * Checks that need more than one field at a time, run after the schema accepted the file.
 * Each finding names the file, line, column and field path, like a schema error. The point is
 * that a policy which loads means what its author thinks it means: no rule silently shadowed
 * by a duplicate name, no condition that can never hold, no issuer referenced but not trusted.
 */
export function checkPolicy(policy: PolicyFile, loc: YamlLocator): FileIssue[] {
  const issues: FileIssue[] = [];
  const report = (path: FieldPath, message: string, at: 'value' | 'key' = 'value'): void => {
    issues.push(loc.issue(path, message, at));
  };

  const issuerNames = new Set<string>();
  policy.issuers.forEach((iss, i) => {
    const at = ['issuers', i];
    if (issuerNames.has(iss.issuer)) report([...at, 'issuer'], `duplicate issuer "${iss.issuer}"`);
    issuerNames.add(iss.issuer);
    const hmacAlgs = iss.algorithms.filter((a) => a.startsWith('HS'));
    const hasSecret = iss.hmacSecretFile !== undefined || iss.hmacSecretEnv !== undefined;
    if (iss.hmacSecretFile !== undefined && iss.hmacSecretEnv !== undefined) {
      report([...at, 'hmacSecretEnv'], 'set one of hmacSecretFile and hmacSecretEnv, not both', 'key');
    }
    if (hmacAlgs.length > 0 && !hasSecret) {
      report([...at, 'algorithms'], `${hmacAlgs.join(', ')} needs a shared secret: set hmacSecretFile or hmacSecretEnv`);
    }
    if (hasSecret && hmacAlgs.length === 0) {
      report([...at, iss.hmacSecretFile !== undefined ? 'hmacSecretFile' : 'hmacSecretEnv'], 'a shared secret is set but algorithms has no HS256/HS384/HS512', 'key');
    }
    const asymmetric = iss.algorithms.some((a) => !a.startsWith('HS'));
    if (asymmetric && iss.jwksUri === undefined && !iss.discovery) {
      report([...at, 'discovery'], 'no way to find signing keys: set jwksUri or leave discovery on');
    }
    if (iss.requiredClaims.length !== new Set(iss.requiredClaims).size) report([...at, 'requiredClaims'], 'lists a claim twice');
  });

  const ruleNames = new Map<string, number>();
  policy.rules.forEach((rule, r) => {
    const at = ['rules', r];
    const first = ruleNames.get(rule.name);
    if (first !== undefined) report([...at, 'name'], `duplicate rule name "${rule.name}" (first used by rules[${first}])`);
    else ruleNames.set(rule.name, r);
    checkRule(rule, at, policy, issuerNames, report, (p) => loc.has(p), (p) => loc.source(p));
  });
  return issues;
}

type Report = (path: FieldPath, message: string, at?: 'value' | 'key') => void;

function checkRule(
  rule: PolicyRule,
  at: FieldPath,
  policy: PolicyFile,
  issuers: ReadonlySet<string>,
  report: Report,
  has: (path: FieldPath) => boolean,
  sourceOf: (path: FieldPath) => string | undefined,
): void {
  const { match } = rule;
  if (match.grpc === undefined && match.http === undefined) report([...at, 'match'], 'needs at least one of grpc, http');
  if (match.grpc !== undefined) {
    const seen = new Set<string>();
    match.grpc.forEach((m, i) => {
      if (seen.has(m)) report([...at, 'match', 'grpc', i], `lists ${m} twice`);
      seen.add(m);
    });
  }
  match.http?.forEach((h, i) => {
    const hp = [...at, 'match', 'http', i];
    const kinds = (['exact', 'prefix', 'glob'] as const).filter((k) => h[k] !== undefined);
    if (kinds.length !== 1) {
      report(hp, kinds.length === 0 ? 'needs one of exact, prefix, glob' : `set only one of exact, prefix, glob (found ${kinds.join(', ')})`);
      return;
    }
    if (h.methods !== undefined && new Set(h.methods).size !== h.methods.length) report([...hp, 'methods'], 'lists a method twice');
    if (h.exact !== undefined) {
      const p = pathProblem(h.exact);
      if (p !== null) report([...hp, 'exact'], p);
    } else if (h.prefix !== undefined) {
      const p = pathProblem(h.prefix);
      if (p !== null) report([...hp, 'prefix'], p);
      else if (h.prefix.length > 1 && h.prefix.endsWith('/')) {
        report([...hp, 'prefix'], `must not end with "/": prefixes are segment-aware, "${h.prefix.slice(0, -1)}" already matches "${h.prefix}\u2026"`);
      }
    } else if (h.glob !== undefined) {
      const g = compileGlob(h.glob);
      if ('error' in g) report([...hp, 'glob'], `invalid glob: ${g.error}`);
    }
  });

  if (rule.action === 'deny' && (rule.token !== 'required' || has([...at, 'token']))) {
    // `token` says which calls an allow rule admits; a deny rule applies with or without a token.
    report([...at, 'token'], 'token applies to allow rules only (a deny rule applies to calls with or without a token)', 'key');
  }
  if (rule.action === 'allow' && rule.token === 'optional' && rule.when.length > 0) {
    report([...at, 'when'], 'conditions need a token, but token is optional: a call without a token would skip them. Split the rule, or set token: required', 'key');
  }
  if (rule.action === 'allow' && rule.token === 'required' && policy.issuers.length === 0) {
    report([...at, 'token'], 'the rule needs a token but the policy trusts no issuer (add issuers, or set token: optional)', 'key');
  }
  if (rule.signIn !== undefined && rule.action === 'deny') {
    report([...at, 'signIn'], 'signIn applies to allow rules only (it says how a caller without a token may sign in)', 'key');
  }
  if (rule.signIn !== undefined && match.http === undefined) {
    report([...at, 'signIn'], 'signIn: browser needs an http route (browsers do not make gRPC calls)', 'key');
  }
  rule.when.forEach((c, i) => checkCondition(c, [...at, 'when', i], issuers, report, sourceOf));
}

/** 2^52: past it a double holds no fraction, so `4503599627370496.5` is read as `4503599627370496`. */
const NO_FRACTIONS = 2 ** 52;

/**
 * A number compared with a claim must be the one the file spells (found in review): past 2^52 a
 * literal with a fraction part, or in another base or notation, is rounded to an integer a token
 * could carry. (Past 2^53 - 1 the schema refuses every number.)
 */
function checkExactNumbers(c: PolicyCondition, at: FieldPath, report: Report, sourceOf: (path: FieldPath) => string | undefined): void {
  const check = (v: unknown, path: FieldPath): void => {
    if (typeof v !== 'number' || Math.abs(v) < NO_FRACTIONS) return;
    const text = sourceOf(path);
    if (text !== undefined && !/^[-+]?[0-9]+$/.test(text)) report(path, `${text} is not exactly a number a token can carry (from 2^52 on, write whole numbers in decimal digits only)`);
  };
  for (const op of ['equals', 'gt', 'gte', 'lt', 'lte'] as const) check(c[op], [...at, op]);
  c.in?.forEach((v, i) => check(v, [...at, 'in', i]));
}

function checkCondition(c: PolicyCondition, at: FieldPath, issuers: ReadonlySet<string>, report: Report, sourceOf: (path: FieldPath) => string | undefined): void {
  checkExactNumbers(c, at, report, sourceOf);
  const subjects = CONDITION_SUBJECTS.filter((k) => c[k] !== undefined);
  const ops = CLAIM_OPERATORS.filter((k) => c[k] !== undefined);
  if (subjects.length !== 1) {
    report(at, subjects.length === 0
      ? `needs one of ${CONDITION_SUBJECTS.join(', ')}`
      : `set only one of ${subjects.join(', ')} per condition (use separate conditions, or any: for OR)`);
    return;
  }
  const subject = subjects[0];
  if (subject === 'claim') {
    if (ops.length === 0) report([...at, 'claim'], `needs an operator: one of ${CLAIM_OPERATORS.join(', ')}`, 'key');
    if (c.exists === false && ops.length > 1) report([...at, 'exists'], 'exists: false cannot be combined with other operators', 'key');
    if (Array.isArray(c.claim) ? c.claim.length === 0 : c.claim === '') report([...at, 'claim'], 'must not be empty');
    if (typeof c.claim === 'string' && c.claim.split('.').some((s) => s === '')) {
      report([...at, 'claim'], 'has an empty segment; for a claim name containing dots, give the path as a list');
    }
  } else {
    for (const op of ops) report([...at, op], `"${op}" goes with claim only (${subject} takes its own test)`, 'key');
  }
  if (c.scopes !== undefined && c.scopes.anyOf === undefined && c.scopes.allOf === undefined) report([...at, 'scopes'], 'needs anyOf or allOf');
  // A token's scopes are single scope-tokens (RFC 6749 §3.3: no space, `"` or `\`), so a value
  // that is not one can never be among them: a deny rule written with "a b" loaded and never
  // fired (found in review).
  for (const list of ['anyOf', 'allOf'] as const) {
    c.scopes?.[list]?.forEach((v, i) => {
      if (!SCOPE_TOKEN.test(v)) report([...at, 'scopes', list, i], `"${v}" is not one scope (RFC 6749 §3.3: no spaces, quotes or backslashes); list each scope on its own`);
    });
  }
  if (c.via !== undefined && c.via.anyOf === undefined && c.via.allOf === undefined) report([...at, 'via'], 'needs anyOf or allOf');
  if (c.issuer !== undefined) {
    c.issuer.in.forEach((iss, i) => {
      if (!issuers.has(iss)) report([...at, 'issuer', 'in', i], `unknown issuer "${iss}": not declared under issuers`);
    });
  }
  c.any?.forEach((sub, i) => checkCondition(sub, [...at, 'any', i], issuers, report, sourceOf));
}

/**
 * Advice for the policy's author, not errors (the sidecar loads the policy either way):
 * `ward policy check` prints them. A deny rule for `GET` that leaves `HEAD` out: the rule means
 * what it says (`HEAD` is not implied, as in Istio), but most servers answer `HEAD` with their
 * `GET` handler, so the handler runs and its headers go out for a `HEAD` the rule does not deny.
 */
export function policyAdvice(policy: PolicyFile, loc: YamlLocator): FileIssue[] {
  const advice: FileIssue[] = [];
  policy.rules.forEach((rule, r) => {
    if (rule.action !== 'deny') return;
    rule.match.http?.forEach((h, i) => {
      if (h.methods !== undefined && h.methods.includes('GET') && !h.methods.includes('HEAD')) {
        advice.push(loc.issue(['rules', r, 'match', 'http', i, 'methods'], 'denies GET but not HEAD: most servers answer HEAD with their GET handler, so add HEAD unless HEAD is meant to pass'));
      }
    });
  });
  return advice;
}
