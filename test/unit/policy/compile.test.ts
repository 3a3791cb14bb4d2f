import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, formatIssue } from '../../../src/errors/ward-error.ts';
import { canonicalJson } from '../../../src/policy/compile.ts';
import { evaluate } from '../../../src/policy/evaluate.ts';
import { explain } from '../../../src/policy/explain.ts';
import { parsePolicyText } from '../../../src/policy/load.ts';
import type { CompiledPolicy, Facts } from '../../../src/policy/model.ts';
import { facts, grpc, http, id, ONE_ISSUER_HEAD } from './helpers.ts';

const A = `${ONE_ISSUER_HEAD}  - name: readers
    action: allow
    match: { grpc: [/a.B/Get] }
    when: [{ scopes: { allOf: [r] } }]
`;

// Same content: other key order, comments, flow vs block style, defaults spelled out.
const A_REORDERED = `# a comment
kind: Policy
rules:
  - when:
      - scopes:
          allOf: [r]   # trailing comment
    match:
      grpc:
        - /a.B/Get
    action: allow
    name: readers
    token: required
    dryRun: false
service: orders
mode: enforce
apiVersion: ward.dev/v1
issuers:
  - audiences: [urn:ward:orders]
    issuer: https://idp.example.com
    discovery: true
    algorithms: [RS256, ES256, PS256, EdDSA]
    requireAtJwtType: true
    introspection: false
    requiredClaims: []
`;

describe('compilePolicy: version', () => {
  it('is the same for the same content whatever the key order, comments, style or spelled-out defaults', () => {
    const a = parsePolicyText(A, 'a.yaml');
    const b = parsePolicyText(A_REORDERED, 'b.yaml');
    expect(a.version).toMatch(/^[0-9a-f]{64}$/);
    expect(b.version).toBe(a.version);
  });

  it('changes with any change of meaning', () => {
    const a = parsePolicyText(A, 'a.yaml').version;
    expect(parsePolicyText(A.replace('allOf: [r]', 'allOf: [w]'), 'a.yaml').version).not.toBe(a);
    expect(parsePolicyText(A.replace('service: orders', 'service: orders2'), 'a.yaml').version).not.toBe(a);
    expect(parsePolicyText(`${A}mode: dry-run\n`, 'a.yaml').version).not.toBe(a);
    // rule order matters (first allow wins)
    const two = `${A}  - name: other\n    action: allow\n    match: { grpc: [/a.B/Put] }\n`;
    const swapped = A.replace('rules:\n', 'rules:\n  - name: other\n    action: allow\n    match: { grpc: [/a.B/Put] }\n');
    expect(parsePolicyText(two, 'a.yaml').version).not.toBe(parsePolicyText(swapped, 'a.yaml').version);
  });

  it('canonical JSON sorts keys at every level and keeps array order', () => {
    expect(canonicalJson({ b: 1, a: { d: [2, 1], c: 'x' }, u: undefined })).toBe('{"a":{"c":"x","d":[2,1]},"b":1}');
  });
});

describe('compilePolicy: result', () => {
  it('is frozen, with issuers as IssuerTrust', () => {
    const p = parsePolicyText(A, 'a.yaml');
    expect(Object.isFrozen(p)).toBe(true);
    expect(Object.isFrozen(p.issuers)).toBe(true);
    expect(p.issuers).toEqual([
      {
        issuer: 'https://idp.example.com',
        audiences: ['urn:ward:orders'],
        jwksUri: undefined,
        discovery: true,
        algorithms: ['RS256', 'ES256', 'PS256', 'EdDSA'],
        requireAtJwtType: true,
        hmacSecret: undefined,
        introspection: false,
        requireIntrospectedAudience: true,
        requiredClaims: [],
      },
    ]);
    expect(p.source).toBe('a.yaml');
    expect(p.dryRun).toBe(false);
  });

  const hmac = (secretField: string): string => `apiVersion: ward.dev/v1
kind: Policy
service: orders
issuers:
  - issuer: https://idp.example.com
    audiences: [a]
    algorithms: [HS256]
    ${secretField}
`;

  it('resolves an HMAC secret from a file next to the policy (trailing newline removed)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ward-hmac-'));
    const secret = 'k'.repeat(40);
    writeFileSync(join(dir, 'hmac.key'), `${secret}\n`);
    const p = parsePolicyText(hmac('hmacSecretFile: hmac.key'), join(dir, 'policy.yaml'));
    expect(Buffer.from(p.issuers[0]?.hmacSecret ?? []).toString()).toBe(secret);
  });

  it('resolves an HMAC secret from the environment given to it', () => {
    const p = parsePolicyText(hmac('hmacSecretEnv: WARD_TEST_HMAC'), 'p.yaml', { env: { WARD_TEST_HMAC: 's'.repeat(32) } });
    expect(p.issuers[0]?.hmacSecret).toEqual(new Uint8Array(Buffer.from('s'.repeat(32))));
  });

  it('drops trailing newlines of an HMAC secret from the environment, as from a file (regression: a Secret made --from-file keyed HS256 with its newline)', () => {
    const p = parsePolicyText(hmac('hmacSecretEnv: WARD_TEST_HMAC'), 'p.yaml', { env: { WARD_TEST_HMAC: `${'s'.repeat(32)}\r\n` } });
    expect(p.issuers[0]?.hmacSecret).toEqual(new Uint8Array(Buffer.from('s'.repeat(32))));
    expect(() => parsePolicyText(hmac('hmacSecretEnv: WARD_TEST_HMAC'), 'p.yaml', { env: { WARD_TEST_HMAC: '\n' } })).toThrow(/environment variable WARD_TEST_HMAC is not set/);
  });

  it('refuses a missing or short secret at the field that names it', () => {
    const errs = (text: string, env: Record<string, string> = {}): string[] => {
      try {
        parsePolicyText(text, '/nonexistent/p.yaml', { env });
      } catch (err) {
        if (err instanceof ConfigError) return err.issues.map(formatIssue);
        throw err;
      }
      return [];
    };
    expect(errs(hmac('hmacSecretEnv: WARD_TEST_HMAC'))).toEqual(['/nonexistent/p.yaml:8:20: issuers[0].hmacSecretEnv: environment variable WARD_TEST_HMAC is not set']);
    expect(errs(hmac('hmacSecretEnv: WARD_TEST_HMAC'), { WARD_TEST_HMAC: 'short' })).toEqual([
      '/nonexistent/p.yaml:8:20: issuers[0].hmacSecretEnv: HMAC secret is 5 bytes; HS256 needs at least 32 (RFC 7518 §3.2: as long as the hash)',
    ]);
    // The longest hash among the issuer's HS algorithms decides (regression: 32 bytes passed for HS512).
    const hs512 = hmac('hmacSecretEnv: WARD_TEST_HMAC').replace('algorithms: [HS256]', 'algorithms: [HS256, HS512]');
    expect(errs(hs512, { WARD_TEST_HMAC: 'k'.repeat(32) })).toEqual([
      '/nonexistent/p.yaml:8:20: issuers[0].hmacSecretEnv: HMAC secret is 32 bytes; HS512 needs at least 64 (RFC 7518 §3.2: as long as the hash)',
    ]);
    expect(errs(hs512, { WARD_TEST_HMAC: 'k'.repeat(64) })).toEqual([]);
    expect(errs(hmac('hmacSecretEnv: WARD_TEST_HMAC').replace('algorithms: [HS256]', 'algorithms: [HS384]'), { WARD_TEST_HMAC: 'k'.repeat(47) })[0]).toContain('HS384 needs at least 48');
    expect(errs(hmac('hmacSecretFile: nope.key'))).toEqual(['/nonexistent/p.yaml:8:21: issuers[0].hmacSecretFile: cannot read /nonexistent/nope.key: ENOENT']);
  });
});

/**
 * The evaluator finds candidate rules through its index (Maps by gRPC method and service, HTTP
 * buckets by method); explain() checks every rule linearly. On random policies and requests
 * both must agree on which rule decides.
 */
describe('compilePolicy: route index agrees with the linear reference', () => {
  function rng(seed: number): () => number {
    let s = seed >>> 0;
    return () => {
      s = (s * 1664525 + 1013904223) >>> 0;
      return s / 2 ** 32;
    };
  }

  it('on 300 random policies × 40 requests', () => {
    const rand = rng(12345);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
    const services = ['p.A', 'p.B', 'q.A'];
    const methods = ['Get', 'Put', 'List'];
    const segs = ['a', 'b', 'api', 'p.A'];
    const httpMethods = ['GET', 'POST', 'PUT'];
    const path = (): string => `/${Array.from({ length: 1 + Math.floor(rand() * 3) }, () => pick(segs)).join('/')}`;
    const globPath = (): string => `/${Array.from({ length: 1 + Math.floor(rand() * 3) }, () => pick([...segs, '*', '**'])).join('/')}`;

    let decided = 0;
    for (let i = 0; i < 300; i++) {
      const rules: string[] = [];
      const n = 1 + Math.floor(rand() * 8);
      for (let r = 0; r < n; r++) {
        const grpcMs: string[] = [];
        const https: string[] = [];
        if (rand() < 0.6) for (let k = 0; k < 1 + Math.floor(rand() * 2); k++) grpcMs.push(`/${pick(services)}/${rand() < 0.3 ? '*' : pick(methods)}`);
        if (grpcMs.length === 0 || rand() < 0.4) {
          const kind = pick(['exact', 'prefix', 'glob']);
          const p = kind === 'glob' ? globPath() : path();
          const ms = rand() < 0.5 ? `methods: [${pick(httpMethods)}], ` : '';
          https.push(`{ ${ms}${kind}: "${p}" }`);
        }
        const action = rand() < 0.3 ? 'deny' : 'allow';
        const when = rand() < 0.4 ? `\n    when: [{ scopes: { anyOf: [${pick(['s1', 's2'])}] } }]` : '';
        const token = action === 'allow' && when === '' && rand() < 0.3 ? '\n    token: optional' : '';
        const match = [grpcMs.length > 0 ? `grpc: [${[...new Set(grpcMs)].join(', ')}]` : '', https.length > 0 ? `http: [${https.join(', ')}]` : '']
          .filter((x) => x !== '')
          .join(', ');
        rules.push(`  - name: r${r}\n    action: ${action}\n    match: { ${match} }${token}${when}\n`);
      }
      const p: CompiledPolicy = parsePolicyText(
        `apiVersion: ward.dev/v1\nkind: Policy\nservice: s\nissuers: [{ issuer: "https://i.example", audiences: [a] }]\nrules:\n${rules.join('')}`,
        `random-${i}.yaml`,
      );
      for (let q = 0; q < 40; q++) {
        const req = rand() < 0.5 ? grpc(`/${pick(services)}/${pick(methods)}`) : http(pick(httpMethods), path());
        const who = rand() < 0.2 ? null : id({ scope: pick(['s1', 's2', 's1 s2', '']) }, 'https://i.example');
        const f: Facts = facts(who, req);
        const { verdict, rules: trace } = explain(p, f, 0);
        // the reference: first applying non-dry deny rule, else first applying allow rule
        const denyRule = trace.find((t) => t.action === 'deny' && t.applies);
        const allowRule = trace.find((t) => t.action === 'allow' && t.applies);
        const firstRouted = trace.find((t) => t.action === 'allow' && t.routeMatched);
        const d = verdict.decision;
        if (denyRule !== undefined) {
          expect(d).toMatchObject({ kind: 'deny', code: 'ERR_POLICY_DENIED', rule: denyRule.name });
        } else if (allowRule !== undefined) {
          expect(d).toMatchObject({ kind: 'allow', rule: allowRule.name });
          decided++;
        } else if (firstRouted === undefined) {
          expect(d).toMatchObject({ kind: 'deny', code: 'ERR_POLICY_NO_MATCH', rule: null });
        } else {
          expect(d.kind).toBe('deny');
          expect(trace.some((t) => t.action === 'allow' && t.routeMatched && t.name === d.rule)).toBe(true);
        }
        expect(evaluate(p, f, 0).decision).toEqual(d);
      }
    }
    // the generator must produce allows, or the comparison proves little
    expect(decided).toBeGreaterThan(500);
  });
});
