import { describe, expect, it } from 'vitest';
import { DRY_RUN_RULE } from '../../../src/policy/compile.ts';
import { evaluate } from '../../../src/policy/evaluate.ts';
import type { CompiledPolicy, Identity, RequestFacts, Verdict } from '../../../src/policy/model.ts';
import { facts, grpc, http, id, ISSUER, OTHER_ISSUER, policy } from './helpers.ts';

const NOW = 1_700_000_000_000;
const GET = grpc('/shop.v1.Orders/Get');

function decide(p: CompiledPolicy, identity: Identity | null, req: RequestFacts = GET): Verdict['decision'] {
  return evaluate(p, facts(identity, req), NOW).decision;
}

/** One allow rule on GET with the given `when:` conditions (YAML, indented as list items). */
function withWhen(when: string): CompiledPolicy {
  return policy(`  - name: r
    action: allow
    match: { grpc: [/shop.v1.Orders/Get] }
    when:
${when}`);
}

function allows(when: string, claims: Record<string, unknown>, issuer = ISSUER): boolean {
  return decide(withWhen(when), id(claims, issuer)).kind === 'allow';
}

describe('evaluate: claim operators', () => {
  it('equals compares strings, numbers and booleans without coercion', () => {
    const eq = (v: string): string => `      - claim: c\n        equals: ${v}\n`;
    expect(allows(eq('acme'), { c: 'acme' })).toBe(true);
    expect(allows(eq('acme'), { c: 'acme2' })).toBe(false);
    expect(allows(eq('42'), { c: 42 })).toBe(true);
    expect(allows(eq('42'), { c: '42' })).toBe(false);
    expect(allows(eq('"42"'), { c: 42 })).toBe(false);
    expect(allows(eq('true'), { c: true })).toBe(true);
    expect(allows(eq('true'), { c: 'true' })).toBe(false);
    expect(allows(eq('acme'), { c: ['acme'] })).toBe(false);
    expect(allows(eq('acme'), {})).toBe(false);
  });

  it('in: the claim is one of the values', () => {
    const w = '      - claim: tier\n        in: [gold, 3, true]\n';
    expect(allows(w, { tier: 'gold' })).toBe(true);
    expect(allows(w, { tier: 3 })).toBe(true);
    expect(allows(w, { tier: true })).toBe(true);
    expect(allows(w, { tier: '3' })).toBe(false);
    expect(allows(w, { tier: 'silver' })).toBe(false);
    expect(allows(w, { tier: ['gold'] })).toBe(false);
  });

  it('anyOf / allOf work on lists and on space-delimited strings', () => {
    const any = '      - claim: groups\n        anyOf: [admin, ops]\n';
    expect(allows(any, { groups: ['dev', 'ops'] })).toBe(true);
    expect(allows(any, { groups: ['dev'] })).toBe(false);
    expect(allows(any, { groups: 'dev ops' })).toBe(true);
    expect(allows(any, { groups: 'devops' })).toBe(false);
    expect(allows(any, { groups: 'administrator' })).toBe(false);
    expect(allows(any, { groups: 42 })).toBe(false);
    const all = '      - claim: scope\n        allOf: [orders.read, orders.write]\n';
    expect(allows(all, { scope: 'orders.write openid orders.read' })).toBe(true);
    expect(allows(all, { scope: 'orders.read' })).toBe(false);
    expect(allows(all, { scope: 'orders.read orders.writer' })).toBe(false);
    expect(allows(all, { scope: ['orders.read', 'orders.write'] })).toBe(true);
  });

  it('exists: true needs a non-null claim, false its absence', () => {
    const yes = '      - claim: email\n        exists: true\n';
    const no = '      - claim: email\n        exists: false\n';
    expect(allows(yes, { email: 'a@b' })).toBe(true);
    expect(allows(yes, { email: null })).toBe(false);
    expect(allows(yes, {})).toBe(false);
    expect(allows(no, {})).toBe(true);
    expect(allows(no, { email: null })).toBe(true);
    expect(allows(no, { email: '' })).toBe(false);
  });

  it('gt / gte / lt / lte need a number and can be combined', () => {
    const range = '      - claim: age\n        gte: 18\n        lt: 65\n';
    expect(allows(range, { age: 18 })).toBe(true);
    expect(allows(range, { age: 64.5 })).toBe(true);
    expect(allows(range, { age: 17 })).toBe(false);
    expect(allows(range, { age: 65 })).toBe(false);
    expect(allows(range, { age: '30' })).toBe(false);
    expect(allows('      - claim: n\n        gt: 0\n', { n: 0 })).toBe(false);
    expect(allows('      - claim: n\n        gt: 0\n', { n: 1 })).toBe(true);
    expect(allows('      - claim: n\n        lte: 3\n', { n: 3 })).toBe(true);
    expect(allows('      - claim: n\n        lte: 3\n', { n: 4 })).toBe(false);
  });

  it('reads nested claims by dotted path, and names with dots by segment list', () => {
    const nested = '      - claim: tenant.id\n        equals: acme\n';
    expect(allows(nested, { tenant: { id: 'acme' } })).toBe(true);
    expect(allows(nested, { tenant: { id: 'other' } })).toBe(false);
    expect(allows(nested, { 'tenant.id': 'acme' })).toBe(false);
    expect(allows(nested, { tenant: 'acme' })).toBe(false);
    expect(allows(nested, { tenant: [{ id: 'acme' }] })).toBe(false);
    const dotted = '      - claim: ["https://example.com/claims", roles]\n        anyOf: [admin]\n';
    expect(allows(dotted, { 'https://example.com/claims': { roles: ['admin'] } })).toBe(true);
    expect(allows(dotted, { https: { '//example': { com: {} } } })).toBe(false);
  });

  it('never reads inherited properties (constructor, __proto__, toString)', () => {
    expect(allows('      - claim: constructor\n        exists: true\n', {})).toBe(false);
    expect(allows('      - claim: toString\n        exists: true\n', {})).toBe(false);
    expect(allows('      - claim: a.__proto__\n        exists: true\n', { a: {} })).toBe(false);
  });
});

describe('evaluate: caller and delegation conditions', () => {
  it('scopes: allOf / anyOf over Identity.scopes (scope or scp)', () => {
    expect(allows('      - scopes: { allOf: [a, b] }\n', { scope: 'b a' })).toBe(true);
    expect(allows('      - scopes: { allOf: [a, b] }\n', { scp: ['a', 'b'] })).toBe(true);
    expect(allows('      - scopes: { allOf: [a, b] }\n', { scope: 'a' })).toBe(false);
    expect(allows('      - scopes: { anyOf: [a, b] }\n', { scope: 'c b' })).toBe(true);
    expect(allows('      - scopes: { anyOf: [a, b] }\n', { scope: 'c' })).toBe(false);
    expect(allows('      - scopes: { anyOf: [a], allOf: [c] }\n', { scope: 'a' })).toBe(false);
  });

  it('issuer and subject: one of a list', () => {
    const iss = `      - issuer: { in: ["${OTHER_ISSUER}"] }\n`;
    expect(allows(iss, {}, OTHER_ISSUER)).toBe(true);
    expect(allows(iss, {}, ISSUER)).toBe(false);
    expect(allows('      - subject: { in: [alice, bob] }\n', { sub: 'bob' })).toBe(true);
    expect(allows('      - subject: { in: [alice, bob] }\n', { sub: 'carol' })).toBe(false);
    // client-credentials tokens without sub: the subject is client_id
    expect(allows('      - subject: { in: [svc-a] }\n', { sub: undefined, client_id: 'svc-a' })).toBe(true);
  });

  it('actor: the immediate actor of the act chain', () => {
    const w = '      - actor: { anyOf: [frontend] }\n';
    expect(allows(w, { act: { sub: 'frontend' } })).toBe(true);
    expect(allows(w, { act: { sub: 'gateway', act: { sub: 'frontend' } } })).toBe(false);
    expect(allows(w, {})).toBe(false);
  });

  it('via: anywhere in the chain; delegated; maxDepth', () => {
    const chain = { act: { sub: 'orders', act: { sub: 'frontend', act: { sub: 'gateway' } } } };
    expect(allows('      - via: { anyOf: [gateway] }\n', chain)).toBe(true);
    expect(allows('      - via: { anyOf: [billing] }\n', chain)).toBe(false);
    expect(allows('      - via: { allOf: [gateway, frontend] }\n', chain)).toBe(true);
    expect(allows('      - via: { allOf: [gateway, billing] }\n', chain)).toBe(false);
    expect(allows('      - delegated: true\n', chain)).toBe(true);
    expect(allows('      - delegated: true\n', {})).toBe(false);
    expect(allows('      - delegated: false\n', {})).toBe(true);
    expect(allows('      - delegated: false\n', chain)).toBe(false);
    expect(allows('      - maxDepth: 3\n', chain)).toBe(true);
    expect(allows('      - maxDepth: 2\n', chain)).toBe(false);
    expect(allows('      - maxDepth: 0\n', {})).toBe(true);
  });

  it('any: holds when one alternative holds; all conditions of a rule must hold', () => {
    const w = '      - any:\n          - delegated: false\n          - actor: { anyOf: [frontend] }\n      - scopes: { allOf: [a] }\n';
    expect(allows(w, { scope: 'a' })).toBe(true);
    expect(allows(w, { scope: 'a', act: { sub: 'frontend' } })).toBe(true);
    expect(allows(w, { scope: 'a', act: { sub: 'evil' } })).toBe(false);
    expect(allows(w, { act: { sub: 'frontend' } })).toBe(false);
  });
});

describe('evaluate: decisions and codes', () => {
  const p = policy(`  - name: readers
    action: allow
    match: { grpc: [/shop.v1.Orders/Get, /shop.v1.Orders/List] }
    when:
      - scopes: { allOf: [orders.read] }
  - name: no-get-for-mallory
    action: deny
    match: { grpc: [/shop.v1.Orders/*] }
    when:
      - subject: { in: [mallory] }
  - name: no-delete
    action: deny
    match: { grpc: [/shop.v1.Orders/Delete] }
  - name: everything-for-admins
    action: allow
    match: { grpc: [/shop.v1.Orders/*] }
    when:
      - claim: role
        equals: admin
  - name: public
    action: allow
    token: optional
    match: { http: [{ methods: [GET], prefix: /public }] }
`);

  it('the first matching allow rule admits the call, with a Permit carrying decision and identity', () => {
    const who = id({ scope: 'orders.read', role: 'admin' });
    const v = evaluate(p, facts(who, GET), NOW);
    expect(v.decision).toMatchObject({ kind: 'allow', rule: 'readers', reason: 'rule "readers": allowed', dryRunDenial: undefined, policyVersion: p.version });
    expect(v.permit).not.toBeNull();
    expect(v.permit?.decision).toBe(v.decision);
    expect(v.permit?.identity).toBe(who);
    expect(Object.isFrozen(v.permit)).toBe(true);
    expect(decide(p, id({ role: 'admin' }))).toMatchObject({ kind: 'allow', rule: 'everything-for-admins' });
  });

  it('deny rules win over allow rules, wherever they are in the file', () => {
    const v = evaluate(p, facts(id({ role: 'admin', scope: 'orders.read' }), grpc('/shop.v1.Orders/Delete')), NOW);
    expect(v.decision).toMatchObject({ kind: 'deny', code: 'ERR_POLICY_DENIED', rule: 'no-delete', reason: 'rule "no-delete": deny rule matched' });
    expect(v.permit).toBeNull();
    expect(decide(p, id({ sub: 'mallory', scope: 'orders.read' }))).toMatchObject({ code: 'ERR_POLICY_DENIED', rule: 'no-get-for-mallory' });
  });

  it('a deny rule without conditions also refuses calls without a token; one with conditions does not apply to them', () => {
    expect(decide(p, null, grpc('/shop.v1.Orders/Delete'))).toMatchObject({ code: 'ERR_POLICY_DENIED', rule: 'no-delete' });
    expect(decide(p, null, GET)).toMatchObject({ code: 'ERR_TOKEN_MISSING' });
  });

  it('no allow rule for the route: ERR_POLICY_NO_MATCH without a rule', () => {
    expect(decide(p, id({ scope: 'orders.read' }), grpc('/shop.v1.Other/Get'))).toMatchObject({
      kind: 'deny', code: 'ERR_POLICY_NO_MATCH', rule: null, reason: 'no allow rule matches this route',
    });
    expect(decide(p, null, http('GET', '/private'))).toMatchObject({ code: 'ERR_POLICY_NO_MATCH', rule: null });
  });

  it('no token, and the rules for the route need one: ERR_TOKEN_MISSING naming the rule', () => {
    expect(decide(p, null, GET)).toMatchObject({ kind: 'deny', code: 'ERR_TOKEN_MISSING', rule: 'readers', reason: 'rule "readers": requires a token' });
  });

  it('token: optional admits calls with and without a token', () => {
    expect(decide(p, null, http('GET', '/public/x'))).toMatchObject({ kind: 'allow', rule: 'public' });
    expect(decide(p, id({}), http('GET', '/public'))).toMatchObject({ kind: 'allow', rule: 'public' });
    expect(decide(p, null, http('POST', '/public/x'))).toMatchObject({ code: 'ERR_POLICY_NO_MATCH' });
  });

  it('an allow rule that failed only on scope: ERR_SCOPE_INSUFFICIENT with the missing scope', () => {
    expect(decide(p, id({ scope: 'orders.write' }))).toMatchObject({
      kind: 'deny', code: 'ERR_SCOPE_INSUFFICIENT', rule: 'readers', reason: 'rule "readers": scope lacks orders.read',
    });
  });

  it('prefers a scope-only failure among several failing rules, else the first rule for the route', () => {
    const q = policy(`  - name: tenant-rule
    action: allow
    match: { grpc: [/shop.v1.Orders/Get] }
    when:
      - claim: tenant
        equals: acme
  - name: scope-rule
    action: allow
    match: { grpc: [/shop.v1.Orders/*] }
    when:
      - claim: scope
        allOf: [orders.write]
  - name: mixed
    action: allow
    match: { grpc: [/shop.v1.Orders/List] }
    when:
      - scopes: { allOf: [orders.read] }
      - claim: tenant
        equals: acme
`);
    expect(decide(q, id({ tenant: 'other' }))).toMatchObject({ code: 'ERR_SCOPE_INSUFFICIENT', rule: 'scope-rule', reason: 'rule "scope-rule": claim scope lacks orders.write' });
    expect(decide(q, id({ scope: 'orders.write', tenant: 'other' }))).toMatchObject({ kind: 'allow', rule: 'scope-rule' });
    // "mixed" fails on scope and tenant; "scope-rule" fails only on scope and comes first
    expect(decide(q, id({}), grpc('/shop.v1.Orders/List'))).toMatchObject({ code: 'ERR_SCOPE_INSUFFICIENT', rule: 'scope-rule' });
    const r = policy(`  - name: mixed
    action: allow
    match: { grpc: [/shop.v1.Orders/List] }
    when:
      - scopes: { allOf: [orders.read] }
      - claim: tenant
        equals: acme
`);
    expect(decide(r, id({}), grpc('/shop.v1.Orders/List'))).toMatchObject({
      code: 'ERR_POLICY_NO_MATCH', rule: 'mixed', reason: 'rule "mixed": scope lacks orders.read',
    });
  });

  it('reasons name claims and policy values, never values from the token', () => {
    const d = decide(withWhen('      - claim: tenant.id\n        in: [acme]\n'), id({ tenant: { id: 'secret-tenant-xyz' } }));
    expect(d).toMatchObject({ code: 'ERR_POLICY_NO_MATCH', reason: 'rule "r": claim tenant.id is not one of [acme]' });
    expect(JSON.stringify(d)).not.toContain('secret-tenant-xyz');
  });

  it('refuses a policy object not made by compilePolicy (fail closed)', () => {
    const { service, version, source, issuers, dryRun, rules } = p;
    const fake: CompiledPolicy = { service, version, source, issuers, dryRun, rules };
    expect(decide(fake, id({ scope: 'orders.read' }))).toMatchObject({ kind: 'deny', code: 'ERR_POLICY_UNAVAILABLE' });
  });
});

describe('evaluate: routes', () => {
  const p = policy(`  - name: svc
    action: allow
    match: { grpc: [/shop.v1.Orders/*] }
  - name: one
    action: allow
    match: { grpc: [/shop.v1.Carts/Get] }
  - name: deny-admin
    action: deny
    match: { grpc: [/shop.v1.Admin/Reset] }
  - name: exact
    action: allow
    match: { http: [{ methods: [GET], exact: /api } ] }
  - name: prefix
    action: allow
    match: { http: [{ prefix: /files }] }
  - name: glob
    action: allow
    match: { http: [{ methods: [PUT], glob: /v1/*/items/** }] }
  - name: grpc-by-http
    action: allow
    match: { http: [{ methods: [POST], prefix: /shop.v1.Legacy }] }
`);
  const who = id({});
  const rule = (req: RequestFacts): string | null => decide(p, who, req).rule;

  it('a service wildcard covers the methods of that service only', () => {
    expect(rule(grpc('/shop.v1.Orders/Anything'))).toBe('svc');
    expect(rule(grpc('/shop.v1.OrdersX/Get'))).toBeNull();
    expect(rule(grpc('/shop.v1/Orders/Get'))).toBeNull();
    expect(rule(grpc('/shop.v1.Carts/Get'))).toBe('one');
    expect(rule(grpc('/shop.v1.Carts/Put'))).toBeNull();
  });

  it('gRPC matchers of allow rules ignore non-gRPC requests; those of deny rules do not', () => {
    expect(rule(http('POST', '/shop.v1.Orders/Get'))).toBeNull();
    expect(decide(p, who, http('POST', '/shop.v1.Admin/Reset'))).toMatchObject({ code: 'ERR_POLICY_DENIED', rule: 'deny-admin' });
  });

  it('HTTP routes apply to gRPC calls (POST /package.Service/Method)', () => {
    expect(rule(grpc('/shop.v1.Legacy/Get'))).toBe('grpc-by-http');
  });

  it('exact, prefix and glob paths with methods', () => {
    expect(rule(http('GET', '/api'))).toBe('exact');
    expect(rule(http('GET', '/api/'))).toBeNull();
    expect(rule(http('HEAD', '/api'))).toBeNull();
    expect(rule(http('DELETE', '/files'))).toBe('prefix');
    expect(rule(http('GET', '/files/a/b'))).toBe('prefix');
    expect(rule(http('GET', '/filesystem'))).toBeNull();
    expect(rule(http('PUT', '/v1/7/items'))).toBe('glob');
    expect(rule(http('PUT', '/v1/7/items/a/b'))).toBe('glob');
    expect(rule(http('PUT', '/v1/items'))).toBeNull();
    expect(rule(http('GET', '/v1/7/items'))).toBeNull();
  });
});

describe('evaluate: dry-run', () => {
  const rules = `  - name: would-block
    action: deny
    dryRun: true
    match: { grpc: [/shop.v1.Orders/Get] }
  - name: readers
    action: allow
    match: { grpc: [/shop.v1.Orders/Get] }
    when:
      - scopes: { allOf: [orders.read] }
  - name: no-list
    action: deny
    match: { grpc: [/shop.v1.Orders/List] }
  - name: tighter-writers
    action: allow
    dryRun: true
    match: { grpc: [/shop.v1.Orders/Put] }
    when:
      - scopes: { allOf: [orders.write] }
  - name: writers
    action: allow
    match: { grpc: [/shop.v1.Orders/Put] }
    when:
      - claim: legacy
        equals: true
`;

  it('a dry-run deny rule records its denial and lets evaluation go on', () => {
    const p = policy(rules);
    expect(decide(p, id({ scope: 'orders.read' }))).toEqual({
      kind: 'allow',
      rule: 'readers',
      reason: 'rule "readers": allowed',
      policyVersion: p.version,
      dryRunDenial: { code: 'ERR_POLICY_DENIED', rule: 'would-block', reason: 'rule "would-block": deny rule matched (dry-run)' },
    });
    // and when no allow rule matches, the real refusal stands
    expect(decide(p, id({}))).toMatchObject({ kind: 'deny', code: 'ERR_SCOPE_INSUFFICIENT', rule: 'readers' });
  });

  it('a dry-run allow rule admits what its conditions or token requirement refuse, recording the refusal', () => {
    // The tightened rule replaces the old one, in dry-run: the only allow rule on its route.
    const p = policy(rules.replace(/ {2}- name: writers\n[^]*$/, ''));
    const put = grpc('/shop.v1.Orders/Put');
    expect(decide(p, id({}), put)).toMatchObject({
      kind: 'allow',
      rule: 'tighter-writers',
      dryRunDenial: { code: 'ERR_SCOPE_INSUFFICIENT', rule: 'tighter-writers', reason: 'rule "tighter-writers": scope lacks orders.write' },
    });
    expect(decide(p, null, put)).toMatchObject({ kind: 'allow', rule: 'tighter-writers', dryRunDenial: { code: 'ERR_TOKEN_MISSING' } });
    expect(decide(p, id({ scope: 'orders.write' }), put)).toMatchObject({ kind: 'allow', rule: 'tighter-writers', dryRunDenial: undefined });
  });

  it('a dry-run allow rule never admits a call an enforced allow rule on its route refuses (regression: it let every such call through)', () => {
    const p = policy(rules);
    const put = grpc('/shop.v1.Orders/Put');
    // writers (enforced) refuses these: its refusal stands, the dry-run rule admits nothing
    expect(decide(p, id({}), put)).toMatchObject({ kind: 'deny', code: 'ERR_SCOPE_INSUFFICIENT' });
    expect(decide(p, null, put)).toMatchObject({ kind: 'deny', code: 'ERR_TOKEN_MISSING' });
    // what either rule admits is admitted, without a dry-run record
    expect(decide(p, id({ legacy: true }), put)).toMatchObject({ kind: 'allow', rule: 'writers', dryRunDenial: undefined });
    expect(decide(p, id({ scope: 'orders.write' }), put)).toMatchObject({ kind: 'allow', rule: 'tighter-writers', dryRunDenial: undefined });
  });

  it('mode: dry-run turns every final refusal into an allow by (dry-run) that records it', () => {
    const p = policy(rules, 'mode: dry-run\n');
    expect(p.dryRun).toBe(true);
    const list = evaluate(p, facts(id({}), grpc('/shop.v1.Orders/List')), NOW);
    expect(list.permit).not.toBeNull();
    expect(list.decision).toMatchObject({
      kind: 'allow',
      rule: DRY_RUN_RULE,
      dryRunDenial: { code: 'ERR_POLICY_DENIED', rule: 'no-list', reason: 'rule "no-list": deny rule matched' },
    });
    expect(decide(p, id({}), grpc('/shop.v1.Nope/X'))).toMatchObject({ kind: 'allow', rule: '(dry-run)', dryRunDenial: { code: 'ERR_POLICY_NO_MATCH', rule: null } });
    expect(decide(p, null)).toMatchObject({ kind: 'allow', rule: '(dry-run)', dryRunDenial: { code: 'ERR_TOKEN_MISSING', rule: 'readers' } });
    // an allowed call is just allowed
    expect(decide(p, id({ scope: 'orders.read' }))).toMatchObject({ kind: 'allow', rule: 'readers' });
  });

  it('the same decisions are refusals with mode: enforce', () => {
    const p = policy(rules);
    expect(decide(p, id({}), grpc('/shop.v1.Orders/List'))).toMatchObject({ kind: 'deny', code: 'ERR_POLICY_DENIED' });
    expect(decide(p, id({}), grpc('/shop.v1.Nope/X'))).toMatchObject({ kind: 'deny', code: 'ERR_POLICY_NO_MATCH' });
  });
});
