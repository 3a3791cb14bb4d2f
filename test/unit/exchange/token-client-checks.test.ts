import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTokenClient, type TokenTarget } from '../../../src/exchange/token-client.ts';

/**
 * RFC 8693 §2.2.1: `issued_token_type` is REQUIRED in a token-exchange response; ward sends no
 * `requested_token_type`, so the issued type is "at the discretion of the authorization server"
 * (§2.1), and the only statement that what came back is an access token is that field.
 */

const PAYMENTS: TokenTarget = { name: 'payments', resource: 'urn:ward:payments', audience: undefined, scope: '' };
let server: Server;
let body: Record<string, unknown> = {};
let lastForm: URLSearchParams | null = null;
let url = '';

beforeAll(async () => {
  server = createServer((req, res) => {
    let s = '';
    req.on('data', (c: Buffer) => (s += c.toString()));
    req.on('end', () => {
      lastForm = new URLSearchParams(s);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const client = () => createTokenClient({ issuer: url, tokenEndpoint: `${url}/token`, clientId: 'orders-sidecar', clientSecret: 's', clientAuth: 'client_secret_basic', timeoutMs: 2000 });

describe('token-exchange response validation (RFC 8693 §2.2.1)', () => {
  it('a token-exchange answer without issued_token_type is not sent as an access token (regression: it was)', async () => {
    body = { access_token: 'eyJhbGciOiJub25lIn0.e30.', token_type: 'Bearer', expires_in: 60 };
    const r = await client().exchange('APP-TOKEN', PAYMENTS);
    expect(lastForm?.get('grant_type')).toBe('urn:ietf:params:oauth:grant-type:token-exchange');
    expect(lastForm?.get('requested_token_type')).toBeNull(); // nothing asked for, nothing stated
    expect(r.ok).toBe(false);
  });
});

/**
 * The client secret and the subject token go to the token endpoint: https:, or http: on loopback
 * only. A loopback http: issuer's discovery document naming a token endpoint elsewhere left
 * plain http: allowed for it (found in review).
 */
describe('token endpoint transport (RFC 6749 §3.2 / §2.3.1: TLS required)', () => {
  it('a discovered http:// token endpoint off loopback is not used: no secret, no subject token in clear (regression: both were sent)', async () => {
    const issuer = 'http://127.0.0.1:9999';
    const sent: { url: string; auth: string | null; body: string }[] = [];
    const fake: typeof fetch = async (input, init) => {
      const url = input instanceof Request ? input.url : String(input);
      const body = init?.body;
      sent.push({ url, auth: new Headers(init?.headers).get('authorization'), body: body instanceof URLSearchParams ? body.toString() : typeof body === 'string' ? body : '' });
      if (url.endsWith('/.well-known/openid-configuration')) {
        return new Response(JSON.stringify({ issuer, token_endpoint: 'http://idp.corp.example/token', jwks_uri: `${issuer}/jwks` }), { status: 200, headers: { 'content-type': 'application/json' } });
      }
      return new Response(JSON.stringify({ access_token: 'issued', token_type: 'Bearer', expires_in: 60, issued_token_type: 'urn:ietf:params:oauth:token-type:access_token' }), { status: 200, headers: { 'content-type': 'application/json' } });
    };
    const c = createTokenClient({ issuer, clientId: 'orders-sidecar', clientSecret: 'TOP-SECRET', clientAuth: 'client_secret_basic', timeoutMs: 2000, fetch: fake });
    const r = await c.exchange('APP-TOKEN', PAYMENTS);
    const cleartext = sent.filter((s) => s.url.startsWith('http://idp.corp.example'));
    // on the current code: one request with the Basic client secret and subject_token=APP-TOKEN, over http to a non-loopback host
    expect({ ok: r.ok, cleartext: cleartext.map((s) => ({ auth: s.auth, subject: new URLSearchParams(s.body).get('subject_token') })) }).toEqual({ ok: false, cleartext: [] });
  });

  it('control: the same endpoint configured explicitly (tokenEndpoint) is refused', async () => {
    const sent: string[] = [];
    const fake: typeof fetch = async (input) => {
      sent.push(input instanceof Request ? input.url : input instanceof URL ? input.href : input);
      return new Response(JSON.stringify({ access_token: 'issued', token_type: 'Bearer', expires_in: 60 }), { status: 200, headers: { 'content-type': 'application/json' } });
    };
    const c = createTokenClient({ issuer: 'http://127.0.0.1:9999', tokenEndpoint: 'http://idp.corp.example/token', clientId: 'orders-sidecar', clientSecret: 'TOP-SECRET', clientAuth: 'client_secret_basic', timeoutMs: 2000, fetch: fake });
    const r = await c.exchange('APP-TOKEN', PAYMENTS);
    expect({ ok: r.ok, sent: sent.length }).toEqual({ ok: false, sent: 0 });
  });
});
