/**
 * The verified-token cache against a key set that changes what a key may be used for: a hit is
 * served only while the key that verified it is still published for verification.
 */
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAuthenticator } from '../../../src/authn/authenticator.ts';
import type { Authenticator, AuthResult } from '../../../src/authn/authenticator.ts';
import { silentLogger } from '../../../src/lib/log.ts';
import type { IssuerTrust } from '../../../src/policy/model.ts';
import { FakeIdp, makeKey, mint } from './idp.ts';
import type { SigningKey } from './idp.ts';

const T0 = 1_900_000_000_000;
let now = T0;
const clock = (): number => now;
const nowSec = (): number => Math.floor(now / 1000);

let k1: SigningKey;
beforeAll(async () => {
  k1 = await makeKey('k1');
});

let idp: FakeIdp;
const created: Authenticator[] = [];
beforeEach(async () => {
  now = T0;
  idp = await FakeIdp.start();
  idp.published = [k1];
});
afterEach(async () => {
  for (const a of created.splice(0)) a.close();
  await idp.close();
});

function trust(over: Partial<IssuerTrust> = {}): IssuerTrust {
  return {
    issuer: idp.issuer,
    audiences: ['orders'],
    jwksUri: idp.jwksUri,
    discovery: false,
    algorithms: ['ES256'],
    requireAtJwtType: true,
    hmacSecret: undefined,
    introspection: false,
    requiredClaims: [],
    ...over,
  };
}

async function ready(cacheEntries: number, refreshIntervalMs = 3_600_000): Promise<Authenticator> {
  const a = createAuthenticator({
    clockSkewSeconds: 30,
    maxTokenBytes: 8192,
    cacheEntries,
    introspectionCacheMaxSeconds: 60,
    credentials: [],
    log: silentLogger,
    clock,
    jwks: { timeoutMs: 2000, refreshIntervalMs, cooldownMs: 30_000, graceMs: 600_000 },
  });
  created.push(a);
  a.setIssuers([trust()]);
  expect(await a.whenReady(5000)).toBe(true);
  return a;
}

const claims = (): Record<string, unknown> => ({
  iss: idp.issuer, sub: 'alice', aud: 'orders', client_id: 'web', iat: nowSec(), exp: nowSec() + 3600, jti: 'x',
});
const codeOf = (r: AuthResult): string => (r.ok ? 'OK' : r.error.code);

describe('verified-token cache vs JWKS changes', () => {
  it('a key whose key_ops no longer allow verify stops vouching for cached tokens (RFC 7517 §4.3; regression: served from the cache)', async () => {
    const a = await ready(100, 20);
    const token = await mint(k1, claims());
    expect(codeOf(await a.authenticate(token))).toBe('OK');
    // The IdP republishes the same key material, no longer for verification.
    idp.published = [{ ...k1, publicJwk: { ...k1.publicJwk, key_ops: ['encrypt'] } }];
    const h = idp.hits.jwks;
    await idp.waitForHits('jwks', h + 2); // a refresh round after the change has been applied

    // control: with the cache off, the same token is refused with the new key set
    const fresh = createAuthenticator({
      clockSkewSeconds: 30, maxTokenBytes: 8192, cacheEntries: 0, introspectionCacheMaxSeconds: 60, credentials: [],
      log: silentLogger, clock, jwks: { timeoutMs: 2000, refreshIntervalMs: 3_600_000, cooldownMs: 30_000, graceMs: 600_000 },
    });
    created.push(fresh);
    fresh.setIssuers([trust()]);
    expect(await fresh.whenReady(5000)).toBe(true);
    expect(codeOf(await fresh.authenticate(token))).toBe('ERR_TOKEN_KEY_UNKNOWN');

    // the cached sidecar must agree
    expect(codeOf(await a.authenticate(token))).toBe('ERR_TOKEN_KEY_UNKNOWN');
  });
});
