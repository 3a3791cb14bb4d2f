import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/errors/ward-error.ts';
import { evaluate } from '../../../src/policy/evaluate.ts';
import { parsePolicyText } from '../../../src/policy/load.ts';
import { facts, http, id, ONE_ISSUER_HEAD, policy } from './helpers.ts';

/**
 * Policy input that loaded with a meaning other than the one written (found in review, sixteenth
 * session): explicit YAML tags the loader could not resolve, scope values that can never be a
 * token's scope, and positions shifted by a byte order mark.
 */

function refusal(text: string): ConfigError {
  try {
    parsePolicyText(text, 'p.yaml', { env: {} });
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('the policy loaded');
}

describe('explicit YAML tags', () => {
  it('a tag the loader cannot resolve is refused at its line, not read as the plain string', () => {
    // `!!bool yes` is YAML 1.1: under 1.2 it was a warning and the string "yes", so this deny
    // rule compared `suspended` with "yes" and never fired.
    const text = `${ONE_ISSUER_HEAD}  - name: no-suspended
    action: deny
    match: { grpc: [/ward.demo.v1.Orders/CreateOrder] }
    when:
      - claim: suspended
        equals: !!bool yes
`;
    const e = refusal(text);
    expect(e.issues[0]).toMatchObject({ file: 'p.yaml', line: 13 });
    expect(e.issues[0]?.message).toMatch(/tag/i);
  });

  it.each(['!!float 1', '!level 1', '!!bool on'])('%s is refused too', (v) => {
    const e = refusal(`${ONE_ISSUER_HEAD}  - name: r\n    action: deny\n    match: { grpc: [/a.B/C] }\n    when: [{ claim: level, equals: ${v} }]\n`);
    expect(e.issues[0]?.line).toBe(11);
  });

  it('tags the loader resolves still load as what they say', () => {
    const p = policy(`  - name: r
    action: deny
    match: { http: [{ prefix: /a }] }
    when: [{ claim: level, equals: !!int "3" }]
  - name: all
    action: allow
    match: { http: [{ prefix: /a }] }
`);
    expect(evaluate(p, facts(id({ level: 3 }), http('GET', '/a')), 0).decision.kind).toBe('deny');
    expect(evaluate(p, facts(id({ level: '3' }), http('GET', '/a')), 0).decision.kind).toBe('allow');
  });
});

describe('scope values', () => {
  it.each(['orders.admin orders.root', 'orders.admin\torders.root', 'a"b', 'a\\\\b'])('%j is not one scope: refused at its position', (v) => {
    const text = `${ONE_ISSUER_HEAD}  - name: no-admins
    action: deny
    match: { grpc: [/a.B/C] }
    when: [{ scopes: { anyOf: [ok, ${JSON.stringify(v)}] } }]
`;
    const e = refusal(text);
    expect(e.issues).toHaveLength(1);
    expect(e.issues[0]).toMatchObject({ path: 'rules[0].when[0].scopes.anyOf[1]', line: 11 });
    expect(e.issues[0]?.message).toContain('is not one scope (RFC 6749 §3.3');
  });

  it('in allOf as well; scope-tokens of any printable character but space, quote and backslash load', () => {
    expect(refusal(`${ONE_ISSUER_HEAD}  - name: r\n    action: allow\n    match: { grpc: [/a.B/C] }\n    when: [{ scopes: { allOf: ["a b"] } }]\n`).issues[0]?.path).toBe(
      'rules[0].when[0].scopes.allOf[0]',
    );
    expect(() => policy(`  - name: r\n    action: allow\n    match: { grpc: [/a.B/C] }\n    when: [{ scopes: { allOf: ["https://api.example.com/orders:read!", "a~b"] } }]\n`)).not.toThrow();
  });
});

describe('a UTF-8 byte order mark', () => {
  it('does not shift the columns of line 1', () => {
    const body = 'apiVersion: ward.dev/v2\nkind: Policy\nservice: orders\n';
    expect(refusal(body).issues[0]).toMatchObject({ line: 1, column: 13 });
    expect(refusal(`\uFEFF${body}`).issues[0]).toMatchObject({ line: 1, column: 13 });
  });

  it('nor of semantic errors found after the schema', () => {
    const text = `${ONE_ISSUER_HEAD}  - name: r\n    action: allow\n    match: { grpc: [/a.B/C] }\n  - name: r\n    action: allow\n    match: { grpc: [/a.B/D] }\n`;
    const plain = refusal(text).issues[0];
    expect(refusal(`\uFEFF${text}`).issues[0]).toEqual(plain);
  });
});

describe('docs/policy-guide.md', () => {
  it('names the codes the evaluator gives a refused call', () => {
    const guide = readFileSync(fileURLToPath(new URL('../../../docs/policy-guide.md', import.meta.url)), 'utf8').replace(/\s+/g, ' ');
    const p = policy(`  - name: invoices
    action: allow
    match:
      http: [{ methods: [GET], prefix: /api/invoices }]
    when:
      - scopes: { allOf: [billing.read] }
      - claim: tenant.plan
        in: [pro, enterprise]
  - name: no-archive
    action: deny
    match:
      http: [{ prefix: /api/archive }]
`);
    const other = evaluate(p, facts(id({ scope: 'billing.read', tenant: { plan: 'free' } }), http('GET', '/api/invoices')), 0).decision;
    const denied = evaluate(p, facts(id({}), http('GET', '/api/archive')), 0).decision;
    expect(other).toMatchObject({ kind: 'deny', code: 'ERR_POLICY_NO_MATCH' });
    expect(denied).toMatchObject({ kind: 'deny', code: 'ERR_POLICY_DENIED' });
    expect(guide).toContain('(none for its route, or one whose other conditions fail) is refused with `ERR_POLICY_NO_MATCH`');
    expect(guide).toContain('a call a deny rule matches with `ERR_POLICY_DENIED`');
  });
});
