import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors/ward-error.ts';
import { normalizeTarget } from '../../src/lib/normalize.ts';
import { evaluate } from '../../src/policy/evaluate.ts';
import { parsePolicyText } from '../../src/policy/load.ts';
import type { CompiledPolicy, Facts, Identity } from '../../src/policy/model.ts';

/**
 * Property-based fuzzing of the policy compiler and evaluator against an independent reference
 * model written from docs/policy.md (not from ward's code): deny wins, first allow in file
 * order, default deny, `token: optional` only without conditions. Plus: the compiler turns any
 * document into a policy or a ConfigError (nothing else escapes), and a raw request target that
 * resolves into a denied prefix is never allowed, whatever its spelling.
 */

const LIMIT = { numRuns: 400, interruptAfterTimeLimit: 4000, markInterruptAsFailure: false } as const;

// ---- generated policies

interface GenHttp {
  readonly methods?: readonly string[];
  readonly exact?: string;
  readonly prefix?: string;
  readonly glob?: string;
}
type GenCond = { readonly scopes: { readonly allOf?: readonly string[]; readonly anyOf?: readonly string[] } } | { readonly claim: string; readonly equals: string };
interface GenRule {
  readonly name: string;
  readonly action: 'allow' | 'deny';
  readonly token?: 'optional';
  readonly match: { readonly grpc?: readonly string[]; readonly http?: readonly GenHttp[] };
  readonly when: readonly GenCond[];
}

const SEGS = ['a', 'b', 'api', 'internal'];
const GRPC = ['/p.S/Get', '/p.S/Put', '/q.T/Get'];
const seg = fc.constantFrom(...SEGS);
const path = fc.array(seg, { minLength: 1, maxLength: 3 }).map((s) => `/${s.join('/')}`);
const glob = fc.array(fc.constantFrom(...SEGS, '*', '**'), { minLength: 1, maxLength: 3 }).map((s) => `/${s.join('/')}`);
const httpMatch: fc.Arbitrary<GenHttp> = fc
  .tuple(fc.option(fc.subarray(['GET', 'POST'], { minLength: 1 }), { nil: undefined }), fc.oneof(path.map((p) => ({ exact: p })), path.map((p) => ({ prefix: p })), glob.map((g) => ({ glob: g }))))
  .map(([methods, m]) => (methods === undefined ? m : { methods, ...m }));
const cond: fc.Arbitrary<GenCond> = fc.oneof(
  fc.subarray(['s1', 's2'], { minLength: 1 }).map((allOf) => ({ scopes: { allOf } })),
  fc.subarray(['s1', 's2'], { minLength: 1 }).map((anyOf) => ({ scopes: { anyOf } })),
  fc.constantFrom('acme', 'globex').map((equals) => ({ claim: 'tenant.id', equals })),
);
const rule = (i: number): fc.Arbitrary<GenRule> =>
  fc
    .record({
      action: fc.constantFrom<'allow' | 'deny'>('allow', 'allow', 'deny'),
      grpc: fc.subarray([...GRPC, '/p.S/*']),
      http: fc.array(httpMatch, { maxLength: 2 }),
      when: fc.array(cond, { maxLength: 2 }),
      optional: fc.boolean(),
    })
    .filter((r) => r.grpc.length > 0 || r.http.length > 0)
    .map((r) => ({
      name: `r${i}`,
      action: r.action,
      ...(r.action === 'allow' && r.when.length === 0 && r.optional ? { token: 'optional' as const } : {}),
      match: { ...(r.grpc.length > 0 ? { grpc: r.grpc } : {}), ...(r.http.length > 0 ? { http: r.http } : {}) },
      when: r.when,
    }));
const rules = fc.integer({ min: 1, max: 6 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => rule(i))));

function policyText(rs: readonly GenRule[]): string {
  return JSON.stringify({
    apiVersion: 'ward.dev/v1',
    kind: 'Policy',
    service: 's',
    issuers: [{ issuer: 'https://i.example', audiences: ['a'] }],
    rules: rs,
  });
}

// ---- generated calls

const identity: fc.Arbitrary<Identity | null> = fc.option(
  fc.record({ scopes: fc.subarray(['s1', 's2', 's3']), tenant: fc.constantFrom('acme', 'globex', undefined) }).map(({ scopes, tenant }) => ({
    issuer: 'https://i.example',
    subject: 'u',
    claims: { sub: 'u', scope: scopes.join(' '), ...(tenant === undefined ? {} : { tenant: { id: tenant } }) },
    tokenKind: 'jwt' as const,
    expiresAt: 4e9,
    actors: [],
    scopes: new Set(scopes),
  })),
  { nil: null },
);
const request = fc.oneof(
  fc.constantFrom(...GRPC, '/p.S/Other').map((m) => ({ protocol: 'grpc' as const, method: 'POST', path: m, grpcMethod: m })),
  fc.tuple(fc.constantFrom('GET', 'POST', 'PUT'), path).map(([method, p]) => ({ protocol: 'http' as const, method, path: p, grpcMethod: undefined })),
);

// ---- the reference model

function refGlob(pattern: readonly string[], segs: readonly string[]): boolean {
  if (pattern.length === 0) return segs.length === 0;
  const [head, ...rest] = pattern;
  if (head === '**') {
    for (let k = 0; k <= segs.length; k++) if (refGlob(rest, segs.slice(k))) return true;
    return false;
  }
  if (segs.length === 0) return false;
  if (head === '*' ? segs[0] === '' : head !== segs[0]) return false;
  return refGlob(rest, segs.slice(1));
}

function refHttp(m: GenHttp, method: string, p: string): boolean {
  if (m.methods !== undefined && !m.methods.includes(method)) return false;
  if (m.exact !== undefined) return p === m.exact;
  if (m.prefix !== undefined) return p === m.prefix || p.startsWith(`${m.prefix}/`);
  return refGlob((m.glob as string).slice(1).split('/'), p.slice(1).split('/'));
}

function refRoute(r: GenRule, f: Facts): boolean {
  const req = f.request;
  const key = req.protocol === 'grpc' ? req.grpcMethod : r.action === 'deny' ? req.path : undefined;
  if (key !== undefined) {
    for (const g of r.match.grpc ?? []) {
      if (g === key) return true;
      if (g.endsWith('/*') && key.startsWith(g.slice(0, -1)) && !key.slice(g.length - 1).includes('/')) return true;
    }
  }
  return (r.match.http ?? []).some((m) => refHttp(m, req.method, req.path));
}

function refCond(c: GenCond, id: Identity): boolean {
  if ('scopes' in c) {
    if (c.scopes.allOf !== undefined && !c.scopes.allOf.every((s) => id.scopes.has(s))) return false;
    if (c.scopes.anyOf !== undefined && !c.scopes.anyOf.some((s) => id.scopes.has(s))) return false;
    return true;
  }
  return (id.claims['tenant'] as { id?: string } | undefined)?.id === c.equals;
}

function refApplies(r: GenRule, f: Facts): boolean {
  if (!refRoute(r, f)) return false;
  const id = f.identity;
  if (id === null) return r.when.length === 0 && (r.action === 'deny' || r.token === 'optional');
  return r.when.every((c) => refCond(c, id));
}

function reference(rs: readonly GenRule[], f: Facts): { kind: 'allow' | 'deny'; rule: string | null; byDenyRule: boolean } {
  const d = rs.find((r) => r.action === 'deny' && refApplies(r, f));
  if (d !== undefined) return { kind: 'deny', rule: d.name, byDenyRule: true };
  const a = rs.find((r) => r.action === 'allow' && refApplies(r, f));
  if (a !== undefined) return { kind: 'allow', rule: a.name, byDenyRule: false };
  return { kind: 'deny', rule: null, byDenyRule: false };
}

describe('policy compiler and evaluator', () => {
  it('evaluate agrees with the reference model on random policies and calls (deny wins, first allow, default deny)', () => {
    let allows = 0;
    fc.assert(
      fc.property(rules, fc.array(fc.tuple(identity, request), { minLength: 1, maxLength: 25 }), (rs, calls) => {
        const p = parsePolicyText(policyText(rs), 'fuzz.json');
        for (const [id, req] of calls) {
          const f: Facts = { identity: id, request: req };
          const want = reference(rs, f);
          const got = evaluate(p, f, 0);
          expect(got.decision.kind).toBe(want.kind);
          if (want.kind === 'allow') {
            allows++;
            expect(got.decision.rule).toBe(want.rule);
            expect(got.permit).not.toBeNull();
          } else {
            expect(got.permit).toBeNull();
            if (want.byDenyRule) expect(got.decision).toMatchObject({ code: 'ERR_POLICY_DENIED', rule: want.rule });
            else expect(got.decision.kind === 'deny' ? got.decision.code : '').not.toBe('ERR_POLICY_DENIED');
          }
        }
      }),
      LIMIT,
    );
    expect(allows).toBeGreaterThan(50); // the generator must exercise allows, or this proves little
  });

  it('is pure: same verdict twice, facts untouched', () => {
    fc.assert(
      fc.property(rules, identity, request, (rs, id, req) => {
        const p = parsePolicyText(policyText(rs), 'fuzz.json');
        const f: Facts = Object.freeze({ identity: id, request: Object.freeze({ ...req }) });
        const before = JSON.stringify(f, (_k, v: unknown) => (v instanceof Set ? [...v] : v));
        const a = evaluate(p, f, 0);
        const b = evaluate(p, f, 1e12);
        expect(b).toEqual(a);
        expect(JSON.stringify(f, (_k, v: unknown) => (v instanceof Set ? [...v] : v))).toBe(before);
      }),
      LIMIT,
    );
  });

  it('a mode: dry-run policy allows everything and records exactly the denials enforcement would make', () => {
    fc.assert(
      fc.property(rules, identity, request, (rs, id, req) => {
        const enforcing = parsePolicyText(policyText(rs), 'fuzz.json');
        const dry = parsePolicyText(policyText(rs).replace('"kind":"Policy"', '"kind":"Policy","mode":"dry-run"'), 'fuzz.json');
        const f: Facts = { identity: id, request: req };
        const e = evaluate(enforcing, f, 0);
        const d = evaluate(dry, f, 0);
        expect(d.decision.kind).toBe('allow');
        if (d.decision.kind !== 'allow') return;
        if (e.decision.kind === 'deny') expect(d.decision.dryRunDenial?.code).toBe(e.decision.code);
        else expect(d.decision.dryRunDenial).toBeUndefined();
      }),
      LIMIT,
    );
  });

  it('never throws on identities with arbitrary claim sets (prototype names, deep nesting, odd types)', () => {
    const p = parsePolicyText(
      policyText([
        { name: 'c', action: 'allow', match: { http: [{ prefix: '/' }] }, when: [{ claim: 'tenant.id', equals: 'acme' }] },
        { name: 'd', action: 'deny', match: { http: [{ prefix: '/internal' }] }, when: [{ scopes: { anyOf: ['s1'] } }] },
      ]),
      'fuzz.json',
    );
    const claimKey = fc.constantFrom('tenant', 'id', '__proto__', 'constructor', 'prototype', 'toString', 'scope', 'hasOwnProperty');
    const claims = fc.dictionary(claimKey, fc.jsonValue({ maxDepth: 4 }));
    fc.assert(
      fc.property(claims, path, (c, p2) => {
        const id: Identity = { issuer: 'https://i.example', subject: 'u', claims: c, tokenKind: 'jwt', expiresAt: 4e9, actors: [], scopes: new Set() };
        const v = evaluate(p, { identity: id, request: { protocol: 'http', method: 'GET', path: p2, grpcMethod: undefined } }, 0);
        if (v.decision.kind === 'allow') expect((c['tenant'] as { id?: unknown } | null | undefined)?.id).toBe('acme');
      }),
      LIMIT,
    );
  });

  it('compiles any document to a policy or a ConfigError: nothing else escapes', () => {
    const anyDoc = fc.oneof(
      fc.jsonValue({ maxDepth: 5 }).map((v) => JSON.stringify(v)),
      rules.map((rs) => policyText(rs)).chain((t) => fc.nat(t.length).map((cut) => t.slice(0, cut))),
      rules.map((rs) => policyText(rs).replace('"rules"', '"__proto__":{"polluted":1},"rules"')),
      fc.string({ maxLength: 120 }),
    );
    fc.assert(
      fc.property(anyDoc, (text) => {
        try {
          const p: CompiledPolicy = parsePolicyText(text, 'fuzz.yaml');
          expect(p.service).toBe('s');
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError);
        }
        expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
      }),
      LIMIT,
    );
  });
});

describe('normalizer + policy: no spelling of a denied route is allowed', () => {
  // allow everything under /api, deny /api/internal/**
  const p = parsePolicyText(
    policyText([
      { name: 'deny-internal', action: 'deny', match: { http: [{ prefix: '/api/internal' }] }, when: [] },
      { name: 'api', action: 'allow', token: 'optional', match: { http: [{ prefix: '/api' }] }, when: [] },
    ]),
    'fuzz.json',
  );
  const piece = fc.constantFrom('/', '//', '.', '..', '%2e', '%2E', '%2e%2e', 'api', 'internal', '%69nternal', 'a', '%61pi', 'x', '%2f', '%5c', ';', '%00', '%25');
  it('a target whose resolved path is under /api/internal is refused or denied', () => {
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 12 }), fc.boolean(), (xs, merge) => {
        const target = `/${xs.join('')}`;
        const n = normalizeTarget(target, { mergeSlashes: merge, rejectEscapedSlashes: true });
        if (!n.ok) return;
        // How an app would resolve it: decode unreserved escapes, resolve dot segments (WHATWG),
        // collapse slashes when the sidecar does.
        let resolved = new URL(`http://x${target.replace(/%2e/gi, '.').replace(/%69/gi, 'i').replace(/%61/gi, 'a')}`).pathname;
        if (merge) resolved = resolved.replace(/\/{2,}/g, '/');
        const v = evaluate(p, { identity: null, request: { protocol: 'http', method: 'GET', path: n.path, grpcMethod: undefined } }, 0);
        if (resolved === '/api/internal' || resolved.startsWith('/api/internal/')) expect(v.decision.kind).toBe('deny');
        // and the path forwarded is the one judged
        if (v.decision.kind === 'allow') expect(n.path.startsWith('/api')).toBe(true);
      }),
      { ...LIMIT, numRuns: 3000 },
    );
  });
});
