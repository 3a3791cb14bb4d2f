import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenClient, type GrantResult, type TokenTarget } from '../../../src/exchange/token-client.ts';
import { startTestIdp, type TestIdp } from '../../support/idp.ts';

/**
 * The token endpoint client against the real dev IdP (oidc-provider with the RFC 8693 grant),
 * and against servers that fail in the ways an IdP can: refused, down, hanging, 5xx.
 */

const PAYMENTS: TokenTarget = { name: 'payments', resource: 'urn:ward:payments', audience: undefined, scope: 'payments.charge' };
const LEDGER: TokenTarget = { name: 'ledger', resource: 'urn:ward:ledger', audience: undefined, scope: 'ledger.append' };

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

describe('token client against the dev IdP', () => {
  let idp: TestIdp;
  let frontend: string;

  beforeAll(async () => {
    idp = await startTestIdp();
    frontend = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
  });
  afterAll(async () => {
    await idp.close();
  });

  const client = (over: Partial<Parameters<typeof createTokenClient>[0]> = {}) =>
    createTokenClient({
      issuer: idp.issuer,
      clientId: 'orders-sidecar',
      clientSecret: 'orders-sidecar-secret',
      clientAuth: 'client_secret_basic',
      timeoutMs: 2000,
      ...over,
    });

  it('exchanges a token (discovery, RFC 8693): same subject, new audience, act = the workload', async () => {
    const r = await client().exchange(frontend, PAYMENTS);
    expect(r).toMatchObject({ ok: true, expiresInS: 120 });
    const claims = decodeJwt((r as Extract<GrantResult, { ok: true }>).token);
    expect(claims).toMatchObject({ sub: 'frontend', aud: 'urn:ward:payments', act: { sub: 'orders-sidecar' }, scope: 'payments.charge' });
  });

  it('sends `audience` when configured instead of `resource`', async () => {
    const r = await client().exchange(frontend, { ...PAYMENTS, resource: undefined, audience: 'urn:ward:payments' });
    expect(r.ok && decodeJwt(r.token).aud).toBe('urn:ward:payments');
  });

  it('uses a configured token endpoint without discovery; client_secret_basic or _post', async () => {
    const seen: { url: string; auth: string | null; body: string }[] = [];
    const recording: typeof fetch = async (input, init) => {
      const url = input instanceof Request ? input.url : String(input);
      const headers = new Headers(init?.headers);
      const body = init?.body;
      seen.push({ url, auth: headers.get('authorization'), body: body instanceof URLSearchParams ? body.toString() : typeof body === 'string' ? body : '' });
      return fetch(input, init);
    };
    expect((await client({ tokenEndpoint: idp.tokenEndpoint, fetch: recording }).exchange(frontend, PAYMENTS)).ok).toBe(true);
    expect((await client({ tokenEndpoint: idp.tokenEndpoint, clientAuth: 'client_secret_post', fetch: recording }).exchange(frontend, PAYMENTS)).ok).toBe(true);
    expect(seen.map((r) => r.url)).toEqual([idp.tokenEndpoint, idp.tokenEndpoint]); // no discovery
    expect(seen[0]?.auth).toMatch(/^Basic /);
    expect(seen[0]?.body).not.toContain('client_secret');
    expect(seen[1]?.auth).toBeNull();
    expect(seen[1]?.body).toContain('client_secret=orders-sidecar-secret');
    const form = new URLSearchParams(seen[0]?.body);
    expect(Object.fromEntries(form)).toMatchObject({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      resource: 'urn:ward:payments',
      scope: 'payments.charge',
    });
    expect(form.get('subject_token')).toBe(frontend);
  });

  it('reports an IdP refusal with its OAuth error code', async () => {
    expect(await client().exchange(frontend, LEDGER)).toMatchObject({ ok: false, kind: 'refused', oauthError: 'invalid_target', status: 400 });
    expect(await client().exchange('not-a-token', PAYMENTS)).toMatchObject({ ok: false, kind: 'refused', oauthError: 'invalid_request' });
    expect(await client({ clientSecret: 'wrong-secret' }).exchange(frontend, PAYMENTS)).toMatchObject({
      ok: false,
      kind: 'refused',
      oauthError: 'invalid_client',
      status: 401,
    });
  });

  it('gets client-credentials tokens for the workload itself', async () => {
    const r = await client().clientCredentials(PAYMENTS);
    expect(r.ok && decodeJwt(r.token)).toMatchObject({ sub: 'orders-sidecar', aud: 'urn:ward:payments' });
    expect(await client().clientCredentials(LEDGER)).toMatchObject({ ok: false, kind: 'refused', oauthError: 'invalid_target' });
  });

  it('retries discovery on the next request after it failed', async () => {
    let fail = true;
    const flaky: typeof fetch = (input, init) => (fail ? Promise.reject(new TypeError('fetch failed')) : fetch(input, init));
    const c = client({ fetch: flaky });
    expect(await c.exchange(frontend, PAYMENTS)).toMatchObject({ ok: false, kind: 'unavailable' });
    fail = false;
    expect((await c.exchange(frontend, PAYMENTS)).ok).toBe(true);
  });
});

describe('token client against a failing IdP', () => {
  const servers: Server[] = [];
  afterAll(() => {
    for (const s of servers) {
      s.closeAllConnections();
      s.close();
    }
  });

  async function serve(handler: Parameters<typeof createServer>[1]): Promise<string> {
    const s = createServer(handler);
    servers.push(s);
    return listen(s);
  }

  const against = (base: string, timeoutMs = 2000) =>
    createTokenClient({ issuer: base, tokenEndpoint: `${base}/token`, clientId: 'c', clientSecret: 's', clientAuth: 'client_secret_basic', timeoutMs });

  it('nothing listening: unavailable', async () => {
    const base = await serve(() => undefined);
    const closed = servers.pop() as Server;
    await new Promise((r) => closed.close(r));
    expect(await against(base).exchange('t', PAYMENTS)).toMatchObject({ ok: false, kind: 'unavailable' });
  });

  it('an IdP that never answers: unavailable once timeoutMs has passed', async () => {
    const base = await serve(() => undefined); // accepts, reads, never responds
    const r = await against(base, 150).exchange('t', PAYMENTS);
    expect(r).toMatchObject({ ok: false, kind: 'unavailable' });
    expect((r as { detail: string }).detail).toMatch(/Timeout|abort/i);
  });

  it('5xx and temporarily_unavailable are unavailable, not refusals', async () => {
    const json503 = await serve((_req, res) => res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"temporarily_unavailable"}'));
    expect(await against(json503).exchange('t', PAYMENTS)).toMatchObject({ ok: false, kind: 'unavailable' });
    const html502 = await serve((_req, res) => res.writeHead(502, { 'content-type': 'text/html' }).end('<h1>Bad gateway</h1>'));
    expect(await against(html502).exchange('t', PAYMENTS)).toMatchObject({ ok: false, kind: 'unavailable' });
    const busy = await serve((_req, res) => res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"temporarily_unavailable"}'));
    expect(await against(busy).clientCredentials(PAYMENTS)).toMatchObject({ ok: false, kind: 'unavailable' });
  });

  it('a rate limit (429, slow_down, too_many_requests) is unavailable, not a refusal (regression: answered 403 and remembered as one)', async () => {
    const json429 = await serve((_req, res) => res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '10' }).end('{"error":"too_many_requests","error_description":"rate limited"}'));
    expect(await against(json429).exchange('t', PAYMENTS)).toMatchObject({ ok: false, kind: 'unavailable' });
    expect(await against(json429).clientCredentials(PAYMENTS)).toMatchObject({ ok: false, kind: 'unavailable' });
    const slowDown = await serve((_req, res) => res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"slow_down"}'));
    expect(await against(slowDown).exchange('t', PAYMENTS)).toMatchObject({ ok: false, kind: 'unavailable' });
  });

  it("a refusal keeps at most 256 characters of the IdP's description, and only a string (regression: 500 KB kept per cached refusal)", async () => {
    const long = await serve((_req, res) => res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'invalid_target', error_description: 'x'.repeat(500_000) })));
    const r = await against(long).exchange('t', PAYMENTS);
    expect(r).toMatchObject({ ok: false, kind: 'refused', oauthError: 'invalid_target' });
    expect((r as { description: string }).description.length).toBeLessThanOrEqual(259);
    const odd = await serve((_req, res) => res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"invalid_target","error_description":{"toString":1}}'));
    const o = await against(odd).exchange('t', PAYMENTS);
    expect(o).toMatchObject({ ok: false, kind: 'refused', oauthError: 'invalid_target' });
    expect((o as { description?: unknown }).description).toBeUndefined();
  });

  it('a 200 that is not a bearer token response is not a token', async () => {
    const na = await serve((_req, res) =>
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end('{"access_token":"x","token_type":"N_A","issued_token_type":"urn:ietf:params:oauth:token-type:jwt"}'),
    );
    expect(await against(na).exchange('t', PAYMENTS)).toMatchObject({ ok: false, kind: 'refused', oauthError: 'unsupported_token_type' });
    const garbage = await serve((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"nope":true}'));
    expect(await against(garbage).exchange('t', PAYMENTS)).toMatchObject({ ok: false, kind: 'unavailable' });
  });

  it('an exchange that issued something other than an access token is refused (RFC 8693 §2.2.1 issued_token_type; regression: a refresh token went out as Bearer)', async () => {
    const issuing = (type: string | undefined) =>
      serve((_req, res) =>
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ access_token: 'x', token_type: 'Bearer', expires_in: 60, ...(type === undefined ? {} : { issued_token_type: type }) })),
      );
    for (const t of ['urn:ietf:params:oauth:token-type:refresh_token', 'urn:ietf:params:oauth:token-type:id_token', 'urn:ietf:params:oauth:token-type:saml2']) {
      expect(await against(await issuing(t)).exchange('t', PAYMENTS), t).toMatchObject({ ok: false, kind: 'refused', oauthError: 'unsupported_token_type', description: `issued_token_type ${t}` });
    }
    for (const t of ['urn:ietf:params:oauth:token-type:access_token', 'urn:ietf:params:oauth:token-type:jwt']) {
      expect(await against(await issuing(t)).exchange('t', PAYMENTS), String(t)).toMatchObject({ ok: true, token: 'x' });
    }
    // REQUIRED by §2.2.1: an answer without it does not say an access token came back
    expect(await against(await issuing(undefined)).exchange('t', PAYMENTS)).toMatchObject({ ok: false, kind: 'refused', description: 'issued_token_type missing (RFC 8693 §2.2.1)' });
  });
});
