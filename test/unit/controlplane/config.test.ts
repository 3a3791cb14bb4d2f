import { describe, expect, it } from 'vitest';
import { compileBindings, bearerFromMetadata, isLoopbackPeer } from '../../../src/controlplane/server/access.ts';
import { parseControlPlaneConfig, trustedIssuers } from '../../../src/controlplane/server/config.ts';
import { ConfigError } from '../../../src/errors/ward-error.ts';
import * as grpc from '@grpc/grpc-js';
import { identity } from './harness.ts';

const MINIMAL = `policyDir: policies
authn:
  issuers:
    - issuer: https://idp.example.com
      audiences: [urn:ward:control-plane]
bindings:
  - subject: orders-sidecar
    services: [orders]
`;

function issuesOf(text: string): { line: number; path: string; message: string }[] {
  try {
    parseControlPlaneConfig(text, '/etc/ward/cp.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => ({ line: i.line, path: i.path, message: i.message }));
    throw err;
  }
  return [];
}

describe('control-plane config', () => {
  it('applies defaults and resolves the policy dir against the config file', () => {
    const cfg = parseControlPlaneConfig(MINIMAL, '/etc/ward/cp.yaml');
    expect(cfg.policyDir).toBe('/etc/ward/policies');
    expect(cfg.listen).toEqual({ host: '127.0.0.1', port: 15010 });
    expect(cfg.watch).toEqual({ debounceMs: 100, pollIntervalMs: 1000, maxFileBytes: 1024 * 1024 });
    expect(cfg.status).toEqual({ allowLoopbackWithoutToken: true, subjects: [] });
    expect(cfg.id.length).toBeGreaterThan(0);
    expect(Object.isFrozen(cfg.authn.issuers[0])).toBe(true);
    expect(trustedIssuers(cfg)).toEqual([
      {
        issuer: 'https://idp.example.com',
        audiences: ['urn:ward:control-plane'],
        jwksUri: undefined,
        discovery: true,
        algorithms: ['RS256', 'ES256'],
        requireAtJwtType: true,
        hmacSecret: undefined,
        introspection: false,
        requiredClaims: [],
      },
    ]);
  });

  it('takes the OTLP receiver and forwarding settings from the telemetry block', () => {
    expect(parseControlPlaneConfig(MINIMAL, '/etc/ward/cp.yaml').telemetry).toMatchObject({ enabled: true, maxDecisions: 10_000 });
    const cfg = parseControlPlaneConfig(`${MINIMAL}telemetry:\n  maxDecisions: 50\n  forward: { endpoint: "collector:4317" }\n`, '/etc/ward/cp.yaml');
    expect(cfg.telemetry.maxDecisions).toBe(50);
    expect(cfg.telemetry.forward).toMatchObject({ endpoint: 'collector:4317', timeoutMs: 10_000 });
    expect(issuesOf(`${MINIMAL}telemetry:\n  forwrd: {}\n`)).toEqual([{ line: 10, path: 'telemetry.forwrd', message: expect.stringContaining('Unrecognized') as string }]);
  });

  it('refuses forward headers grpc-js cannot send, at their field (regression: a bare grpc-js error at start-up)', () => {
    const bin = issuesOf(`${MINIMAL}telemetry:\n  forward: { endpoint: "collector:4317", headers: { x-key-bin: abc } }\n`);
    expect(bin.map((i) => i.path)).toEqual(['telemetry.forward.headers.x-key-bin']);
    const newline = issuesOf(`${MINIMAL}telemetry:\n  forward: { endpoint: "collector:4317", headers: { x-key: "a\\nb" } }\n`);
    expect(newline).toEqual([expect.objectContaining({ path: 'telemetry.forward.headers.x-key', message: 'gRPC metadata values are printable ASCII' })]);
  });

  it('reports bad bindings with line and field path', () => {
    const text = `${MINIMAL}  - subject: payments-sidecar
  - claim: ward_services
    services: [x]
  - subject: a
    claim: b
    services: [c]
`;
    expect(issuesOf(text)).toEqual([
      { line: 9, path: 'bindings[1].services', message: 'a subject binding needs at least one service' },
      { line: 11, path: 'bindings[2].services', message: 'a claim binding takes its services from the claim' },
      { line: 12, path: 'bindings[3]', message: 'set exactly one of subject or claim' },
    ]);
  });

  it('requires at least one trusted issuer and refuses unknown keys', () => {
    expect(issuesOf('policyDir: p\nauthn:\n  issuers: []\n')).toMatchObject([{ line: 3, path: 'authn.issuers' }]);
    expect(issuesOf(`${MINIMAL}bogus: 1\n`)).toMatchObject([{ line: 9, path: 'bogus' }]);
    expect(issuesOf(MINIMAL.replace('audiences: [urn:ward:control-plane]', 'audiences: []\n      algorithms: [none]'))).toMatchObject([
      { line: 5, path: 'authn.issuers[0].audiences' },
      { line: 6, path: 'authn.issuers[0].algorithms[0]' },
    ]);
  });
});

describe('bindings', () => {
  it('binds by subject (optionally per issuer) and by a claim listing services', () => {
    const check = compileBindings([
      { subject: 'orders-sidecar', services: ['orders'] },
      { subject: 'ops', issuer: 'https://other.example.com', services: ['orders', 'payments'] },
      { claim: 'ward_services' },
    ]);
    expect(check(identity('orders-sidecar'), 'orders')).toBe(true);
    expect(check(identity('orders-sidecar'), 'payments')).toBe(false);
    expect(check(identity('ops'), 'payments')).toBe(false); // wrong issuer
    expect(check(identity('ops', { issuer: 'https://other.example.com' }), 'payments')).toBe(true);
    expect(check(identity('x', { claims: { ward_services: 'ledger payments' } }), 'payments')).toBe(true);
    expect(check(identity('x', { claims: { ward_services: ['ledger'] } }), 'ledger')).toBe(true);
    expect(check(identity('x', { claims: { ward_services: ['ledger'] } }), 'orders')).toBe(false);
    expect(check(identity('x', { claims: { ward_services: 42 } }), '42')).toBe(false);
    expect(compileBindings([])(identity('orders-sidecar'), 'orders')).toBe(false);
  });
});

describe('access helpers', () => {
  it('extracts exactly one bearer token from metadata', () => {
    const md = (...values: string[]): grpc.Metadata => {
      const m = new grpc.Metadata();
      for (const v of values) m.add('authorization', v);
      return m;
    };
    expect(bearerFromMetadata(md('Bearer abc.def-ghi_'))).toEqual({ ok: true, token: 'abc.def-ghi_' });
    expect(bearerFromMetadata(md('bearer abc'))).toEqual({ ok: true, token: 'abc' });
    expect(bearerFromMetadata(md())).toEqual({ ok: false, code: 'ERR_TOKEN_MISSING' });
    expect(bearerFromMetadata(md('Bearer a', 'Bearer b'))).toEqual({ ok: false, code: 'ERR_TOKEN_MULTIPLE' });
    expect(bearerFromMetadata(md('Basic dXNlcjpwdw=='))).toEqual({ ok: false, code: 'ERR_TOKEN_MALFORMED' });
    expect(bearerFromMetadata(md('Bearer a b'))).toEqual({ ok: false, code: 'ERR_TOKEN_MALFORMED' });
  });

  it('recognizes loopback peers only', () => {
    for (const p of ['127.0.0.1:5000', '127.8.9.10:1', '::1:5000', '[::1]:5000', '::ffff:127.0.0.1:5000']) expect(isLoopbackPeer(p), p).toBe(true);
    for (const p of ['10.0.0.1:5000', '::ffff:10.0.0.1:5000', '1127.0.0.1:5', 'fe80::1:5000', 'unknown']) expect(isLoopbackPeer(p), p).toBe(false);
  });
});
