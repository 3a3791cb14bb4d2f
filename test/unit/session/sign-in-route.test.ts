import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors/ward-error.ts';
import { evaluate, isSignInRoute } from '../../../src/policy/evaluate.ts';
import { canonicalJson, policyVersion } from '../../../src/policy/compile.ts';
import { validatePolicyText } from '../../../src/policy/load.ts';
import { facts, grpc, http, id, policy } from '../policy/helpers.ts';

/** `signIn: browser` in the policy file: which routes a browser session may stand in on. */
describe('signIn: browser (policy)', () => {
  const p = policy(`  - name: pages
    action: allow
    signIn: browser
    match:
      http: [{ methods: [GET, POST], prefix: /app }]
    when:
      - claim: roles
        anyOf: [viewer]
  - name: api
    action: allow
    match:
      http: [{ prefix: /api }]
      grpc: [/ward.demo.v1.Orders/GetOrder]
`);

  it('marks the routes of allow rules with signIn: browser, and only those', () => {
    expect(isSignInRoute(p, http('GET', '/app'))).toBe(true);
    expect(isSignInRoute(p, http('POST', '/app/notes'))).toBe(true);
    expect(isSignInRoute(p, http('DELETE', '/app/notes'))).toBe(false); // method not in the rule
    expect(isSignInRoute(p, http('GET', '/apple'))).toBe(false); // segment-aware prefix
    expect(isSignInRoute(p, http('GET', '/api/x'))).toBe(false);
    expect(isSignInRoute(p, grpc('/ward.demo.v1.Orders/GetOrder'))).toBe(false);
  });

  it('is false for a policy without any sign-in rule', () => {
    expect(isSignInRoute(policy(`  - name: api
    action: allow
    match: { http: [{ prefix: / }] }
`), http('GET', '/'))).toBe(false);
  });

  it('does not change what evaluate decides: a session identity is judged like a bearer one', () => {
    expect(evaluate(p, facts(id({ roles: ['viewer'] }), http('GET', '/app')), 0).permit).not.toBeNull();
    expect(evaluate(p, facts(id({ roles: ['guest'] }), http('GET', '/app')), 0).decision).toMatchObject({ kind: 'deny', code: 'ERR_POLICY_NO_MATCH' });
    expect(evaluate(p, facts(null, http('GET', '/app')), 0).decision).toMatchObject({ kind: 'deny', code: 'ERR_TOKEN_MISSING' });
  });

  it('is refused on deny rules and on rules without an http route', () => {
    const text = (rule: string): string => `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers: [{ issuer: https://idp.example.com, audiences: [a] }]
rules:
${rule}`;
    expect(() => validatePolicyText(text(`  - name: d
    action: deny
    signIn: browser
    match: { http: [{ prefix: /x }] }
`), 'p.yaml')).toThrow(/signIn applies to allow rules only/);
    expect(() => validatePolicyText(text(`  - name: g
    action: allow
    signIn: browser
    match: { grpc: [/a.B/C] }
`), 'p.yaml')).toThrow(ConfigError);
    expect(() => validatePolicyText(text(`  - name: g
    action: allow
    signIn: always
    match: { http: [{ prefix: /x }] }
`), 'p.yaml')).toThrow(ConfigError);
  });

  it('leaves the version of policies that do not use it unchanged (no default written)', () => {
    const text = `apiVersion: ward.dev/v1
kind: Policy
service: orders
rules: [{ name: open, action: allow, token: optional, match: { http: [{ prefix: / }] } }]
`;
    const parsed = validatePolicyText(text, 'p.yaml');
    expect('signIn' in (parsed.rules[0] ?? {})).toBe(false);
    expect(canonicalJson(parsed)).not.toContain('signIn');
    const withSignIn = validatePolicyText(text.replace('token: optional,', 'token: optional, signIn: browser,'), 'p.yaml');
    expect(policyVersion(withSignIn)).not.toBe(policyVersion(parsed));
  });
});
