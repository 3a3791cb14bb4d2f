import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/lib/log.ts';
import { createSignInClient, type ProviderFailure, type SignInClient } from '../../../src/session/oidc.ts';

/**
 * How the sign-in client sorts the token endpoint's errors, against a loopback IdP whose token
 * endpoint answers what each case sets. The session stage ends a session only on a refusal;
 * an outage keeps it on its still-valid token (and is 503 `ERR_SIGNIN_UNAVAILABLE` at the
 * callback). Regression: a rate limit (429 `too_many_requests`, as Auth0 answers) was a refusal,
 * and a rate-limited refresh signed the user out for good.
 */
describe('sign-in client: token endpoint errors', () => {
  let server: Server;
  let issuer = '';
  let answer: { status: number; body: unknown } = { status: 200, body: {} };
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/.well-known/openid-configuration') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ issuer, authorization_endpoint: `${issuer}/auth`, token_endpoint: `${issuer}/token`, jwks_uri: `${issuer}/jwks`, response_types_supported: ['code'] }));
        return;
      }
      if (req.url === '/token') {
        req.resume();
        res.writeHead(answer.status, { 'content-type': 'application/json', 'retry-after': '1' });
        res.end(JSON.stringify(answer.body));
        return;
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  const client = (): SignInClient =>
    createSignInClient({ issuer, clientId: 'web', clientSecret: 's', scopes: ['openid'], resource: undefined, timeoutMs: 5000, log: silentLogger, clock: Date.now });

  async function refreshFailure(status: number, error: string): Promise<ProviderFailure> {
    answer = { status, body: { error, error_description: 'from the test IdP' } };
    const r = await client().refresh('rt-1');
    if (r.ok) throw new Error('refresh succeeded');
    return r.failure;
  }

  it.each([
    [429, 'too_many_requests'], // RFC 6585 §4: rate limited
    [400, 'temporarily_unavailable'], // RFC 6749 §4.1.2.1
    [400, 'slow_down'], // RFC 8628 §3.5
    [400, 'server_error'],
    [503, 'temporarily_unavailable'],
    [500, 'server_error'],
  ])('HTTP %i %s is the provider unavailable (regression: 429 was a refusal that ended the session)', async (status, error) => {
    expect(await refreshFailure(status, error)).toMatchObject({ kind: 'unavailable' });
  });

  it.each([
    [400, 'invalid_grant'],
    [401, 'invalid_client'],
    [400, 'unauthorized_client'],
    [400, 'invalid_scope'],
  ])('HTTP %i %s is the provider refusing', async (status, error) => {
    expect(await refreshFailure(status, error)).toEqual({ kind: 'refused', error });
  });

  it('a rate-limited code exchange is the provider unavailable (the callback answers 503, not 400)', async () => {
    answer = { status: 429, body: { error: 'too_many_requests' } };
    const r = await client().exchangeCode(new URL('http://127.0.0.1/.ward/callback?code=c1&state=s1'), { state: 's1', nonce: 'n1', codeVerifier: 'v'.repeat(43) });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.failure).toMatchObject({ kind: 'unavailable' });
  });
});
