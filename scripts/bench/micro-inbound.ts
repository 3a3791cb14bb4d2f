/**
 * Micro benchmarks of the inbound hot path (STYLE.md habit 10): path normalization and the
 * header step (strip + scan, then identity headers). Run: `npx node scripts/bench/micro-inbound.ts`.
 * Numbers are ops/s on this machine, for comparing changes, not for publishing.
 */
import { createDecisionIds } from '../../src/inbound/decision-id.ts';
import { parseGrpcTimeout } from '../../src/inbound/grpc-timeout.ts';
import { addIdentityHeaders, identityClaimsHeader, identityHeaderNames, scanRequestHeaders } from '../../src/inbound/headers.ts';
import { normalizeTarget, queryHasAccessToken } from '../../src/lib/normalize.ts';
import type { Identity } from '../../src/policy/model.ts';

let sink: unknown;

function bench(name: string, fn: () => unknown, iterations = 2_000_000): void {
  for (let i = 0; i < iterations / 10; i++) sink = fn(); // warm-up: let the JIT settle
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) sink = fn();
  const ns = Number(process.hrtime.bigint() - start);
  const opsPerSec = (iterations * 1e9) / ns;
  console.log(`${name.padEnd(52)} ${Math.round(opsPerSec).toLocaleString('en-US').padStart(14)} ops/s  ${(ns / iterations).toFixed(1).padStart(8)} ns/op`);
}

const PATHS = { mergeSlashes: true, rejectEscapedSlashes: true };

console.log(`node ${process.version}`);
bench('normalize: gRPC path (unchanged)', () => normalizeTarget('/ward.demo.v1.Orders/GetOrder', PATHS));
bench('normalize: REST path + query (unchanged)', () => normalizeTarget('/api/v1/orders/42/items?limit=10&cursor=abc', PATHS));
bench('normalize: escapes + dot-segments (rewritten)', () => normalizeTarget('/api/%7Ev1/./orders//42/../43/caf%c3%a9', PATHS));
bench('normalize: refused (%2F)', () => normalizeTarget('/x%2F..%2Fadmin', PATHS));
bench('query: access_token scan (absent)', () => queryHasAccessToken('?limit=10&cursor=abc'));

// A typical grpc-js request header list (HTTP/2: lower-case names, pseudo-headers first).
const GRPC_RAW = [
  ':method', 'POST',
  ':scheme', 'http',
  ':path', '/ward.demo.v1.Orders/GetOrder',
  ':authority', 'orders:8080',
  'grpc-accept-encoding', 'identity,deflate,gzip',
  'accept-encoding', 'identity',
  'authorization', `Bearer ${'x'.repeat(800)}`,
  'user-agent', 'grpc-node-js/1.14.7',
  'content-type', 'application/grpc',
  'te', 'trailers',
  'grpc-timeout', '999m',
];
// A typical browser-ish HTTP/1.1 request (mixed-case names).
const H1_RAW = [
  'Host', 'orders.example',
  'User-Agent', 'Mozilla/5.0',
  'Accept', 'application/json',
  'Accept-Encoding', 'gzip, deflate, br',
  'Authorization', `Bearer ${'x'.repeat(800)}`,
  'Connection', 'keep-alive',
  'Cookie', 'a=1; b=2',
  'X-Request-Id', '9b2c6f0a',
];
const POLICY = { prefix: 'x-ward-', stripAuthorization: false };
const names = identityHeaderNames('x-ward-');
const identity: Identity = {
  issuer: 'https://idp.example',
  subject: 'frontend',
  claims: { iss: 'https://idp.example', sub: 'frontend', aud: 'urn:ward:orders', scope: 'orders.read orders.write', exp: 4_000_000_000, iat: 1_700_000_000, client_id: 'frontend' },
  tokenKind: 'jwt',
  expiresAt: 4_000_000_000,
  actors: [],
  scopes: new Set(['orders.read', 'orders.write']),
  claimsBase64url: 'eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwic3ViIjoiZnJvbnRlbmQifQ',
};

bench('headers: scan + strip, gRPC (HTTP/2)', () => scanRequestHeaders(GRPC_RAW, true, POLICY), 1_000_000);
bench('headers: scan + strip, HTTP/1.1', () => scanRequestHeaders(H1_RAW, false, POLICY), 1_000_000);
bench(
  'headers: scan + strip + identity headers, gRPC',
  () => {
    const r = scanRequestHeaders(GRPC_RAW, true, POLICY);
    if ('fwd' in r) addIdentityHeaders(r.fwd, names, identity, identityClaimsHeader(identity) ?? '', 'abc.1');
    return r;
  },
  1_000_000,
);
bench('identity claims header (JWT: the payload segment)', () => identityClaimsHeader(identity));
const nextId = createDecisionIds();
bench('decision id', nextId);
bench('grpc-timeout parse', () => parseGrpcTimeout('999m'));

if (sink === Symbol.for('never')) console.log(sink);
