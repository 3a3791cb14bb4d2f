import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultDevIdpConfig } from '../../../src/devidp/config.ts';
import { startTestIdp, type TestIdp } from '../../support/idp.ts';

/**
 * docs/outbound.md "The token request": in the dev IdP an exchanged token "expires no later than
 * the subject token", so a delegated token does not outlive the credential it came from. It got
 * the target resource's full TTL (urn:ward:payments: 120 s) whatever the subject token's `exp`,
 * so the destination, and its own egress exchanging onward, held a live token up to two minutes
 * after the caller's had expired (found in review, sixteenth session; regression).
 */

const OPAQUE_TTL_S = 15;
let idp: TestIdp;

beforeAll(async () => {
  // urn:ward:orders-opaque issues short-lived opaque subject tokens; urn:ward:payments keeps 120 s
  const base = defaultDevIdpConfig();
  idp = await startTestIdp({ resourceServers: base.resourceServers.map((rs) => (rs.resource === 'urn:ward:orders-opaque' ? { ...rs, accessTokenTtlSeconds: OPAQUE_TTL_S } : rs)) });
});
afterAll(async () => {
  await idp.close();
});

const nowS = (): number => Math.floor(Date.now() / 1000);

describe('dev IdP token exchange: the issued token lives no longer than the subject token', () => {
  it('a JWT subject token with 20 s left: the exchanged token expires by then, not 120 s on', async () => {
    const subjectExp = nowS() + 20;
    // frontend → urn:ward:orders, scope orders.read, exp in 20 s (signed by the IdP's current key)
    const subject = await idp.craft({ sub: 'dave', exp: subjectExp });
    const r = await idp.exchange('orders-sidecar', subject, 'urn:ward:payments', 'payments.charge');
    expect(r.status).toBe(200);
    const claims = decodeJwt(r.body['access_token'] as string);
    expect(claims).toMatchObject({ sub: 'dave', aud: 'urn:ward:payments', act: { sub: 'orders-sidecar' } });
    expect(claims.exp).toBeLessThanOrEqual(subjectExp);
    expect(r.body['expires_in']).toBeGreaterThan(0);
    expect(r.body['expires_in']).toBeLessThanOrEqual(20);
    // what the answer says is what the token says
    expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBe(r.body['expires_in']);
  });

  it('control: a subject token with longer left than the resource TTL gets the resource TTL', async () => {
    const subject = await idp.craft({ exp: nowS() + 3600 });
    const r = await idp.exchange('orders-sidecar', subject, 'urn:ward:payments');
    expect(r.status).toBe(200);
    expect(r.body['expires_in']).toBe(120);
  });

  it('an opaque subject token: bounded by its own exp too', async () => {
    const subject = await idp.token('frontend', 'urn:ward:orders-opaque', 'orders.read');
    expect(subject.split('.')).toHaveLength(1);
    const subjectExp = (await idp.introspect('orders-sidecar', subject))['exp'];
    expect(typeof subjectExp).toBe('number');
    const r = await idp.exchange('orders-sidecar', subject, 'urn:ward:payments', 'payments.charge');
    expect(r.status).toBe(200);
    expect(decodeJwt(r.body['access_token'] as string).exp).toBeLessThanOrEqual(subjectExp as number);
    expect(r.body['expires_in']).toBeLessThanOrEqual(OPAQUE_TTL_S);
  });

  it('down a chain: the second hop\'s token expires no later than the first caller\'s', async () => {
    const subjectExp = nowS() + 20;
    const subject = await idp.craft({ exp: subjectExp });
    const first = await idp.exchange('orders-sidecar', subject, 'urn:ward:payments', 'payments.charge');
    const second = await idp.exchange('payments-sidecar', first.body['access_token'] as string, 'urn:ward:ledger', 'ledger.append');
    expect(second.status).toBe(200);
    expect(decodeJwt(second.body['access_token'] as string).exp).toBeLessThanOrEqual(subjectExp);
  });
});
