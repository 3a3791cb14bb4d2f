import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Authenticator, createAuthenticator } from '../../src/authn/authenticator.ts';
import { silentLogger } from '../../src/lib/log.ts';
import type { IssuerTrust } from '../../src/policy/model.ts';
import { startTestIdp, type TestIdp } from '../support/idp.ts';

/**
 * Opaque tokens of the real dev IdP (oidc-provider) through RFC 7662 introspection. An
 * introspection endpoint answers `active: true` for more than access tokens: oidc-provider
 * answers for one of its refresh tokens with `sub`, `client_id`, `scope` and nothing that says
 * what it is or for whom (no `aud`, no `token_type`). A resource server whose credentials may
 * introspect that token (here, the client it was issued to) must still refuse it.
 */

let idp: TestIdp;

beforeAll(async () => {
  idp = await startTestIdp();
});
afterAll(async () => {
  await idp?.close();
});

/** A browser sign-in of alice to the `webapp` client, done with fetch: its code exchanged for tokens. */
async function signIn(): Promise<{ access_token: string; refresh_token: string }> {
  const verifier = randomBytes(32).toString('base64url');
  const redirect = 'http://127.0.0.1:9/.ward/callback';
  const cookies = new Map<string, string>();
  const go = async (url: string, init: RequestInit = {}): Promise<string | null> => {
    const r = await fetch(new URL(url, idp.issuer), { ...init, redirect: 'manual', headers: { ...(init.headers as Record<string, string>), cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') } });
    for (const c of r.headers.getSetCookie()) {
      const kv = c.split(';')[0] as string;
      cookies.set(kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1));
    }
    await r.arrayBuffer();
    return r.headers.get('location');
  };
  const next = async (url: string, init: RequestInit = {}): Promise<string> => {
    const loc = await go(url, init);
    if (loc === null) throw new Error(`sign-in: no redirect at ${url}`);
    return loc;
  };
  const query = new URLSearchParams({
    client_id: 'webapp',
    response_type: 'code',
    redirect_uri: redirect,
    scope: 'openid',
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    resource: 'urn:ward:webapp',
    state: 's',
  });
  const interaction = await next(`/auth?${query}`);
  await go(interaction); // the login page
  let loc = await next(new URL(interaction, idp.issuer).pathname, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: 'username=alice&password=alice-password',
  });
  for (let i = 0; i < 5 && !loc.startsWith(redirect); i++) loc = await next(loc);
  const code = new URL(loc).searchParams.get('code');
  if (code === null) throw new Error(`sign-in: no code in ${loc}`);
  const r = await idp.post('webapp', { grant_type: 'authorization_code', code, redirect_uri: redirect, code_verifier: verifier, resource: 'urn:ward:webapp' });
  if (r.status !== 200) throw new Error(`sign-in: token endpoint ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as { access_token: string; refresh_token: string };
}

function introspectingAs(clientId: string, clientSecret: string, audiences: readonly string[], over: Partial<IssuerTrust> = {}): Authenticator {
  const a = createAuthenticator({
    clockSkewSeconds: 30,
    maxTokenBytes: 8192,
    cacheEntries: 100,
    introspectionCacheMaxSeconds: 60,
    jwks: { timeoutMs: 3000, refreshIntervalMs: 300_000, cooldownMs: 0, graceMs: 3_600_000 },
    credentials: [{ issuer: idp.issuer, clientId, clientSecret }],
    log: silentLogger,
  });
  a.setIssuers([
    {
      issuer: idp.issuer,
      audiences,
      jwksUri: undefined,
      discovery: true,
      algorithms: ['RS256', 'ES256'],
      requireAtJwtType: true,
      hmacSecret: undefined,
      introspection: true,
      requiredClaims: [],
      ...over,
    },
  ]);
  return a;
}

describe('introspection against the dev IdP (oidc-provider)', () => {
  it('an opaque access token for this service is accepted', async () => {
    const a = introspectingAs('orders-sidecar', 'orders-sidecar-secret', ['urn:ward:orders-opaque']);
    try {
      expect(await a.whenReady(10_000)).toBe(true);
      const token = await idp.token('reporting', 'urn:ward:orders-opaque', 'orders.read');
      const r = await a.authenticate(token);
      expect(r.ok ? r.identity.subject : r.error.code).toBe('reporting');
    } finally {
      a.close();
    }
  });

  it('a refresh token, which the IdP answers as active without aud, is refused (regression: it passed as an access token)', async () => {
    const { refresh_token: refresh } = await signIn();
    // The IdP does say it is active: to the client it was issued to, which may introspect it.
    expect(await idp.introspect('webapp', refresh)).toMatchObject({ active: true, sub: 'alice' });
    const a = introspectingAs('webapp', 'webapp-secret', ['urn:ward:webapp']);
    try {
      expect(await a.whenReady(10_000)).toBe(true);
      const r = await a.authenticate(refresh);
      expect(r.ok ? `accepted as ${r.identity.subject}` : r.error.code).toBe('ERR_TOKEN_AUDIENCE');
      // The setting that lets an answer without aud through does let this one through: it is
      // for an IdP that leaves aud out of its access tokens' answers, and says so in the docs.
      const lax = introspectingAs('webapp', 'webapp-secret', ['urn:ward:webapp'], { requireIntrospectedAudience: false });
      try {
        expect(await lax.whenReady(10_000)).toBe(true);
        const l = await lax.authenticate(refresh);
        expect(l.ok).toBe(true);
      } finally {
        lax.close();
      }
    } finally {
      a.close();
    }
  });
});
