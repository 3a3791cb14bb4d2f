import { describe, expect, it } from 'vitest';
import { createDecisionIds } from '../../../src/inbound/decision-id.ts';
import { formatGrpcTimeout, MAX_TIMER_MS, parseGrpcTimeout } from '../../../src/inbound/grpc-timeout.ts';
import {
  addIdentityHeaders,
  hasToken,
  identityHeaderNames,
  identityClaimsHeader,
  impersonatesIdentity,
  relayableFields,
  requestTrailerFields,
  responseHeadersForH2,
  scanRequestHeaders,
  type ScannedHeaders,
  type ScanResult,
} from '../../../src/inbound/headers.ts';
import { identity } from './harness.ts';

const POLICY = { prefix: 'x-ward-', stripAuthorization: false };

function ok(r: ScanResult): ScannedHeaders {
  if ('error' in r) throw new Error(`unexpected ${r.error}: ${r.detail}`);
  return r;
}

describe('scanRequestHeaders', () => {
  it('strips identity-prefixed, hop-by-hop and connection-named fields (HTTP/1.1 names in any case)', () => {
    const r = ok(
      scanRequestHeaders(
        [
          'Host', 'orders:8080',
          'X-Ward-Subject', 'admin',
          'x-ward-claims', 'e30',
          'X-WARD-Decision-Id', 'forged',
          'Connection', 'keep-alive, X-Secret',
          'Keep-Alive', 'timeout=5',
          'Proxy-Connection', 'keep-alive',
          'Upgrade', 'websocket',
          'Proxy-Authorization', 'Basic Zm9v',
          'Expect', '100-continue',
          'HTTP2-Settings', 'AAA',
          'X-Secret', 'hop-only',
          'TE', 'gzip',
          'Accept', 'text/plain',
          'Authorization', 'Bearer t',
        ],
        false,
        POLICY,
      ),
    );
    expect(Object.keys(r.fwd).sort()).toEqual(['accept', 'authorization']);
    expect(r.host).toBe('orders:8080');
    expect(r.authorization).toBe('Bearer t');
    expect(r.acceptsTrailers).toBe(false);
  });

  it('strips identity fields spelled with `_` for `-`, which CGI-style apps read as the same field (regression)', () => {
    const r = ok(
      scanRequestHeaders(['X_Ward_Subject', 'root', 'x-ward_claims', 'e30', 'X_WARD_ISSUER', 'x', 'x_wardx', 'kept', 'x_other', 'kept'], false, POLICY),
    );
    expect(Object.keys(r.fwd).sort()).toEqual(['x_other', 'x_wardx']);
    expect(Object.keys(requestTrailerFields({ 'x_ward_subject': 'root', 'x-ward_issuer': 'x', 'x-note': 'kept' }, 'x-ward-'))).toEqual(['x-note']);
  });

  it('impersonatesIdentity: the prefix, with `_` read as `-`, and nothing shorter or different', () => {
    for (const n of ['x-ward-', 'x-ward-subject', 'x_ward_subject', 'x-ward_claims', 'x_ward-anything']) expect(impersonatesIdentity(n, 'x-ward-'), n).toBe(true);
    for (const n of ['x-ward', 'x_ward', 'x-wardsubject', 'y-ward-subject', 'x-w_rd-subject', 'accept', '']) expect(impersonatesIdentity(n, 'x-ward-'), n).toBe(false);
  });

  it('keeps only `trailers` of TE', () => {
    const r = ok(scanRequestHeaders(['te', 'trailers, deflate'], true, POLICY));
    expect(r.acceptsTrailers).toBe(true);
    expect(r.fwd.te).toBeUndefined(); // re-added by the forwarder for HTTP/2 apps
  });

  it('skips pseudo-headers and collects repeated Authorization as an array', () => {
    const r = ok(scanRequestHeaders([':method', 'GET', ':path', '/', 'authorization', 'Bearer a', 'authorization', 'Bearer b'], true, POLICY));
    expect(r.authorization).toEqual(['Bearer a', 'Bearer b']);
    expect(r.fwd[':path']).toBeUndefined();
  });

  it('stripAuthorization: extracted but not forwarded', () => {
    const r = ok(scanRequestHeaders(['authorization', 'Bearer a'], true, { ...POLICY, stripAuthorization: true }));
    expect(r.authorization).toBe('Bearer a');
    expect(r.fwd.authorization).toBeUndefined();
  });

  it('joins split HTTP/2 cookies and keeps other repeats as arrays', () => {
    const r = ok(scanRequestHeaders(['cookie', 'a=1', 'cookie', 'b=2', 'accept', 'x', 'accept', 'y'], true, POLICY));
    expect(r.fwd.cookie).toBe('a=1; b=2');
    expect(r.fwd.accept).toEqual(['x', 'y']);
  });

  it('a field named __proto__ is just a field', () => {
    const r = ok(scanRequestHeaders(['__proto__', 'x', '__proto__', 'y', 'constructor', 'z'], true, POLICY));
    expect(Object.getPrototypeOf(r.fwd)).toBe(null);
    expect(r.fwd.constructor).toBe('z');
  });

  it('a custom prefix strips that prefix', () => {
    const r = ok(scanRequestHeaders(['x-auth-subject', 'admin', 'x-ward-subject', 'kept'], true, { prefix: 'x-auth-', stripAuthorization: false }));
    expect(r.fwd).toEqual(Object.assign(Object.create(null), { 'x-ward-subject': 'kept' }));
  });

  it.each([
    [['Host', 'a', 'Host', 'b'], 'two Host'],
    [['Content-Length', '1', 'Content-Length', '1'], 'two Content-Length'],
    [['Content-Type', 'a', 'Content-Type', 'b'], 'two Content-Type'],
    [['Content-Length', '3', 'Transfer-Encoding', 'chunked'], 'CL and TE'],
    [['Transfer-Encoding', 'gzip, chunked'], 'coding other than chunked'],
    [['Transfer-Encoding', 'chunked', 'Transfer-Encoding', 'chunked'], 'two TE'],
    [['grpc-timeout', '1S', 'grpc-timeout', '100S'], 'two grpc-timeout (regression: forwarded as received)'],
  ] as const)('refuses %j (%s) with ERR_REQUEST_INVALID', (raw, _why) => {
    const r = scanRequestHeaders(raw, false, POLICY);
    expect('error' in r && r.error).toBe('ERR_REQUEST_INVALID');
  });

  it('framing: chunked or non-zero length means a body', () => {
    expect(ok(scanRequestHeaders(['Transfer-Encoding', 'Chunked'], false, POLICY)).framedBody).toBe(true);
    expect(ok(scanRequestHeaders(['Content-Length', '5'], false, POLICY)).framedBody).toBe(true);
    expect(ok(scanRequestHeaders(['Content-Length', '0'], false, POLICY)).framedBody).toBe(false);
    expect(ok(scanRequestHeaders([], false, POLICY)).framedBody).toBe(false);
  });
});

describe('hasToken', () => {
  it.each([
    ['trailers', true],
    ['Trailers', true],
    [' deflate , trailers ', true],
    ['trailersx', false],
    ['xtrailers', false],
    ['', false],
  ] as const)('%j → %j', (list, expected) => {
    expect(hasToken(list, 'trailers')).toBe(expected);
  });
});

describe('response fields', () => {
  it('relayableFields drops pseudo and connection-specific fields, and what Connection names', () => {
    const out = relayableFields({
      ':status': '200',
      'content-type': 'text/plain',
      connection: 'close, x-hop',
      'x-hop': '1',
      'keep-alive': 'timeout=5',
      'transfer-encoding': 'chunked',
      'set-cookie': ['a=1', 'b=2'],
    });
    expect({ ...out }).toEqual({ 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'] });
  });

  it('responseHeadersForH2 adds :status', () => {
    const out = responseHeadersForH2(404, { 'content-type': 'text/plain', 'transfer-encoding': 'chunked' });
    expect({ ...out }).toEqual({ ':status': 404, 'content-type': 'text/plain' });
  });
});

describe('identity headers', () => {
  const names = identityHeaderNames('x-ward-');

  it('subject, issuer, base64url claims and decision id', () => {
    const id = identity('alice');
    const h = {};
    addIdentityHeaders(h, names, id, identityClaimsHeader(id) ?? 'unrepresentable', 'dec-1');
    expect(h).toEqual({
      'x-ward-subject': 'alice',
      'x-ward-issuer': 'https://idp.test',
      'x-ward-claims': Buffer.from(JSON.stringify(id.claims)).toString('base64url'),
      'x-ward-decision-id': 'dec-1',
    });
    expect(JSON.parse(Buffer.from((h as Record<string, string>)['x-ward-claims'] as string, 'base64url').toString())).toEqual(id.claims);
  });

  it('serializes the claims once per identity object', () => {
    const id = identity('bob');
    const first = identityClaimsHeader(id);
    // The value is remembered, not recomputed: same string although the claims object changed.
    (id.claims as Record<string, unknown>)['later'] = 1;
    expect(identityClaimsHeader(id)).toBe(first);
  });

  it("a JWT identity's claims header is its payload segment as signed, never re-serialized", () => {
    const segment = Buffer.from('{"sub":"carol",  "iss":"https://idp.test"}').toString('base64url');
    const id = { ...identity('carol'), claimsBase64url: segment };
    expect(identityClaimsHeader(id)).toBe(segment);
    expect(identityClaimsHeader({ ...id, subject: 'carol\n' })).toBeNull();
  });

  it.each(['eve\r\nx-evil: 1', ' lead', 'trail ', 'caf\u00e9', 'nul\u0000'])('refuses a subject that cannot be sent verbatim: %j', (sub) => {
    expect(identityClaimsHeader(identity(sub))).toBeNull();
  });

  it('an anonymous call carries only the decision id', () => {
    const h = {};
    addIdentityHeaders(h, names, null, '', 'dec-2');
    expect(h).toEqual({ 'x-ward-decision-id': 'dec-2' });
  });
});

describe('parseGrpcTimeout', () => {
  it.each([
    ['1S', 1000],
    ['100m', 100],
    ['2M', 120_000],
    ['1H', 3_600_000],
    ['1500u', 2],
    ['1n', 1],
    ['99999999S', MAX_TIMER_MS],
    ['0m', 0],
  ] as const)('%j → %j ms', (v, ms) => {
    expect(parseGrpcTimeout(v)).toBe(ms);
  });

  it.each(['', 'S', '1', '1s', '123456789S', '-1S', '1.5S', ' 1S', '1Sx'])('%j is malformed', (v) => {
    expect(parseGrpcTimeout(v)).toBe(-1);
  });
});

describe('decision ids', () => {
  it('are unique and share a per-process prefix', () => {
    const next = createDecisionIds();
    const ids = Array.from({ length: 1000 }, next);
    expect(new Set(ids).size).toBe(1000);
    const prefix = (ids[0] as string).split('.')[0];
    expect(ids.every((i) => i.startsWith(`${prefix}.`))).toBe(true);
    expect(createDecisionIds()()).not.toBe(createDecisionIds()());
  });
});

describe('formatGrpcTimeout', () => {
  it.each([
    [0, '1m'],
    [-5, '1m'],
    [1.2, '2m'],
    [9_999.4, '10000m'],
    [99_999_999, '99999999m'],
    [100_000_000, '100000S'],
    [MAX_TIMER_MS, '2147484S'],
  ])('%d ms left: %s, which parses back to at least that', (ms, text) => {
    expect(formatGrpcTimeout(ms)).toBe(text);
    expect(parseGrpcTimeout(text)).toBeGreaterThanOrEqual(Math.min(ms, MAX_TIMER_MS));
  });
});
