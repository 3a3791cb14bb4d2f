import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oidc from 'openid-client';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createTokenBroker } from '../../../src/exchange/broker.ts';
import { classifyGrantError, createTokenClient, type TokenTarget } from '../../../src/exchange/token-client.ts';
import { silentLogger } from '../../../src/lib/log.ts';

/**
 * docs/outbound.md "What may be issued": a `token_type` other than `Bearer` is refused
 * (ERR_EXCHANGE_REFUSED, `unsupported_token_type`), a refusal for that destination and not an
 * outage. openid-client throws for any `token_type` but bearer and dpop (and n_a on the exchange
 * grant) before ward's own check sees the answer; that throw was classified `unavailable`, so one
 * destination's `mac` or `pop` token started the back-off that fails every destination (found in
 * review, sixteenth session; regression).
 */

const PAYMENTS: TokenTarget = { name: 'payments', resource: 'urn:ward:payments', audience: undefined, scope: '' };
const LEDGER: TokenTarget = { name: 'ledger', resource: 'urn:ward:ledger', audience: undefined, scope: '' };
const AT = 'urn:ietf:params:oauth:token-type:access_token';
const GOOD = { access_token: 'ok-token', token_type: 'Bearer', expires_in: 60, issued_token_type: AT };

let server: Server;
let url = '';
/** The token endpoint's 200 answer, by requested `resource`; GOOD for any other. */
const answers = new Map<string, Record<string, unknown>>();
let requests = 0;

beforeAll(async () => {
  server = createServer((req, res) => {
    let s = '';
    req.on('data', (c: Buffer) => (s += c.toString()));
    req.on('end', () => {
      requests++;
      const body = answers.get(new URLSearchParams(s).get('resource') ?? '') ?? GOOD;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));
beforeEach(() => {
  answers.clear();
  requests = 0;
});

const client = () => createTokenClient({ issuer: url, tokenEndpoint: `${url}/token`, clientId: 'orders-sidecar', clientSecret: 's', clientAuth: 'client_secret_basic', timeoutMs: 2000 });

describe('a 200 token response whose token_type is not Bearer', () => {
  // (openid-client lower-cases token_type; DPoP and N_A reach ward's own check, the rest its throw)
  it.each(['mac', 'pop', 'DPoP', 'N_A'])('token exchange answered with token_type %s: refused (unsupported_token_type), not unavailable', async (tokenType) => {
    answers.set('urn:ward:payments', { access_token: 'x', token_type: tokenType, expires_in: 60, issued_token_type: AT });
    expect(await client().exchange('subject-token', PAYMENTS)).toEqual({ ok: false, kind: 'refused', oauthError: 'unsupported_token_type', description: `token_type ${tokenType.toLowerCase()}`, status: 200 });
  });

  it.each(['N_A', 'mac', 'DPoP'])('client credentials answered with token_type %s: refused (unsupported_token_type), not unavailable', async (tokenType) => {
    answers.set('urn:ward:payments', { access_token: 'x', token_type: tokenType, expires_in: 60 });
    expect(await client().clientCredentials(PAYMENTS)).toMatchObject({ ok: false, kind: 'refused', oauthError: 'unsupported_token_type', status: 200 });
  });

  it('one destination\'s non-Bearer token is ERR_EXCHANGE_REFUSED and puts no destination into back-off', async () => {
    answers.set('urn:ward:payments', { access_token: 'x', token_type: 'pop', expires_in: 60, issued_token_type: AT });
    let now = 1_000_000;
    const broker = createTokenBroker({ client: client(), cacheEntries: 10, renewBeforeMs: 0, refusalCacheMs: 5000, retry: { initialMs: 60_000, maxMs: 60_000 }, clock: () => now, log: silentLogger, random: () => 1 });
    expect(await broker.token(PAYMENTS, 'subject-token')).toMatchObject({ ok: false, code: 'ERR_EXCHANGE_REFUSED', oauthError: 'unsupported_token_type' });
    expect(broker.stats()).toMatchObject({ backoffMs: 0, refused: 1, unavailable: 0 });
    // remembered like any refusal: the retrying app does not reach the IdP again
    expect(await broker.token(PAYMENTS, 'subject-token')).toMatchObject({ ok: false, code: 'ERR_EXCHANGE_REFUSED' });
    expect(requests).toBe(1);
    // another destination is asked, and gets its token
    now += 1;
    expect(await broker.token(LEDGER, 'other-subject')).toMatchObject({ ok: true, token: 'ok-token' });
    expect(requests).toBe(2);
  });
});

describe('classifyGrantError', () => {
  it('other unsupported operations stay unavailable: only the token_type throw carries the response body', () => {
    // as openid-client wraps oauth4webapi's UnsupportedOperationError for an ID token's alg
    const inner = Object.assign(new Error('unsupported JWS algorithm', { cause: { alg: 'none' } }), { name: 'UnsupportedOperationError' });
    const err = Object.assign(new oidc.ClientError('unsupported operation', { cause: inner }), { code: 'OAUTH_UNSUPPORTED_OPERATION' });
    expect(classifyGrantError(err)).toMatchObject({ ok: false, kind: 'unavailable' });
  });
});
