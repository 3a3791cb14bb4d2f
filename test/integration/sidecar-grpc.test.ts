import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startMesh, type Mesh, type OrdersClient } from './harness.ts';

/**
 * The sidecar end to end with real parts: the dev IdP (oidc-provider) issuing RFC 9068 tokens,
 * the sample gRPC app, a grpc-js client, policy from test/fixtures/policies/orders.yaml.
 * Every denial also asserts the app saw nothing.
 */
describe('sidecar: gRPC callers against the orders policy', () => {
  let mesh: Mesh;
  let client: OrdersClient;
  let reader: string;
  let writer: string;

  beforeAll(async () => {
    mesh = await startMesh();
    client = mesh.client();
    reader = await mesh.idp.token('reporting', 'urn:ward:orders', 'orders.read');
    writer = await mesh.idp.token('frontend', 'urn:ward:orders', 'orders.read orders.write');
  });
  afterAll(async () => {
    await mesh.close();
  });

  /** Runs a call that must be refused, and checks the app did not see it. */
  async function denied(method: string, token: string | undefined, request: Record<string, unknown> = { id: '1' }) {
    const before = mesh.app.calls.length;
    const r = await client.unary(method, request, token);
    expect(mesh.app.calls.length, 'a denied call reached the app').toBe(before);
    return r;
  }

  it('allows a reader to GetOrder and tells the app who called', async () => {
    const r = await client.unary('GetOrder', { id: '7' }, reader);
    expect(r.code).toBe(status.OK);
    expect(r.value?.id).toBe('7');
    expect(r.value?.seenSubject).toBe('reporting');
    const seen = mesh.app.calls.at(-1);
    expect(seen?.metadata['x-ward-issuer']).toBe(mesh.idp.issuer);
    const claims = JSON.parse(Buffer.from(seen?.metadata['x-ward-claims'] ?? '', 'base64url').toString()) as Record<string, unknown>;
    expect(claims.client_id).toBe('reporting');
    // exactly the claims the IdP signed: the token's own payload segment
    expect(seen?.metadata['x-ward-claims']).toBe(reader.split('.')[1]);
    expect(seen?.metadata['x-ward-decision-id']).toMatch(/.+/);
    // the caller gets the same decision id in the response headers
    expect(client.lastHeaders['x-ward-decision-id']).toBe(seen?.metadata['x-ward-decision-id']);
  });

  it('relays the app status and trailers', async () => {
    const nf = await client.unary('GetOrder', { id: 'missing' }, reader);
    expect(nf.code).toBe(status.NOT_FOUND);
    expect(nf.details).toBe('no such order');
    const created = await client.unary('CreateOrder', { id: '9', item: 'x', quantity: 2 }, writer);
    expect(created.code).toBe(status.OK);
    expect(created.trailers['x-order-trailer']).toBe('created');
  });

  it('refuses a call without a token: UNAUTHENTICATED, ERR_TOKEN_MISSING', async () => {
    const r = await denied('GetOrder', undefined);
    expect(r.code).toBe(status.UNAUTHENTICATED);
    expect(r.trailers['x-ward-reason']).toBe('ERR_TOKEN_MISSING');
    expect(r.trailers['x-ward-decision-id']).toMatch(/.+/);
  });

  it('refuses insufficient scope: PERMISSION_DENIED, ERR_SCOPE_INSUFFICIENT', async () => {
    const r = await denied('CreateOrder', reader, { id: '1', item: 'x', quantity: 1 });
    expect(r.code).toBe(status.PERMISSION_DENIED);
    expect(r.trailers['x-ward-reason']).toBe('ERR_SCOPE_INSUFFICIENT');
  });

  it('lets a deny rule win over scopes that would allow', async () => {
    const r = await denied('DeleteOrder', writer);
    expect(r.code).toBe(status.PERMISSION_DENIED);
    expect(r.trailers['x-ward-reason']).toBe('ERR_POLICY_DENIED');
  });

  it('refuses a token minted for another audience', async () => {
    const other = await mesh.idp.token('intruder', 'urn:ward:other');
    const r = await denied('GetOrder', other);
    expect(r.code).toBe(status.UNAUTHENTICATED);
    expect(r.trailers['x-ward-reason']).toBe('ERR_TOKEN_AUDIENCE');
  });

  it.each([
    ['expired', { exp: Math.floor(Date.now() / 1000) - 3600, iat: Math.floor(Date.now() / 1000) - 7200 }, {}, 'ERR_TOKEN_EXPIRED'],
    ['not yet valid', { nbf: Math.floor(Date.now() / 1000) + 3600 }, {}, 'ERR_TOKEN_NOT_YET_VALID'],
    ['an ID token (typ JWT)', {}, { typ: 'JWT' }, 'ERR_TOKEN_TYPE'],
    ['no exp', { exp: undefined }, {}, 'ERR_TOKEN_CLAIMS'],
    ['an unknown issuer', { iss: 'https://evil.example' }, {}, 'ERR_TOKEN_ISSUER_UNKNOWN'],
  ] as const)('refuses %s', async (_name, claims, header, code) => {
    const t = await mesh.idp.craft({ ...claims }, { ...header });
    const r = await denied('GetOrder', t);
    expect(r.code).toBe(status.UNAUTHENTICATED);
    expect(r.trailers['x-ward-reason']).toBe(code);
  });

  it('refuses alg none and a tampered signature', async () => {
    const good = await mesh.idp.craft();
    const [h, p, s] = good.split('.') as [string, string, string];
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'at+jwt' })).toString('base64url')}.${p}.`;
    expect((await denied('GetOrder', none)).trailers['x-ward-reason']).toBe('ERR_TOKEN_ALG_NOT_ALLOWED');
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...payload, scope: 'orders.read orders.write' })).toString('base64url')}.${s}`;
    const r = await denied('CreateOrder', forged, { id: '1' });
    expect(r.code).toBe(status.UNAUTHENTICATED);
    expect(r.trailers['x-ward-reason']).toBe('ERR_TOKEN_SIGNATURE');
  });

  it('accepts an opaque token through RFC 7662 introspection', async () => {
    const opaque = await mesh.idp.token('frontend', 'urn:ward:orders-opaque', 'orders.read');
    expect(opaque.split('.').length).not.toBe(3);
    const r = await client.unary('GetOrder', { id: '3' }, opaque);
    expect(r.code).toBe(status.OK);
    expect(r.value?.seenSubject).toBe('frontend');
    const bogus = await denied('GetOrder', 'NotARealOpaqueTokenValue1234567890');
    expect(bogus.trailers['x-ward-reason']).toBe('ERR_TOKEN_INACTIVE');
  });

  it('verifies tokens signed with a rotated key, and still accepts tokens of the old key', async () => {
    const oldToken = await mesh.idp.token('frontend', 'urn:ward:orders', 'orders.read');
    const oldKid = mesh.idp.currentKid;
    await mesh.idp.rotateKeys();
    expect(mesh.idp.currentKid).not.toBe(oldKid);
    const newToken = await mesh.idp.token('frontend', 'urn:ward:orders', 'orders.read');
    expect((await client.unary('GetOrder', { id: '1' }, newToken)).code).toBe(status.OK);
    expect((await client.unary('GetOrder', { id: '1' }, oldToken)).code).toBe(status.OK);
  });

  it('never writes a token into its logs', async () => {
    const tokens = [reader, writer, await mesh.idp.craft({ exp: 1 })];
    for (const t of tokens) await client.unary('GetOrder', { id: '1' }, t);
    const all = mesh.logs.join('');
    expect(all.length).toBeGreaterThan(0);
    for (const t of tokens) {
      expect(all).not.toContain(t);
      expect(all).not.toContain(t.split('.')[2] ?? 'x');
    }
  });
});
