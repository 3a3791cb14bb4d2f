import * as oidc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CookieJar } from '../../src/demo/webapp.ts';
import { DEFAULT_DEV_IDP_YAML, parseDevIdpConfig } from '../../src/devidp/config.ts';
import { ConfigError } from '../../src/errors/ward-error.ts';
import { startWebTestIdp, type TestIdp } from '../support/idp.ts';

/**
 * `ward dev-idp`'s interactive sign-in, over HTTP: the login page for the config's fixed users,
 * its refusals, the redirect URIs it accepts, and the config checks for web clients and users.
 */

const PAGE = { accept: 'text/html' };

describe('dev IdP interactive sign-in', () => {
  let idp: TestIdp;
  let config: oidc.Configuration;

  beforeAll(async () => {
    idp = await startWebTestIdp();
    config = await oidc.discovery(new URL(idp.issuer), 'webapp', undefined, oidc.ClientSecretBasic('webapp-secret'), { execute: [oidc.allowInsecureRequests] });
  });
  afterAll(async () => {
    await idp?.close();
  });

  const authorize = (redirectUri: string): URL =>
    oidc.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: 'openid',
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      code_challenge_method: 'S256',
      state: 's'.repeat(43),
      nonce: 'n'.repeat(43),
    });

  it('shows a login page that says DEVELOPMENT ONLY, lists the test users, and refuses a wrong password or an unknown user', async () => {
    const jar = new CookieJar();
    const res = await jar.fetch(authorize('http://127.0.0.1:43210/.ward/callback'), { headers: PAGE });
    expect(res.status).toBe(303);
    const login = new URL(res.headers.get('location') ?? '', idp.issuer);
    expect(login.pathname).toMatch(/^\/interaction\//);
    const page = await jar.fetch(login, { headers: PAGE });
    const html = await page.text();
    expect(page.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(html).toContain('DEVELOPMENT ONLY');
    expect(html).toContain('<code>alice</code>');
    expect(html).toContain('<code>bob</code>');
    for (const [username, password] of [['alice', 'bob-password'], ['carol', 'carol-password'], ['alice', '']]) {
      const r = await jar.fetch(login, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ username: username ?? '', password: password ?? '' }).toString() });
      expect(r.status, `${username}/${password}`).toBe(401);
      expect(await r.text()).toContain('Unknown user or wrong password.');
    }
    const ok = await jar.fetch(login, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'username=alice&password=alice-password' });
    expect(ok.status).toBe(303);
    await ok.body?.cancel();
  });

  it('accepts the registered loopback callback on any port, and no other path or host', async () => {
    const good = await fetch(authorize('http://127.0.0.1:1/.ward/callback'), { redirect: 'manual' });
    await good.body?.cancel();
    expect(good.status).toBe(303);
    for (const bad of ['http://127.0.0.1:43210/.ward/other', 'http://evil.example/.ward/callback', 'http://localhost:43210/.ward/callback']) {
      const r = await fetch(authorize(bad), { redirect: 'manual' });
      expect(r.status, bad).toBe(400);
      expect(((await r.json()) as { error?: string }).error).toBe('invalid_redirect_uri');
    }
  });

  it('answers an expired or unknown interaction with a page, not a crash', async () => {
    const r = await fetch(`${idp.issuer}/interaction/unknown`, { headers: PAGE });
    expect(r.status).toBe(400);
    expect(await r.text()).toContain('expired or is unknown');
  });

  it('checks web clients and users in the config', () => {
    const issues = (text: string): string => {
      try {
        parseDevIdpConfig(text, 'idp.yaml');
      } catch (err) {
        if (err instanceof ConfigError) return err.message;
        throw err;
      }
      return '';
    };
    expect(parseDevIdpConfig(DEFAULT_DEV_IDP_YAML, 'dev-idp.yaml').users.map((u) => u.username)).toEqual(['alice', 'bob']);
    expect(issues('clients: [{ clientId: w, clientSecret: w-secret-1, grantTypes: [authorization_code] }]')).toMatch(/needs at least one redirect URI/);
    expect(issues('clients: [{ clientId: w, clientSecret: w-secret-1, grantTypes: [refresh_token] }]')).toMatch(/refresh_token needs authorization_code/);
    expect(issues('users: [{ username: a, password: p, claims: { sub: root } }]')).toMatch(/must not set iss, sub/);
    expect(issues('users: [{ username: a, password: p }, { username: a, password: q }]')).toMatch(/duplicate user 'a'/);
  });
});
