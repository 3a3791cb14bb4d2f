/**
 * evaluate() throughput on a 50-rule policy: 10 deny rules, 40 allow rules over gRPC methods,
 * service wildcards, HTTP exact/prefix/glob routes, claim/scope/delegation conditions.
 *
 *   node scripts/bench/micro-policy.ts [iterations per case, default 200000]
 *
 * Prints ops/s and ns/op per case, plus heap growth per op (allocation watch). Bounded
 * iterations; no assertions: numbers are for humans and for comparing commits.
 */
import { evaluate } from '../../src/policy/evaluate.ts';
import { identityFromClaims } from '../../src/policy/identity.ts';
import { parsePolicyText } from '../../src/policy/load.ts';
import type { Facts, RequestFacts } from '../../src/policy/model.ts';

const ISSUER = 'https://idp.example.com';

function buildPolicy(): string {
  const rules: string[] = [];
  for (let i = 0; i < 10; i++) {
    rules.push(`  - name: deny-${i}
    action: deny
    match: { grpc: [/bench.v1.Svc${i}/Admin${i}], http: [{ methods: [DELETE], prefix: /admin/${i} }] }
    when: [{ subject: { in: [mallory-${i}] } }]
`);
  }
  for (let i = 0; i < 40; i++) {
    const svc = `bench.v1.Svc${i % 10}`;
    const kind = i % 4;
    const match =
      kind === 0 ? `grpc: [/${svc}/Get${i}, /${svc}/List${i}]`
      : kind === 1 ? `grpc: [/${svc}/*]`
      : kind === 2 ? `http: [{ methods: [GET], glob: /api/v${i}/*/items/** }]`
      : `http: [{ prefix: /files/${i} }, { methods: [POST], exact: /rpc/${i} }]`;
    rules.push(`  - name: allow-${i}
    action: allow
    match: { ${match} }
    when:
      - scopes: { allOf: [s${i}] }
      - claim: tenant.id
        in: [acme, globex, initech]
      - maxDepth: 2
`);
  }
  return `apiVersion: ward.dev/v1
kind: Policy
service: bench
issuers:
  - issuer: ${ISSUER}
    audiences: [urn:bench]
rules:
${rules.join('')}`;
}

const policy = parsePolicyText(buildPolicy(), 'bench.yaml');
const identity = identityFromClaims({
  iss: ISSUER,
  sub: 'alice',
  exp: 2_000_000_000,
  scope: Array.from({ length: 40 }, (_, i) => `s${i}`).join(' '),
  tenant: { id: 'globex' },
  act: { sub: 'frontend' },
});
const weak = identityFromClaims({ iss: ISSUER, sub: 'bob', scope: 'openid', tenant: { id: 'acme' } });

const grpc = (m: string): RequestFacts => ({ protocol: 'grpc', method: 'POST', path: m, grpcMethod: m });
const http = (method: string, path: string): RequestFacts => ({ protocol: 'http', method, path, grpcMethod: undefined });

const cases: { name: string; facts: Facts }[] = [
  { name: 'grpc exact → allow (rule 36)', facts: { identity, request: grpc('/bench.v1.Svc6/Get36') } },
  { name: 'grpc wildcard → allow', facts: { identity, request: grpc('/bench.v1.Svc9/Anything') } },
  { name: 'http glob → allow', facts: { identity, request: http('GET', '/api/v38/7/items/a/b') } },
  { name: 'http prefix → allow', facts: { identity, request: http('PUT', '/files/39/x') } },
  { name: 'no route → deny NO_MATCH', facts: { identity, request: http('GET', '/nothing/here') } },
  { name: 'scope missing → deny SCOPE', facts: { identity: weak, request: grpc('/bench.v1.Svc6/Get36') } },
  { name: 'no token → deny TOKEN_MISSING', facts: { identity: null, request: grpc('/bench.v1.Svc6/Get36') } },
];

const iterations = Number(process.argv[2] ?? 200_000);
if (!Number.isInteger(iterations) || iterations <= 0 || iterations > 50_000_000) throw new Error('iterations: a positive integer up to 50M');

console.log(`evaluate() on a ${policy.rules.length}-rule policy, ${iterations} iterations per case (node ${process.version})`);
let sink = 0;
for (const c of cases) {
  // warm up, then measure
  for (let i = 0; i < Math.min(iterations, 20_000); i++) sink += evaluate(policy, c.facts, 0).decision.kind.length;
  globalThis.gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) sink += evaluate(policy, c.facts, 0).decision.kind.length;
  const ns = Number(process.hrtime.bigint() - t0);
  const heap = process.memoryUsage().heapUsed - heap0;
  const kind = evaluate(policy, c.facts, 0).decision;
  const label = kind.kind === 'allow' ? `allow ${kind.rule}` : `deny ${kind.code}`;
  console.log(
    `${c.name.padEnd(32)} ${Math.round((iterations * 1e9) / ns).toLocaleString('en-US').padStart(12)} ops/s  ${(ns / iterations).toFixed(0).padStart(6)} ns/op  heap ${heap >= 0 ? '+' : ''}${(heap / iterations).toFixed(1)} B/op  (${label})`,
  );
}
if (sink === 42) console.log('');
