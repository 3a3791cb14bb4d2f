import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify } from 'jose';
import * as oc from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultDevIdpConfig } from '../../../src/devidp/config.ts';
import { startDevIdp } from '../../../src/devidp/provider.ts';
import { createLogger, silentLogger } from '../../../src/lib/log.ts';
import { startTestIdp, TOKEN_EXCHANGE, type TestIdp } from '../../support/idp.ts';

const json = async (url: string, init?: RequestInit): Promise<Record<string, unknown>> => (await (await fetch(url, init)).json()) as Record<string, unknown>;

describe('dev IdP', () => {
  let idp: TestIdp;
  beforeAll(async () => {
    idp = await startTestIdp();
  });
  afterAll(async () => {
    await idp.close();
  });

  it('binds loopback and publishes a discovery document for its issuer', async () => {
    expect(idp.issuer).toBe(`http://127.0.0.1:${idp.port}`);
    const d = await json(`${idp.issuer}/.well-known/openid-configuration`);
    expect(d['issuer']).toBe(idp.issuer);
    expect(d['token_endpoint']).toBe(idp.tokenEndpoint);
    expect(d['jwks_uri']).toBe(idp.jwksUri);
    expect(d['introspection_endpoint']).toBe(idp.introspectionEndpoint);
    expect(d['grant_types_supported']).toEqual(expect.arrayContaining(['client_credentials', TOKEN_EXCHANGE]));
    expect(d['token_endpoint_auth_methods_supported']).toEqual(expect.arrayContaining(['client_secret_basic', 'client_secret_post']));
  });

  it('publishes public signing keys only', async () => {
    const jwks = (await json(idp.jwksUri)) as { keys: Record<string, unknown>[] };
    expect(jwks.keys).toHaveLength(1);
    const [key] = jwks.keys;
    expect(key).toMatchObject({ kty: 'RSA', alg: 'RS256', use: 'sig', kid: idp.currentKid });
    for (const priv of ['d', 'p', 'q', 'dp', 'dq', 'qi']) expect(key).not.toHaveProperty(priv);
  });

  it('issues RFC 9068 JWT access tokens with client_credentials', async () => {
    const at = await idp.token('frontend', 'urn:ward:orders', 'orders.read orders.write not-a-scope');
    expect(decodeProtectedHeader(at)).toEqual({ alg: 'RS256', typ: 'at+jwt', kid: idp.currentKid });
    const { payload } = await jwtVerify(at, createRemoteJWKSet(new URL(idp.jwksUri)), {
      issuer: idp.issuer,
      audience: 'urn:ward:orders',
      typ: 'at+jwt',
    });
    expect(payload).toMatchObject({ sub: 'frontend', client_id: 'frontend', scope: 'orders.read orders.write' });
    expect(typeof payload.jti).toBe('string');
    expect((payload.exp ?? 0) - (payload.iat ?? 0)).toBe(300);
  });

  it('grants only the scopes configured for the client', async () => {
    const at = await idp.token('reporting', 'urn:ward:orders', 'orders.read orders.write');
    expect(decodeJwt(at)['scope']).toBe('orders.read');
  });

  it('answers invalid_target for a resource the client may not reach', async () => {
    const r = await idp.post('intruder', { grant_type: 'client_credentials', resource: 'urn:ward:orders', scope: 'orders.read' });
    expect(r.status).toBe(400);
    expect(r.body['error']).toBe('invalid_target');
    await expect(idp.token('intruder', 'urn:ward:orders')).rejects.toThrow(/invalid_target/);
  });

  it('refuses a wrong client secret', async () => {
    const res = await fetch(idp.tokenEndpoint, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from('frontend:wrong-secret').toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', resource: 'urn:ward:orders' }),
    });
    expect(res.status).toBe(401);
    expect(((await res.json()) as Record<string, unknown>)['error']).toBe('invalid_client');
  });

  it('issues opaque tokens that the serving client can introspect (RFC 7662)', async () => {
    const at = await idp.token('frontend', 'urn:ward:orders-opaque', 'orders.read');
    expect(at.split('.')).toHaveLength(1);
    const r = await idp.introspect('orders-sidecar', at);
    expect(r).toMatchObject({ active: true, client_id: 'frontend', aud: 'urn:ward:orders-opaque', scope: 'orders.read', iss: idp.issuer });
  });

  it('reports inactive for unknown tokens and for clients that do not serve the audience', async () => {
    expect(await idp.introspect('orders-sidecar', 'no-such-token')).toEqual({ active: false });
    const at = await idp.token('frontend', 'urn:ward:orders-opaque', 'orders.read');
    expect(await idp.introspect('payments-sidecar', at)).toEqual({ active: false });
  });

  it('exchanges a token for another resource with an act claim (RFC 8693)', async () => {
    const subject = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const r = await idp.exchange('orders-sidecar', subject, 'urn:ward:payments', 'payments.charge');
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      token_type: 'Bearer',
      expires_in: 120,
      scope: 'payments.charge',
    });
    const { payload, protectedHeader } = await jwtVerify(r.body['access_token'] as string, createRemoteJWKSet(new URL(idp.jwksUri)), {
      issuer: idp.issuer,
      audience: 'urn:ward:payments',
      typ: 'at+jwt',
    });
    expect(protectedHeader.kid).toBe(idp.currentKid);
    expect(payload).toMatchObject({ sub: 'frontend', client_id: 'orders-sidecar', act: { sub: 'orders-sidecar' }, scope: 'payments.charge' });
  });

  it('nests the prior delegation chain in act on a second exchange', async () => {
    const subject = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const first = await idp.exchange('orders-sidecar', subject, 'urn:ward:payments', 'payments.charge');
    const second = await idp.exchange('payments-sidecar', first.body['access_token'] as string, 'urn:ward:ledger', 'ledger.append');
    expect(second.status).toBe(200);
    expect(decodeJwt(second.body['access_token'] as string)).toMatchObject({
      sub: 'frontend',
      client_id: 'payments-sidecar',
      aud: 'urn:ward:ledger',
      act: { sub: 'payments-sidecar', act: { sub: 'orders-sidecar' } },
    });
  });

  it('exchanges opaque subject tokens too', async () => {
    const subject = await idp.token('frontend', 'urn:ward:orders-opaque', 'orders.read');
    const r = await idp.exchange('orders-sidecar', subject, 'urn:ward:payments', 'payments.charge');
    expect(r.status).toBe(200);
    expect(decodeJwt(r.body['access_token'] as string)).toMatchObject({ sub: 'frontend', act: { sub: 'orders-sidecar' } });
  });

  it('refuses an exchange target the client may not reach with invalid_target', async () => {
    const subject = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const r = await idp.exchange('orders-sidecar', subject, 'urn:ward:ledger', 'ledger.append');
    expect(r.status).toBe(400);
    expect(r.body['error']).toBe('invalid_target');
  });

  it('refuses subject tokens that are forged, expired or not addressed to the exchanging client', async () => {
    const other = await idp.token('intruder', 'urn:ward:other', 'other.read');
    const notServed = await idp.exchange('orders-sidecar', other, 'urn:ward:payments');
    expect(notServed.body['error']).toBe('invalid_request');

    const expired = await idp.craft({ exp: Math.floor(Date.now() / 1000) - 60 });
    expect((await idp.exchange('orders-sidecar', expired, 'urn:ward:payments')).body['error']).toBe('invalid_request');

    const valid = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const [h, p] = valid.split('.');
    const tampered = `${h}.${p}.${'A'.repeat(342)}`;
    expect((await idp.exchange('orders-sidecar', tampered, 'urn:ward:payments')).body['error']).toBe('invalid_request');
  });

  it('refuses the exchange grant to clients not registered for it', async () => {
    const subject = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const r = await idp.exchange('frontend', subject, 'urn:ward:orders');
    // oidc-provider answers invalid_request ("requested grant type is not allowed for this client")
    expect(r.status).toBe(400);
    expect(r.body['error']).toBe('invalid_request');
    expect(r.body).not.toHaveProperty('access_token');
  });

  it('signToken signs arbitrary claims with the current key', async () => {
    const t = await idp.craft({ aud: 'urn:ward:elsewhere', scope: undefined });
    expect(decodeProtectedHeader(t)).toEqual({ alg: 'RS256', typ: 'at+jwt', kid: idp.currentKid });
    const { payload } = await jwtVerify(t, createRemoteJWKSet(new URL(idp.jwksUri)), { issuer: idp.issuer });
    expect(payload['aud']).toBe('urn:ward:elsewhere');
    expect(payload).not.toHaveProperty('scope');
    const odd = await idp.signToken({ sub: 'x' }, { typ: 'JWT' });
    expect(decodeProtectedHeader(odd).typ).toBe('JWT');
    expect(decodeJwt(odd)).toEqual({ sub: 'x' });
  });
});

describe('dev IdP key rotation', () => {
  let idp: TestIdp;
  beforeAll(async () => {
    idp = await startTestIdp({ retainedKeys: 1 });
  });
  afterAll(async () => {
    await idp.close();
  });

  it('signs new tokens with the new key and keeps the old one published', async () => {
    const kid1 = idp.currentKid;
    const before = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const opaque = await idp.token('frontend', 'urn:ward:orders-opaque', 'orders.read');
    await idp.rotateKeys();
    const kid2 = idp.currentKid;
    expect(kid2).not.toBe(kid1);

    const after = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    expect(decodeProtectedHeader(after).kid).toBe(kid2);
    expect(decodeProtectedHeader(await idp.signToken({ sub: 'x' })).kid).toBe(kid2);

    const jwks = (await json(idp.jwksUri)) as { keys: { kid: string }[] };
    expect(jwks.keys.map((k) => k.kid)).toEqual([kid2, kid1]);

    // a verifier that fetches the JWKS now still accepts the token signed before the rotation
    const remote = createRemoteJWKSet(new URL(idp.jwksUri));
    for (const t of [before, after]) await expect(jwtVerify(t, remote, { issuer: idp.issuer, typ: 'at+jwt' })).resolves.toBeDefined();
    // state survives the rotation: opaque tokens issued before it still introspect
    expect(await idp.introspect('orders-sidecar', opaque)).toMatchObject({ active: true });
    // and exchange accepts subject tokens signed by the retained key
    expect((await idp.exchange('orders-sidecar', before, 'urn:ward:payments', 'payments.charge')).status).toBe(200);
  });

  it('drops keys older than retainedKeys, and tokens they signed stop verifying', async () => {
    const old = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const oldKid = decodeProtectedHeader(old).kid;
    await idp.rotateKeys();
    await idp.rotateKeys();
    const jwks = (await json(idp.jwksUri)) as { keys: { kid: string }[] };
    expect(jwks.keys).toHaveLength(2);
    expect(jwks.keys.map((k) => k.kid)).not.toContain(oldKid);
    await expect(jwtVerify(old, createRemoteJWKSet(new URL(idp.jwksUri)), { issuer: idp.issuer })).rejects.toBeInstanceOf(
      joseErrors.JWKSNoMatchingKey,
    );
  });

  it('rotates on POST /dev/rotate-keys and refuses other methods', async () => {
    const kid = idp.currentKid;
    expect((await fetch(`${idp.issuer}/dev/rotate-keys`)).status).toBe(405);
    expect(idp.currentKid).toBe(kid);
    const r = await json(`${idp.issuer}/dev/rotate-keys`, { method: 'POST' });
    expect(r['kid']).toBe(idp.currentKid);
    expect(idp.currentKid).not.toBe(kid);
  });

  it('serializes concurrent rotations', async () => {
    const before = idp.currentKid;
    await Promise.all([idp.rotateKeys(), idp.rotateKeys(), idp.rotateKeys()]);
    expect(idp.currentKid).not.toBe(before);
    const jwks = (await json(idp.jwksUri)) as { keys: { kid: string }[] };
    expect(jwks.keys).toHaveLength(2);
    expect(jwks.keys[0]?.kid).toBe(idp.currentKid);
  });
});

describe('dev IdP start-up', () => {
  it.each(['0.0.0.0', '192.168.1.10', 'example.com', '::'])('refuses to listen on %s', async (host) => {
    await expect(startDevIdp({ ...defaultDevIdpConfig(), host, port: 0 }, { log: silentLogger })).rejects.toThrow(/loopback only/);
  });

  it('signs with ES256 when configured', async () => {
    const idp = await startTestIdp({ signingAlg: 'ES256' });
    try {
      const at = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
      expect(decodeProtectedHeader(at)).toMatchObject({ alg: 'ES256', typ: 'at+jwt' });
      await expect(jwtVerify(at, createRemoteJWKSet(new URL(idp.jwksUri)), { issuer: idp.issuer })).resolves.toBeDefined();
    } finally {
      await idp.close();
    }
  });

  it('logs a DEVELOPMENT ONLY notice and never a token', async () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'debug', sink: { write: (l) => lines.push(l) } });
    const idp = await startTestIdp({}, { log });
    try {
      const at = await idp.token('frontend', 'urn:ward:orders', 'orders.read');
      await idp.post('intruder', { grant_type: 'client_credentials', resource: 'urn:ward:orders' });
      const out = lines.join('');
      expect(out).toContain('DEVELOPMENT ONLY');
      expect(out).toContain('token request refused');
      expect(out).not.toContain(at);
      expect(out).not.toContain('frontend-secret');
    } finally {
      await idp.close();
    }
  });

  it('keeps two IdPs in one process apart', async () => {
    const a = await startTestIdp();
    const b = await startTestIdp();
    try {
      const opaque = await a.token('frontend', 'urn:ward:orders-opaque', 'orders.read');
      expect(await a.introspect('orders-sidecar', opaque)).toMatchObject({ active: true });
      expect(await b.introspect('orders-sidecar', opaque)).toEqual({ active: false });
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});

describe('dev IdP with openid-client (how the sidecar talks to it)', () => {
  let idp: TestIdp;
  beforeAll(async () => {
    idp = await startTestIdp();
  });
  afterAll(async () => {
    await idp.close();
  });

  it('serves discovery, client_credentials (client_secret_post), token exchange and introspection', async () => {
    const as = (clientId: string): Promise<oc.Configuration> =>
      oc.discovery(new URL(idp.issuer), clientId, `${clientId}-secret`, undefined, { execute: [oc.allowInsecureRequests] });

    const frontend = await as('frontend');
    expect(frontend.serverMetadata().issuer).toBe(idp.issuer);
    const tokens = await oc.clientCredentialsGrant(frontend, { resource: 'urn:ward:orders-opaque', scope: 'orders.read' });
    expect(tokens.token_type.toLowerCase()).toBe('bearer');

    const sidecar = await as('orders-sidecar');
    const info = await oc.tokenIntrospection(sidecar, tokens.access_token);
    expect(info).toMatchObject({ active: true, client_id: 'frontend', aud: 'urn:ward:orders-opaque' });

    const exchanged = await oc.genericGrantRequest(sidecar, TOKEN_EXCHANGE, {
      subject_token: tokens.access_token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      resource: 'urn:ward:payments',
      scope: 'payments.charge',
    });
    expect(exchanged['issued_token_type']).toBe('urn:ietf:params:oauth:token-type:access_token');
    expect(decodeJwt(exchanged.access_token)).toMatchObject({ sub: 'frontend', act: { sub: 'orders-sidecar' }, aud: 'urn:ward:payments' });

    await expect(
      oc.genericGrantRequest(sidecar, TOKEN_EXCHANGE, {
        subject_token: tokens.access_token,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        resource: 'urn:ward:ledger',
      }),
    ).rejects.toMatchObject({ error: 'invalid_target' });
  });
});
