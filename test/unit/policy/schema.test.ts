import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, formatIssue } from '../../../src/errors/ward-error.ts';
import { loadPolicyFile, parsePolicyText, validatePolicyText } from '../../../src/policy/load.ts';
import { fixturePath, ordersPolicyText } from '../../fixtures/policies/fixtures.ts';

function errorsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map(formatIssue);
    throw err;
  }
  throw new Error('expected a ConfigError');
}

const f = (name: string): string => fixturePath(name);

describe('policy file: schema and semantic errors carry file:line:column and the field path', () => {
  it('reports a YAML syntax error at its position', () => {
    const file = f('invalid-yaml.yaml');
    expect(errorsOf(() => loadPolicyFile(file))).toEqual([`${file}:7:1: Sequence item without - indicator`]);
  });

  it('reports every schema error (wrong literal, empty list, unknown algorithm, bad enum, bad gRPC method, unknown key)', () => {
    const file = f('invalid-schema.yaml');
    expect(errorsOf(() => loadPolicyFile(file))).toEqual([
      `${file}:1:13: apiVersion: must be "ward.dev/v1"`,
      `${file}:6:16: issuers[0].audiences: needs at least one audience`,
      `${file}:7:18: issuers[0].algorithms[0]: unknown algorithm; expected one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, Ed25519, HS256, HS384, HS512`,
      `${file}:10:13: rules[0].action: Invalid option: expected one of "allow"|"deny"`,
      `${file}:12:14: rules[0].match.grpc[0]: must be /package.Service/Method or /package.Service/*`,
      `${file}:13:5: rules[0].colour: Unrecognized key: "colour"`,
    ]);
  });

  it('refuses a claim compared with a number past 2^53 - 1, at its line (regression: 9007199254740993 was read as ...992 from the policy and the token alike, and equals matched another id)', () => {
    const text = ordersPolicyText().replace(/rules:\n/, 'rules:\n  - name: one-account\n    action: allow\n    match:\n      http: [{ prefix: /acct }]\n    when:\n      - claim: account_id\n        equals: 9007199254740993\n      - claim: n\n        in: [1, -9007199254740992]\n      - claim: n\n        lt: 1e300\n');
    const errs = errorsOf(() => parsePolicyText(text, 'p.yaml'));
    expect(errs).toHaveLength(3);
    expect(errs[0]).toMatch(/^p\.yaml:\d+:\d+: rules\[0\]\.when\[0\]\.equals: must be between -\(2\^53 - 1\) and 2\^53 - 1: .*compare such a claim as a string$/);
    expect(errs[1]).toMatch(/^p\.yaml:\d+:\d+: rules\[0\]\.when\[1\]\.in\[1\]: must be between/);
    expect(errs[2]).toMatch(/^p\.yaml:\d+:\d+: rules\[0\]\.when\[2\]\.lt: must be between/);
    const line = text.split('\n').findIndex((l) => l.includes('9007199254740993')) + 1;
    expect(errs[0]?.startsWith(`p.yaml:${line}:`)).toBe(true);
    // the largest exact values load
    expect(() => parsePolicyText(text.replace('9007199254740993', '9007199254740991').replace('-9007199254740992', '-9007199254740991').replace('1e300', '0.5'), 'p.yaml')).not.toThrow();
  });

  it('refuses, at its line, a number past 2^52 not written as whole decimal digits (regression: 4503599627370496.5 loaded as ...496, another id)', () => {
    const rule = (cond: string): string => ordersPolicyText().replace(/rules:\n/, `rules:\n  - name: one-account\n    action: allow\n    match:\n      http: [{ prefix: /acct }]\n    when:\n${cond.startsWith('any') ? `      - ${cond}` : `      - claim: account_id\n${cond}`}`);
    for (const cond of ['        equals: 4503599627370496.5\n', '        in: [1, 9007199254740990.5]\n', '        gte: 4.5035996273704965e15\n', 'any:\n          - { claim: n, lt: 0x10000000000001 }\n']) {
      const errs = errorsOf(() => parsePolicyText(rule(cond), 'p.yaml'));
      expect(errs, cond).toHaveLength(1);
      expect(errs[0]).toMatch(/^p\.yaml:\d+:\d+: rules\[0\]\.when\[0\]\.(equals|in\[1\]|gte|any\[0\]\.lt): .* is not exactly a number a token can carry/);
    }
    // whole numbers in decimal digits load, and fractions below 2^52
    for (const cond of ['        equals: 4503599627370497\n', '        in: [-9007199254740991]\n', '        gte: 4503599627370495.5\n']) {
      expect(() => parsePolicyText(rule(cond), 'p.yaml'), cond).not.toThrow();
    }
  });

  it('refuses a method the sidecar never takes, a misspelt one included (regression: a deny rule for DELTE loaded and denied nothing)', () => {
    const text = ordersPolicyText().replace('action: deny', 'action: deny').replace(/rules:\n/, 'rules:\n  - name: no-deletes\n    action: deny\n    match:\n      http: [{ methods: [GET, DELTE, TRACE], prefix: /api }]\n');
    const errs = errorsOf(() => parsePolicyText(text, 'p.yaml'));
    expect(errs).toHaveLength(2);
    expect(errs[0]).toMatch(/^p\.yaml:\d+:\d+: rules\[0\]\.match\.http\[0\]\.methods\[1\]: Invalid option: expected one of "GET"\|"HEAD"\|"POST"\|"PUT"\|"DELETE"\|"PATCH"\|"OPTIONS"$/);
    expect(errs[1]).toMatch(/methods\[2\]: Invalid option/);
  });

  it('reports semantic errors after the schema, with the same positions', () => {
    const file = f('invalid-semantic.yaml');
    expect(errorsOf(() => loadPolicyFile(file))).toEqual([
      `${file}:12:17: rules[0].match.http[0].glob: invalid glob: invalid glob segment "v*": "*" and "**" must be whole segments`,
      `${file}:13:19: rules[0].match.http[1].prefix: must not end with "/": prefixes are segment-aware, "/api" already matches "/api/…"`,
      `${file}:14:11: rules[0].match.http[2]: set only one of exact, prefix, glob (found exact, prefix)`,
      `${file}:17:24: rules[0].when[0].issuer.in[0]: unknown issuer "https://other.example.com": not declared under issuers`,
      `${file}:18:11: rules[1].name: duplicate rule name "readers" (first used by rules[0])`,
      `${file}:23:5: rules[1].when: conditions need a token, but token is optional: a call without a token would skip them. Split the rule, or set token: required`,
      `${file}:28:5: rules[2].token: token applies to allow rules only (a deny rule applies to calls with or without a token)`,
      `${file}:30:23: rules[2].match.http[0].exact: must not contain a query or fragment (paths are matched without them)`,
      `${file}:32:9: rules[2].when[0]: set only one of scopes, subject per condition (use separate conditions, or any: for OR)`,
      `${file}:34:9: rules[2].when[1].claim: needs an operator: one of equals, in, anyOf, allOf, exists, gt, gte, lt, lte`,
      `${file}:36:9: rules[2].when[2].equals: "equals" goes with claim only (delegated takes its own test)`,
    ]);
  });

  it('refuses HS* without a secret, and a secret without HS*', () => {
    const file = f('invalid-hmac.yaml');
    expect(errorsOf(() => loadPolicyFile(file, { env: {} }))).toEqual([
      `${file}:7:17: issuers[0].algorithms: HS256 needs a shared secret: set hmacSecretFile or hmacSecretEnv`,
      `${file}:10:5: issuers[1].hmacSecretEnv: a shared secret is set but algorithms has no HS256/HS384/HS512`,
    ]);
  });

  it('reports an unreadable file as a ConfigError', () => {
    expect(errorsOf(() => loadPolicyFile(f('does-not-exist.yaml')))[0]).toMatch(/does-not-exist\.yaml:1:1: cannot read: ENOENT/);
  });

  it('refuses a policy for another service, at the service field', () => {
    const text = ordersPolicyText();
    expect(errorsOf(() => validatePolicyText(text, 'p.yaml', { service: 'payments' }))).toEqual([
      'p.yaml:5:10: service: policy is for service "orders" but this sidecar guards "payments"',
    ]);
  });

  it('locates errors inside any: combinators and nested lists', () => {
    const text = `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers: [{ issuer: "https://idp.example.com", audiences: [a] }]
rules:
  - name: r
    action: allow
    match: { grpc: [/a.B/C] }
    when:
      - any:
          - scopes: {}
          - via: { anyOf: [x] }
            maxDepth: 2
`;
    expect(errorsOf(() => parsePolicyText(text, 'p.yaml'))).toEqual([
      'p.yaml:11:21: rules[0].when[0].any[0].scopes: needs anyOf or allOf',
      'p.yaml:12:13: rules[0].when[0].any[1]: set only one of via, maxDepth per condition (use separate conditions, or any: for OR)',
    ]);
  });

  it('refuses paths that could never match a normalized request path', () => {
    const base = (path: string): string => `apiVersion: ward.dev/v1
kind: Policy
service: orders
rules:
  - name: r
    action: allow
    token: optional
    match: { http: [{ prefix: "${path}" }] }
`;
    expect(errorsOf(() => parsePolicyText(base('api'), 'p.yaml'))).toEqual(['p.yaml:8:31: rules[0].match.http[0].prefix: must start with "/"']);
    expect(errorsOf(() => parsePolicyText(base('/a//b'), 'p.yaml'))[0]).toContain('must not contain "//"');
    expect(errorsOf(() => parsePolicyText(base('/a/../b'), 'p.yaml'))[0]).toContain('"." or ".." segments');
  });

  it('refuses a rule that needs a token when no issuer is trusted, and an issuer without a key source', () => {
    const text = `apiVersion: ward.dev/v1
kind: Policy
service: orders
rules:
  - name: r
    action: allow
    match: { grpc: [/a.B/C] }
`;
    expect(errorsOf(() => parsePolicyText(text, 'p.yaml'))).toEqual([
      'p.yaml:5:5: rules[0].token: the rule needs a token but the policy trusts no issuer (add issuers, or set token: optional)',
    ]);
    const noKeys = `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: https://idp.example.com
    audiences: [a]
    discovery: false
`;
    expect(errorsOf(() => parsePolicyText(noKeys, 'p.yaml'))).toEqual(['p.yaml:7:16: issuers[0].discovery: no way to find signing keys: set jwksUri or leave discovery on']);
  });

  it('applies defaults', () => {
    const parsed = validatePolicyText(ordersPolicyText(), 'orders.yaml');
    expect(parsed.mode).toBe('enforce');
    const iss = parsed.issuers[0];
    expect(iss?.discovery).toBe(true);
    expect(iss?.requireAtJwtType).toBe(true);
    expect(iss?.requiredClaims).toEqual([]);
    const minimal = validatePolicyText('apiVersion: ward.dev/v1\nkind: Policy\nservice: x\nissuers: [{issuer: "https://i.example", audiences: [a]}]\n', 'm.yaml');
    expect(minimal.issuers[0]?.algorithms).toEqual(['RS256', 'ES256', 'PS256', 'EdDSA']);
    expect(minimal.issuers[0]?.introspection).toBe(false);
    expect(minimal.rules).toEqual([]);
  });

  it('accepts the orders fixture', () => {
    const p = loadPolicyFile(fixturePath('orders.yaml'));
    expect(p.service).toBe('orders');
    expect(p.rules).toHaveLength(4);
    expect(readFileSync(fixturePath('orders.yaml'), 'utf8')).toContain('https://issuer.placeholder.invalid');
  });
});
