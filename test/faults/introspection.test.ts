import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type RecordingApp, startRecordingApp } from '../security/support/app.ts';
import { startTestIssuer, type TestIssuer } from '../security/support/issuer.ts';
import { eventually, h2Once, securityPolicy, startWard, type Ward } from '../security/support/ward.ts';

/**
 * Opaque tokens through RFC 7662 introspection, with an introspection endpoint that misbehaves
 * on command. What must hold: an IdP that cannot answer gives 503 ERR_INTROSPECTION_UNAVAILABLE
 * (fail closed, bounded wait and memory); an answer is believed only when it is exactly
 * `active: true` and its claims fit this service (RFC 7662 §2.2, §4: the resource server still
 * checks audience, issuer and time); inactive answers are not cached longer than a few seconds.
 */

let iss: TestIssuer;
let app: RecordingApp;
let ward: Ward;
let n = 0;
const opaque = (): string => `opaque-${Date.now().toString(36)}-${n++}`;

beforeAll(async () => {
  iss = await startTestIssuer();
  app = await startRecordingApp('h2c');
  const policy = securityPolicy(iss.issuer, '    introspection: true');
  ward = await startWard({
    issuer: iss.issuer,
    app,
    policy,
    jwks: { timeoutMs: 500 },
    credentials: [{ issuer: iss.issuer, clientId: 'orders-sidecar', clientSecret: 'secret' }],
  });
});
afterAll(async () => {
  await ward.close();
  await app.close();
  await iss.close();
});
beforeEach(() => {
  app.reset();
  iss.introspectionMode = 'ok';
});

async function call(token: string): Promise<{ status: number; reason: string | undefined }> {
  const r = await h2Once(ward.port, { ':path': '/api/x', authorization: `Bearer ${token}` });
  return { status: r.status, reason: r.reason };
}

const active = (over: Record<string, unknown> = {}): Record<string, unknown> => {
  const now = Math.floor(Date.now() / 1000);
  return { active: true, iss: iss.issuer, sub: 'alice', aud: 'urn:ward:orders', scope: 'orders.read', exp: now + 300, iat: now, ...over };
};

describe('introspection endpoint failing — fail closed, bounded', () => {
  it.each(['error500', 'hang', 'garbage', 'huge', 'endless', 'redirect', 'slow-drip'] as const)('%s → 503 ERR_INTROSPECTION_UNAVAILABLE, nothing forwarded', async (mode) => {
    iss.introspectionMode = mode;
    const rss0 = process.memoryUsage().rss;
    expect(await call(opaque())).toEqual({ status: 503, reason: 'ERR_INTROSPECTION_UNAVAILABLE' });
    expect(app.seen).toEqual([]);
    expect(process.memoryUsage().rss - rss0).toBeLessThan(128 * 1024 * 1024);
    await eventually(() => ward.counters.activeStreams === 0, 3000, 'streams closed');
  });

  it('recovers with the endpoint', async () => {
    iss.introspectionAnswer = active();
    expect(await call(opaque())).toEqual({ status: 200, reason: undefined });
    expect(app.seen[0]?.headers['x-ward-subject']).toBe('alice');
  });
});

describe('what an introspection answer must say to be believed — RFC 7662 §2.2, §4', () => {
  it.each([
    ['active: false', 'ERR_TOKEN_INACTIVE', () => ({ active: false })],
    ['active, for another service', 'ERR_TOKEN_AUDIENCE', () => (active({ aud: 'urn:ward:payments' }))],
    ['active, from another issuer', 'ERR_TOKEN_ISSUER_UNKNOWN', () => (active({ iss: 'https://evil.example' }))],
    ['active, but expired', 'ERR_TOKEN_EXPIRED', () => (active({ exp: 1 }))],
    ['active, not yet valid', 'ERR_TOKEN_NOT_YET_VALID', () => (active({ nbf: Math.floor(Date.now() / 1000) + 3600 }))],
    ['active, sub with CR LF', 'ERR_TOKEN_CLAIMS', () => (active({ sub: 'alice\r\nx-ward-subject: root' }))],
    ['active, no subject', 'ERR_TOKEN_CLAIMS', () => (active({ sub: undefined }))],
    // What oidc-provider answers for one of its refresh tokens (measured): no aud, no token_type.
    // Regression: aud was checked only when present, so a refresh token passed as an access token.
    ['active, no aud: a refresh token as oidc-provider answers it', 'ERR_TOKEN_AUDIENCE', () => {
      const now = Math.floor(Date.now() / 1000);
      return { active: true, sub: 'alice', client_id: 'webapp', exp: now + 86_400, iat: now, iss: iss.issuer, scope: 'openid' };
    }],
    ['active, token_type refresh_token', 'ERR_TOKEN_TYPE', () => (active({ token_type: 'refresh_token' }))],
    ['active, token_use refresh_token (ORY Hydra)', 'ERR_TOKEN_TYPE', () => (active({ token_use: 'refresh_token' }))],
    ['active, DPoP-bound (token_type DPoP, cnf.jkt)', 'ERR_TOKEN_TYPE', () => (active({ token_type: 'DPoP', cnf: { jkt: 'ZjU2ZGU3' } }))],
    ['active, bound to a client certificate (cnf x5t#S256)', 'ERR_TOKEN_TYPE', () => (active({ cnf: { 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' } }))],
  ] as const)('%s → 401 %s', async (_name, reason, answer) => {
    iss.introspectionAnswer = JSON.parse(JSON.stringify(answer())) as Record<string, unknown>;
    expect(await call(opaque())).toEqual({ status: 401, reason });
    expect(app.seen).toEqual([]);
  });

  it.each([
    ['active as the string "true"', () => ({ ...active(), active: 'true' })],
    ['active: 1', () => ({ ...active(), active: 1 })],
    ['no active member at all', () => ({ sub: 'alice', aud: 'urn:ward:orders' })],
  ] as const)('%s: a non-conforming answer is never taken for active (401 inactive or 503 unavailable)', async (_name, answer) => {
    iss.introspectionAnswer = answer();
    const r = await call(opaque());
    expect([
      { status: 401, reason: 'ERR_TOKEN_INACTIVE' },
      { status: 503, reason: 'ERR_INTROSPECTION_UNAVAILABLE' },
    ]).toContainEqual(r);
    expect(app.seen).toEqual([]);
  });

  it('a __proto__ member in the answer changes nothing (the answer is copied into null-prototype objects)', async () => {
    iss.introspectionAnswer = JSON.parse(`{"active":true,"iss":${JSON.stringify(iss.issuer)},"sub":"alice","aud":"urn:ward:orders","exp":${Math.floor(Date.now() / 1000) + 300},"__proto__":{"scope":"orders.read"}}`) as Record<string, unknown>;
    const r = await call(opaque());
    expect(r.status).not.toBe(200);
    expect(({} as Record<string, unknown>)['scope']).toBeUndefined();
  });

  it('an opaque token is sent to exactly one IdP, and only over introspection', async () => {
    const t = opaque();
    iss.introspectionAnswer = active();
    const before = iss.introspected.length;
    await call(t);
    expect(iss.introspected.slice(before)).toEqual([t]);
  });
});
