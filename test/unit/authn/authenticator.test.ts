import type { ServerResponse } from 'node:http';
import { exportSPKI, importJWK, SignJWT } from 'jose';
import type { CryptoKey } from 'jose';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAuthenticator } from '../../../src/authn/authenticator.ts';
import type { AuthenticatorOptions, Authenticator, AuthResult } from '../../../src/authn/authenticator.ts';
import { identityClaimsHeader } from '../../../src/inbound/headers.ts';
import { inheritsNothing } from '../../../src/authn/json.ts';
import { createLogger, silentLogger } from '../../../src/lib/log.ts';
import type { IssuerTrust } from '../../../src/policy/model.ts';
import { b64url, FakeIdp, makeKey, mint, mintRaw } from './idp.ts';
import type { SigningKey } from './idp.ts';

/** Fake clock: 2030-03-17T17:46:40Z. Every token's times are relative to it. */
const T0 = 1_900_000_000_000;
let now = T0;
const clock = (): number => now;
const nowSec = (): number => Math.floor(now / 1000);

let k1: SigningKey; // ES256, published
let k2: SigningKey; // ES256, published later (rotation)
let k3: SigningKey; // ES256, never published
let rsa: SigningKey; // RS256, published
let rogue: SigningKey; // ES256 with kid "k1" but other key material

beforeAll(async () => {
  [k1, k2, k3, rsa, rogue] = await Promise.all([
    makeKey('k1'),
    makeKey('k2'),
    makeKey('k3'),
    makeKey('r1', 'RS256'),
    makeKey('k1'),
  ]);
});

let idp: FakeIdp;
const created: Authenticator[] = [];
const extraIdps: FakeIdp[] = [];

beforeEach(async () => {
  now = T0;
  idp = await FakeIdp.start({ clientId: 'orders-sidecar', clientSecret: 's3cr:et' });
  idp.published = [k1, rsa];
});

afterEach(async () => {
  for (const a of created.splice(0)) a.close();
  await idp.close();
  for (const i of extraIdps.splice(0)) await i.close();
});

function trust(over: Partial<IssuerTrust> = {}): IssuerTrust {
  return {
    issuer: idp.issuer,
    audiences: ['orders'],
    jwksUri: undefined,
    discovery: true,
    algorithms: ['ES256', 'RS256'],
    requireAtJwtType: true,
    hmacSecret: undefined,
    introspection: false,
    requiredClaims: [],
    ...over,
  };
}

type Over = Partial<Omit<AuthenticatorOptions, 'jwks'>> & { jwks?: Partial<AuthenticatorOptions['jwks']> };

function make(issuers: readonly IssuerTrust[] = [trust()], over: Over = {}): Authenticator {
  const a = createAuthenticator({
    clockSkewSeconds: 30,
    maxTokenBytes: 8192,
    cacheEntries: 100,
    introspectionCacheMaxSeconds: 60,
    credentials: [{ issuer: idp.issuer, clientId: 'orders-sidecar', clientSecret: 's3cr:et' }],
    log: silentLogger,
    clock,
    ...over,
    jwks: { timeoutMs: 2000, refreshIntervalMs: 3_600_000, cooldownMs: 30_000, graceMs: 600_000, ...over.jwks },
  });
  created.push(a);
  a.setIssuers(issuers);
  return a;
}

async function ready(issuers?: readonly IssuerTrust[], over?: Over): Promise<Authenticator> {
  const a = make(issuers, over);
  expect(await a.whenReady(5000)).toBe(true);
  return a;
}

let jti = 0;
/** A valid RFC 9068 claim set for audience `orders`, 5 minutes left. */
function claims(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    iss: idp.issuer,
    sub: 'alice',
    aud: 'orders',
    client_id: 'web',
    iat: nowSec(),
    exp: nowSec() + 300,
    jti: `t${++jti}`,
    scope: 'orders:read orders:write',
    ...over,
  };
}

function codeOf(r: AuthResult): string {
  return r.ok ? 'OK' : r.error.code;
}
async function code(a: Authenticator, token: string): Promise<string> {
  return codeOf(await a.authenticate(token));
}
function isPromise(v: unknown): boolean {
  return v instanceof Promise;
}

describe('JWT verification: success', () => {
  it('verifies an ES256 RFC 9068 token found via discovery and builds the identity', async () => {
    const a = await ready();
    const exp = nowSec() + 300;
    const token = await mint(k1, claims({ exp, act: { sub: 'gateway', act: { sub: 'frontend' } } }));
    const r = await a.authenticate(token);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const id = r.identity;
    expect(id.issuer).toBe(idp.issuer);
    expect(id.subject).toBe('alice');
    expect(id.tokenKind).toBe('jwt');
    expect(id.expiresAt).toBe(exp);
    expect(id.actors).toEqual(['gateway', 'frontend']);
    expect([...id.scopes]).toEqual(['orders:read', 'orders:write']);
    expect(id.claims['client_id']).toBe('web');
    expect(Object.isFrozen(id)).toBe(true);
    expect(Object.isFrozen(id.claims)).toBe(true);
    expect(Object.isFrozen(id.claims['act'])).toBe(true);
    expect(inheritsNothing(id.claims)).toBe(true);
    expect(id.claims['constructor']).toBeUndefined();
    expect(idp.hits.discovery).toBe(1);
    expect(idp.hits.jwks).toBe(1);
  });

  it('uses an explicit jwksUri without discovery, RS256, scp array, client_id as subject', async () => {
    const a = await ready([trust({ jwksUri: idp.jwksUri, discovery: false })]);
    const token = await mint(rsa, claims({ sub: undefined, scope: undefined, scp: ['a', 'b'] }));
    const r = await a.authenticate(token);
    expect(r.ok && r.identity.subject).toBe('web');
    expect(r.ok && [...r.identity.scopes]).toEqual(['a', 'b']);
    expect(idp.hits.discovery).toBe(0);
  });

  it('verifies PS256 and EdDSA (Ed25519) keys too', async () => {
    const [ps, ed] = await Promise.all([makeKey('p1', 'PS256'), makeKey('e1', 'EdDSA')]);
    idp.published = [ps, ed];
    const a = await ready([trust({ algorithms: ['PS256', 'EdDSA'] })]);
    expect(await code(a, await mint(ps, claims()))).toBe('OK');
    expect(await code(a, await mint(ed, claims()))).toBe('OK');
    // the PS256 key's JWK says alg PS256: an RS256 token under its kid finds no key
    const b = await ready([trust({ algorithms: ['PS256', 'RS256'] })]);
    const rsUnderPsKid = `${b64url(JSON.stringify({ alg: 'RS256', kid: 'p1', typ: 'at+jwt' }))}.${b64url(JSON.stringify(claims()))}.c2ln`;
    expect(await code(b, rsUnderPsKid)).toBe('ERR_TOKEN_KEY_UNKNOWN');
  });

  it('accepts application/at+jwt, and any typ when requireAtJwtType is false', async () => {
    const a = await ready();
    expect(await code(a, await mint(k1, claims(), { typ: 'application/at+jwt' }))).toBe('OK');
    expect(await code(a, await mint(k1, claims(), { typ: 'AT+JWT' }))).toBe('OK');
    const b = await ready([trust({ requireAtJwtType: false })]);
    expect(await code(b, await mint(k1, claims(), { typ: 'JWT' }))).toBe('OK');
  });

  it('accepts an aud array containing one accepted audience, and times within the skew', async () => {
    const a = await ready();
    expect(await code(a, await mint(k1, claims({ aud: ['billing', 'orders'] })))).toBe('OK');
    expect(await code(a, await mint(k1, claims({ exp: nowSec() - 29 })))).toBe('OK');
    expect(await code(a, await mint(k1, claims({ nbf: nowSec() + 29, iat: nowSec() + 29 })))).toBe('OK');
  });

  it('refuses a sender-constrained JWT (cnf: DPoP or mutual-TLS bound), which it cannot hold to its proof of possession', async () => {
    const a = await ready();
    expect(await code(a, await mint(k1, claims({ cnf: { jkt: 'ZjU2ZGU3' } })))).toBe('ERR_TOKEN_TYPE');
    expect(await code(a, await mint(k1, claims({ cnf: { 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' } })))).toBe('ERR_TOKEN_TYPE');
  });

  it('HS256 verifies with the configured secret only', async () => {
    const secret = new TextEncoder().encode('a-32-byte-long-shared-secret!!!!');
    const a = await ready([trust({ algorithms: ['HS256'], hmacSecret: secret })]);
    const good = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).sign(secret);
    expect(await code(a, good)).toBe('OK');
    const other = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).sign(new TextEncoder().encode('another-secret-of-32-bytes-long!'));
    expect(await code(a, other)).toBe('ERR_TOKEN_SIGNATURE');
    expect(idp.hits.jwks).toBe(0); // an HMAC-only issuer needs no key fetch
  });
});

describe('JWT verification: every rejection code', () => {
  it('ERR_TOKEN_TOO_LARGE before anything else', async () => {
    const a = await ready([trust()], { maxTokenBytes: 300 });
    const r = a.authenticate('a'.repeat(301));
    expect(isPromise(r)).toBe(false);
    expect(codeOf(await r)).toBe('ERR_TOKEN_TOO_LARGE');
  });

  it('ERR_TOKEN_MALFORMED for broken structure, JSON, duplicates and prototype keys', async () => {
    const a = await ready();
    const h = b64url(JSON.stringify({ alg: 'ES256', kid: 'k1', typ: 'at+jwt' }));
    const p = b64url(JSON.stringify(claims()));
    const malformed = [
      '',
      '..',
      `${h}..sig`,
      `.${p}.sig`,
      `${h}.${p}.si+g`, // not base64url
      `${h}=.${p}.sig`, // padding
      `${b64url('not json')}.${p}.sig`,
      `${h}.${b64url('[1,2]')}.sig`, // payload not an object
      `${b64url('{"alg":"ES256","alg":"ES256"}')}.${p}.sig`,
      `${h}.${b64url(new Uint8Array([0x7b, 0xff, 0x7d]))}.sig`, // not UTF-8
      'a.b.c.d', // neither a JWT nor a b64token-only opaque token (no introspection issuer)
      'opaque-token-without-introspection',
      '\u00e9\u00e9\u00e9',
    ];
    for (const t of malformed) expect(await code(a, t), t).toBe('ERR_TOKEN_MALFORMED');
  });

  it('a JWT identity carries its payload segment as signed; the identity header sends it byte for byte', async () => {
    const a = await ready();
    // JSON as an IdP may write it, which JSON.stringify would not: spaces, a \u escape
    const raw = JSON.stringify(claims(), null, 1).replace('"alice"', '"\\u0061lice"');
    const token = await mintRaw(k1, raw);
    const r = await a.authenticate(token);
    if (!r.ok) throw new Error(r.error.code);
    expect(r.identity.subject).toBe('alice');
    expect(r.identity.claimsBase64url).toBe(token.split('.')[1]);
    expect(identityClaimsHeader(r.identity)).toBe(token.split('.')[1]);
    expect(Buffer.from(identityClaimsHeader(r.identity) ?? '', 'base64url').toString()).toBe(raw);
  });

  it('claims in UTF-8 beyond ASCII are decoded as UTF-8 (not byte by byte)', async () => {
    const a = await ready();
    const r = await a.authenticate(await mintRaw(k1, JSON.stringify(claims({ name: 'Zoë Ångström 日本' }))));
    if (!r.ok) throw new Error(r.error.code);
    expect(r.identity.claims['name']).toBe('Zoë Ångström 日本');
  });

  it('duplicate claims and __proto__ are refused even under a valid signature', async () => {
    const a = await ready();
    const c = claims();
    const base = JSON.stringify(c).slice(0, -1);
    expect(await code(a, await mintRaw(k1, `${base},"sub":"admin"}`))).toBe('ERR_TOKEN_MALFORMED');
    expect(await code(a, await mintRaw(k1, `${base},"__proto__":{"admin":true}}`))).toBe('ERR_TOKEN_MALFORMED');
    // `constructor` is inert data in a null-prototype claim set
    const r = await a.authenticate(await mintRaw(k1, `${base},"constructor":{"prototype":{"admin":true}}}`));
    expect(r.ok).toBe(true);
    expect(({} as Record<string, unknown>)['admin']).toBeUndefined();
  });

  it('ERR_TOKEN_MALFORMED for key-carrying headers and crit, even when signed', async () => {
    const a = await ready();
    expect(await code(a, await mint(k1, claims(), { jwk: k1.publicJwk }))).toBe('ERR_TOKEN_MALFORMED');
    expect(await code(a, await mint(k1, claims(), { jku: `${idp.issuer}/jwks` }))).toBe('ERR_TOKEN_MALFORMED');
    expect(await code(a, await mint(k1, claims(), { x5u: `${idp.issuer}/x5u` }))).toBe('ERR_TOKEN_MALFORMED');
    expect(await code(a, await mint(k1, claims(), { x5c: ['MIIB'] }))).toBe('ERR_TOKEN_MALFORMED');
    // RFC 7797 b64 is a crit extension jose can sign; we implement no crit extension at all
    expect(await code(a, await mintRaw(k1, JSON.stringify(claims()), { b64: true, crit: ['b64'] }))).toBe('ERR_TOKEN_MALFORMED');
    const unknownCrit = `${b64url(JSON.stringify({ alg: 'ES256', kid: 'k1', typ: 'at+jwt', crit: ['x'], x: 1 }))}.${b64url(JSON.stringify(claims()))}.c2ln`;
    expect(await code(a, unknownCrit)).toBe('ERR_TOKEN_MALFORMED');
  });

  it('ERR_TOKEN_ALG_NOT_ALLOWED for alg none, whatever the case', async () => {
    const a = await ready();
    for (const alg of ['none', 'None', 'NONE']) {
      const t = `${b64url(JSON.stringify({ alg, typ: 'at+jwt' }))}.${b64url(JSON.stringify(claims()))}.`;
      expect(await code(a, t), alg).toBe('ERR_TOKEN_ALG_NOT_ALLOWED');
    }
  });

  it('ERR_TOKEN_ALG_NOT_ALLOWED for HS256 keyed with the RSA public key (alg confusion)', async () => {
    const a = await ready();
    const pem = await exportSPKI((await importJWK(rsa.publicJwk, 'RS256')) as CryptoKey);
    const forged = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', kid: 'r1', typ: 'at+jwt' }).sign(new TextEncoder().encode(pem));
    expect(await code(a, forged)).toBe('ERR_TOKEN_ALG_NOT_ALLOWED');
    // HS256 listed but no secret configured: still not allowed
    const b = await ready([trust({ algorithms: ['RS256', 'HS256'] })]);
    expect(await code(b, forged)).toBe('ERR_TOKEN_ALG_NOT_ALLOWED');
    // with a secret configured, HS256 is verified with that secret only, never a JWKS key
    const c = await ready([trust({ algorithms: ['RS256', 'HS256'], hmacSecret: new TextEncoder().encode('a-32-byte-long-shared-secret!!!!') })]);
    expect(await code(c, forged)).toBe('ERR_TOKEN_SIGNATURE');
  });

  it('ERR_TOKEN_ALG_NOT_ALLOWED for an algorithm this issuer does not allow', async () => {
    // RS256 is allowed for another issuer (so it passes the issuer-independent filter) but not ours
    const a = await ready([
      trust({ algorithms: ['ES256'] }),
      trust({ issuer: 'https://other.example', algorithms: ['RS256'], jwksUri: idp.jwksUri, discovery: false }),
    ]);
    expect(await code(a, await mint(rsa, claims()))).toBe('ERR_TOKEN_ALG_NOT_ALLOWED');
    expect(await code(a, await mint(k1, claims()))).toBe('OK');
    expect(await code(a, await mint(rsa, claims({ iss: 'https://other.example' })))).toBe('OK');
  });

  it('ERR_TOKEN_ISSUER_UNKNOWN for a missing, foreign or not-exactly-equal iss', async () => {
    const a = await ready();
    expect(await code(a, await mint(k1, claims({ iss: undefined })))).toBe('ERR_TOKEN_ISSUER_UNKNOWN');
    expect(await code(a, await mint(k1, claims({ iss: 'https://evil.example' })))).toBe('ERR_TOKEN_ISSUER_UNKNOWN');
    expect(await code(a, await mint(k1, claims({ iss: `${idp.issuer}/` })))).toBe('ERR_TOKEN_ISSUER_UNKNOWN');
    expect(await code(a, await mint(k1, claims({ iss: 42 })))).toBe('ERR_TOKEN_ISSUER_UNKNOWN');
  });

  it('ERR_TOKEN_TYPE when typ is not at+jwt', async () => {
    const a = await ready();
    expect(await code(a, await mint(k1, claims(), { typ: 'JWT' }))).toBe('ERR_TOKEN_TYPE');
    expect(await code(a, await mint(k1, claims(), { typ: undefined }))).toBe('ERR_TOKEN_TYPE');
    expect(await code(a, await mint(k1, claims(), { typ: 'dpop+jwt' }))).toBe('ERR_TOKEN_TYPE');
  });

  it('ERR_TOKEN_EXPIRED / ERR_TOKEN_NOT_YET_VALID with the skew, ERR_TOKEN_CLAIMS without exp', async () => {
    const a = await ready();
    expect(await code(a, await mint(k1, claims({ exp: nowSec() - 30 })))).toBe('ERR_TOKEN_EXPIRED');
    expect(await code(a, await mint(k1, claims({ nbf: nowSec() + 31 })))).toBe('ERR_TOKEN_NOT_YET_VALID');
    expect(await code(a, await mint(k1, claims({ iat: nowSec() + 31 })))).toBe('ERR_TOKEN_NOT_YET_VALID');
    expect(await code(a, await mint(k1, claims({ exp: undefined })))).toBe('ERR_TOKEN_CLAIMS');
    expect(await code(a, await mint(k1, claims({ exp: String(nowSec() + 60) })))).toBe('ERR_TOKEN_CLAIMS');
    expect(await code(a, await mintRaw(k1, JSON.stringify(claims()).replace(/"exp":\d+/, '"exp":1e999')))).toBe('ERR_TOKEN_MALFORMED');
  });

  it('ERR_TOKEN_AUDIENCE for a missing or foreign aud', async () => {
    const a = await ready();
    expect(await code(a, await mint(k1, claims({ aud: 'billing' })))).toBe('ERR_TOKEN_AUDIENCE');
    expect(await code(a, await mint(k1, claims({ aud: ['billing', 'shipping'] })))).toBe('ERR_TOKEN_AUDIENCE');
    expect(await code(a, await mint(k1, claims({ aud: undefined })))).toBe('ERR_TOKEN_AUDIENCE');
    expect(await code(a, await mint(k1, claims({ aud: ['orders'.toUpperCase()] })))).toBe('ERR_TOKEN_AUDIENCE');
    // an issuer with no audiences accepts none (fail closed)
    const b = await ready([trust({ audiences: [] })]);
    expect(await code(b, await mint(k1, claims()))).toBe('ERR_TOKEN_AUDIENCE');
  });

  it('ERR_TOKEN_CLAIMS for missing required claims and bad claim shapes', async () => {
    const a = await ready([trust({ requiredClaims: ['jti', 'tenant'] })]);
    expect(await code(a, await mint(k1, claims()))).toBe('ERR_TOKEN_CLAIMS');
    expect(await code(a, await mint(k1, claims({ tenant: 'acme' })))).toBe('OK');
    const b = await ready();
    const deep = (n: number): Record<string, unknown> => (n === 0 ? { sub: 'x' } : { sub: `a${n}`, act: deep(n - 1) });
    expect(await code(b, await mint(k1, claims({ act: deep(7) })))).toBe('OK'); // 8 actors
    expect(await code(b, await mint(k1, claims({ act: deep(8) })))).toBe('ERR_TOKEN_CLAIMS'); // 9 actors
    expect(await code(b, await mint(k1, claims({ act: { client_id: 'x' } })))).toBe('ERR_TOKEN_CLAIMS');
    expect(await code(b, await mint(k1, claims({ act: 'gateway' })))).toBe('ERR_TOKEN_CLAIMS');
    expect(await code(b, await mint(k1, claims({ scope: ['a'] })))).toBe('ERR_TOKEN_CLAIMS');
    expect(await code(b, await mint(k1, claims({ scope: undefined, scp: [1] })))).toBe('ERR_TOKEN_CLAIMS');
    expect(await code(b, await mint(k1, claims({ sub: undefined, client_id: undefined })))).toBe('ERR_TOKEN_CLAIMS');
    expect(await code(b, await mint(k1, claims({ sub: 7 })))).toBe('ERR_TOKEN_CLAIMS');
  });

  it('ERR_TOKEN_KEY_UNKNOWN for an unpublished kid, a wrong key type, or ambiguity without kid', async () => {
    const a = await ready();
    expect(await code(a, await mint(k3, claims()))).toBe('ERR_TOKEN_KEY_UNKNOWN');
    // kid of the RSA key on an ES256 token
    expect(await code(a, await mint(k1, claims(), { kid: 'r1' }))).toBe('ERR_TOKEN_KEY_UNKNOWN');
    // no kid: exactly one ES256 key is published, so it is used
    expect(await code(a, await mint(k1, claims(), { kid: undefined }))).toBe('OK');
    idp.published = [k1, k2, rsa];
    now += 31_000;
    expect(await code(a, await mint(k2, claims()))).toBe('OK'); // refetch: now two ES256 keys
    expect(await code(a, await mint(k1, claims(), { kid: undefined }))).toBe('ERR_TOKEN_KEY_UNKNOWN');
  });

  it('ERR_TOKEN_KEY_UNKNOWN, logged once, for a published key whose members make no valid key (a point off its curve)', async () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'warn', sink: { write: (l) => lines.push(l) } });
    const jwk = k1.publicJwk as Record<string, string>;
    const y = Buffer.from(jwk['y'] as string, 'base64url');
    y[y.length - 1] = (y[y.length - 1] as number) ^ 1; // (x, y') is not on P-256
    const bent: SigningKey = { ...k1, kid: 'bent', publicJwk: { ...jwk, kid: 'bent', y: y.toString('base64url') } };
    idp.published = [bent, k2];
    const a = await ready(undefined, { log });
    for (let i = 0; i < 3; i++) expect(await code(a, await mint(bent, claims()))).toBe('ERR_TOKEN_KEY_UNKNOWN');
    expect(lines.filter((l) => l.includes('jwks key import failed'))).toHaveLength(1);
    expect(await code(a, await mint(k2, claims()))).toBe('OK'); // the set's other keys still work
  });

  it('ERR_TOKEN_SIGNATURE for a tampered payload or another key under a known kid', async () => {
    const a = await ready();
    const [h, , s] = (await mint(k1, claims())).split('.');
    const tampered = `${h}.${b64url(JSON.stringify(claims({ sub: 'admin' })))}.${s}`;
    expect(await code(a, tampered)).toBe('ERR_TOKEN_SIGNATURE');
    expect(await code(a, await mint(rogue, claims()))).toBe('ERR_TOKEN_SIGNATURE');
    expect(await code(a, `${h}.${b64url(JSON.stringify(claims()))}.`)).toBe('ERR_TOKEN_SIGNATURE');
  });

  it('checks run cheapest first: an expired token with a bad signature is reported as expired', async () => {
    const a = await ready();
    const [h, , s] = (await mint(k1, claims())).split('.');
    const t = `${h}.${b64url(JSON.stringify(claims({ exp: nowSec() - 3600, aud: 'billing' })))}.${s}`;
    const r = a.authenticate(t);
    expect(isPromise(r)).toBe(false); // rejected before any key or signature work
    expect(codeOf(await r)).toBe('ERR_TOKEN_EXPIRED');
  });

  it('never throws on junk input', async () => {
    const a = await ready();
    for (const t of ['', '.', '..', '...', '\u0000', '\ud800', 'a'.repeat(9000), `${b64url('{}')}.${b64url('{}')}.`]) {
      const r = await a.authenticate(t);
      expect(r.ok).toBe(false);
    }
  });
});

describe('verified-token cache', () => {
  it('serves a hit synchronously and never at or after exp', async () => {
    const a = await ready([trust()], { clockSkewSeconds: 0 });
    const token = await mint(k1, claims({ exp: nowSec() + 60 }));
    const first = a.authenticate(token);
    const r1 = await first;
    expect(r1.ok).toBe(true);
    expect(a.signatureChecks).toBe(1);
    const hit = a.authenticate(token);
    expect(isPromise(hit)).toBe(false);
    expect(a.signatureChecks).toBe(1); // served from the cache
    expect(hit).toBe(r1);
    now = T0 + 59_999;
    expect(a.authenticate(token)).toBe(r1);
    now = T0 + 60_000; // exactly exp: not served from the cache
    const atExp = a.authenticate(token);
    expect(codeOf(await atExp)).toBe('ERR_TOKEN_EXPIRED');
  });

  it('an entry does not outlive exp even while the skew would still accept the token', async () => {
    const a = await ready([trust()], { clockSkewSeconds: 30 });
    const token = await mint(k1, claims({ exp: nowSec() + 60 }));
    expect(codeOf(await a.authenticate(token))).toBe('OK');
    now = T0 + 60_000;
    const checks = a.signatureChecks;
    const r = a.authenticate(token);
    expect(codeOf(await r)).toBe('OK');
    expect(a.signatureChecks).toBe(checks + 1); // re-verified, not a cache hit
  });

  it('cacheEntries 0 disables it; invalid tokens are never cached', async () => {
    const a = await ready([trust()], { cacheEntries: 0 });
    const token = await mint(k1, claims());
    await a.authenticate(token);
    await a.authenticate(token);
    expect(a.signatureChecks).toBe(2);
    const b = await ready();
    const bad = await mint(rogue, claims());
    expect(codeOf(await b.authenticate(bad))).toBe('ERR_TOKEN_SIGNATURE');
    expect(codeOf(await b.authenticate(bad))).toBe('ERR_TOKEN_SIGNATURE');
    expect(b.signatureChecks).toBe(2);
  });

  it('is bounded (LRU)', async () => {
    const a = await ready([trust()], { cacheEntries: 2 });
    const t = await Promise.all([1, 2, 3].map(() => mint(k1, claims())));
    for (const x of t) await a.authenticate(x);
    expect(a.signatureChecks).toBe(3);
    await a.authenticate(t[0] as string); // evicted: verified again
    expect(a.signatureChecks).toBe(4);
    expect(isPromise(a.authenticate(t[2] as string))).toBe(false);
    expect(a.signatureChecks).toBe(4);
  });
});

describe('signature queue: one batch per event-loop turn', () => {
  /** One macrotask later: a queued batch has been worked through. */
  const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

  it('tokens arriving in one turn are verified together in the next, each with its own result', async () => {
    const a = await ready([trust()], { cacheEntries: 0 });
    const good = await Promise.all([1, 2, 3].map(() => mint(k1, claims())));
    const forged = await mint(rogue, claims());
    const rsaToken = await mint(rsa, claims({ sub: 'bob' }));
    const pending = [good[0], forged, good[1], rsaToken, good[2]].map((t) => a.authenticate(t as string));
    for (const p of pending) expect(isPromise(p)).toBe(true);
    expect(a.signatureChecks).toBe(0); // nothing verified inside the turn that brought them
    await nextTurn();
    expect(a.signatureChecks).toBe(5);
    const results = await Promise.all(pending.map(async (p) => p));
    expect(results.map(codeOf)).toEqual(['OK', 'ERR_TOKEN_SIGNATURE', 'OK', 'OK', 'OK']);
    const bob = results[3] as AuthResult;
    expect(bob.ok && bob.identity.subject).toBe('bob');
  });

  it('a burst carrying one new token costs one verification; the rest are answered by the cache', async () => {
    const a = await ready();
    const token = await mint(k1, claims());
    const burst = Array.from({ length: 5 }, () => a.authenticate(token));
    const results = await Promise.all(burst.map(async (p) => p));
    expect(results.map(codeOf)).toEqual(['OK', 'OK', 'OK', 'OK', 'OK']);
    expect(a.signatureChecks).toBe(1);
    for (const r of results) expect(r).toBe(results[0]);
  });

  it('an issuer changed while its tokens wait in the queue is checked against the new trust', async () => {
    const a = await ready();
    const removed = a.authenticate(await mint(k1, claims()));
    a.setIssuers([]);
    expect(codeOf(await removed)).toBe('ERR_TOKEN_ISSUER_UNKNOWN');
    a.setIssuers([trust()]);
    expect(await a.whenReady(5000)).toBe(true);
    const narrowed = a.authenticate(await mint(k1, claims()));
    expect(isPromise(narrowed)).toBe(true);
    a.setIssuers([trust({ audiences: ['billing'] })]);
    expect(codeOf(await narrowed)).toBe('ERR_TOKEN_AUDIENCE');
    expect(a.signatureChecks).toBe(0); // refused on the claims: its signature was never checked
  });
});

describe('authenticateThen: the signature queue without promises', () => {
  const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

  it('answers at once when it can, else once through done, with the context it was given', async () => {
    const a = await ready([trust()], { cacheEntries: 10 });
    const token = await mint(k1, claims());
    const calls: [string, string][] = [];
    const done = (ctx: string, r: AuthResult): void => void calls.push([ctx, codeOf(r)]);
    expect(a.authenticateThen(token, 'first', done)).toBeUndefined();
    expect(a.authenticateThen('not a token', 'junk', done)).toMatchObject({ ok: false }); // refused at once
    expect(calls).toEqual([]);
    await nextTurn();
    expect(calls).toEqual([['first', 'OK']]);
    // now in the cache: answered at once, done not called
    expect(a.authenticateThen(token, 'again', done)).toMatchObject({ ok: true });
    await nextTurn();
    expect(calls).toEqual([['first', 'OK']]);
  });

  it('checks every token of the batch before any waiting call goes on, in arrival order', async () => {
    const a = await ready([trust()], { cacheEntries: 0 });
    const tokens = [await mint(k1, claims()), await mint(rogue, claims()), await mint(rsa, claims({ sub: 'bob' }))];
    const seen: { i: number; checks: number; code: string }[] = [];
    tokens.forEach((t, i) => expect(a.authenticateThen(t, i, (ctx, r) => void seen.push({ i: ctx, checks: a.signatureChecks, code: codeOf(r) }))).toBeUndefined());
    await nextTurn();
    expect(seen).toEqual([
      { i: 0, checks: 3, code: 'OK' },
      { i: 1, checks: 3, code: 'ERR_TOKEN_SIGNATURE' },
      { i: 2, checks: 3, code: 'OK' },
    ]);
  });

  it('a done that throws is logged; the other waiting calls still get their results', async () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'warn', sink: { write: (l) => lines.push(l) } });
    const a = await ready([trust()], { cacheEntries: 0, log });
    const got: number[] = [];
    const done = (ctx: number, r: AuthResult): void => {
      if (ctx === 0) throw new Error('boom');
      if (r.ok) got.push(ctx);
    };
    for (const i of [0, 1, 2]) a.authenticateThen(await mint(k1, claims()), i, done);
    await nextTurn();
    expect(got).toEqual([1, 2]);
    expect(lines.join('\n')).toContain('a waiting call threw on its authentication result');
  });

  it('a token whose issuer changed while it waited gets the re-run result through done', async () => {
    const a = await ready();
    const results: string[] = [];
    expect(a.authenticateThen(await mint(k1, claims()), null, (_c, r) => void results.push(codeOf(r)))).toBeUndefined();
    a.setIssuers([trust({ audiences: ['billing'] })]);
    await nextTurn();
    await nextTurn();
    expect(results).toEqual(['ERR_TOKEN_AUDIENCE']);
  });

  it('a token whose key is not loaded yet is answered through done once it is fetched', async () => {
    const token = await mint(k1, claims()); // minted first: the JWKS fetch below is still in flight when it is checked
    const a = make([trust()], { cacheEntries: 0 });
    const results: string[] = [];
    expect(a.authenticateThen(token, null, (_c, r) => void results.push(codeOf(r)))).toBeUndefined();
    expect(a.ready()).toBe(false);
    const deadline = Date.now() + 5000;
    while (results.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(results).toEqual(['OK']);
  });
});

describe('setIssuers', () => {
  it('a removed issuer stops authenticating at once, cached tokens included', async () => {
    const a = await ready();
    const token = await mint(k1, claims());
    expect(codeOf(await a.authenticate(token))).toBe('OK');
    a.setIssuers([trust({ issuer: 'https://other.example', jwksUri: idp.jwksUri, discovery: false })]);
    const r = a.authenticate(token);
    expect(isPromise(r)).toBe(false);
    expect(codeOf(await r)).toBe('ERR_TOKEN_ISSUER_UNKNOWN');
    a.setIssuers([]);
    expect((await a.authenticate(token)).ok).toBe(false);
  });

  it('an issuer removed while a verification is in flight does not authenticate', async () => {
    // Minted first: awaiting the signature after make() could let the initial JWKS fetch finish,
    // and then the call would not wait at all (a flake seen under a loaded full run).
    const token = await mint(k1, claims());
    const a = make();
    const pending = a.authenticate(token); // waits for the initial JWKS fetch
    expect(isPromise(pending)).toBe(true);
    a.setIssuers([]);
    expect(codeOf(await pending)).toBe('ERR_TOKEN_ISSUER_UNKNOWN');
  });

  it('an issuer changed while a verification is in flight is re-checked against the new trust', async () => {
    const token = await mint(k1, claims());
    const a = make();
    const narrowed = a.authenticate(token);
    expect(isPromise(narrowed)).toBe(true);
    a.setIssuers([trust({ audiences: ['billing'] })]);
    expect(codeOf(await narrowed)).toBe('ERR_TOKEN_AUDIENCE');
    const widened = a.authenticate(await mint(k1, claims({ aud: 'billing' })));
    a.setIssuers([trust({ audiences: ['billing', 'orders'] })]);
    expect(codeOf(await widened)).toBe('OK');
  });

  it('an unchanged issuer keeps its keys and cache; a changed one keeps its keys only', async () => {
    const a = await ready();
    const token = await mint(k1, claims());
    const r = await a.authenticate(token);
    a.setIssuers([trust()]); // equal, new object
    expect(a.authenticate(token)).toBe(r);
    a.setIssuers([trust({ audiences: ['billing'] })]);
    const after = a.authenticate(token);
    expect(isPromise(after)).toBe(false); // cheap claim check fails before any key work
    expect(codeOf(await after)).toBe('ERR_TOKEN_AUDIENCE');
    expect(a.ready()).toBe(true);
    expect(idp.hits.jwks).toBe(1);
    expect(idp.hits.discovery).toBe(1);
  });
});

describe('JWKS: rotation, cooldown, single-flight', () => {
  it('an unknown kid refetches once per cooldown; concurrent misses share one fetch', async () => {
    const a = await ready();
    expect(idp.hits.jwks).toBe(1);
    idp.published = [k1, k2, rsa];
    // within the cooldown of the initial fetch: no refetch yet
    expect(await code(a, await mint(k2, claims()))).toBe('ERR_TOKEN_KEY_UNKNOWN');
    expect(idp.hits.jwks).toBe(1);

    now += 30_000;
    const burst = await Promise.all([1, 2, 3, 4, 5].map(async () => a.authenticate(await mint(k2, claims()))));
    expect(burst.map(codeOf)).toEqual(['OK', 'OK', 'OK', 'OK', 'OK']);
    expect(idp.hits.jwks).toBe(2);

    // a second unknown kid within the cooldown does not refetch
    now += 10_000;
    expect(await code(a, await mint(k3, claims()))).toBe('ERR_TOKEN_KEY_UNKNOWN');
    expect(idp.hits.jwks).toBe(2);
    // after the cooldown it does
    now += 20_000;
    expect(await code(a, await mint(k3, claims()))).toBe('ERR_TOKEN_KEY_UNKNOWN');
    expect(idp.hits.jwks).toBe(3);
    expect(a.status()[0]).toMatchObject({ keysLoaded: true, keyCount: 3, fetchOk: 4, fetchFailed: 0, degraded: false });
  });

  it('background refresh picks up rotated keys without any request-triggered fetch', async () => {
    const a = await ready([trust()], { jwks: { refreshIntervalMs: 20 } });
    idp.published = [k2];
    // Rounds are sequential, so once round 4 reaches the server, round 3 (requested after the
    // change) has been applied.
    await idp.waitForHits('jwks', 4);
    // The fake clock has not moved, so a request-triggered refetch is impossible (cooldown):
    // only the background refresh can have loaded k2.
    expect(await code(a, await mint(k2, claims()))).toBe('OK');
    a.close();
  });
});

describe('JWKS: grace window and failures', () => {
  it('keeps using keys for graceMs after the last success, then fails closed with 503', async () => {
    const a = await ready([trust()], { jwks: { graceMs: 600_000, cooldownMs: 30_000 } });
    const cached = await mint(k1, claims({ exp: nowSec() + 7200 }));
    expect(await code(a, cached)).toBe('OK');
    idp.jwksMode = 'fail';

    now = T0 + 300_000;
    expect(await code(a, await mint(k1, claims({ exp: nowSec() + 3600 })))).toBe('OK');
    expect(a.status()[0]?.degraded).toBe(false);
    // an unknown kid forces a refetch, which fails: transient, so 503, and now degraded
    expect(await code(a, await mint(k2, claims({ exp: nowSec() + 3600 })))).toBe('ERR_KEYS_UNAVAILABLE');
    const st = a.status()[0];
    expect(st).toMatchObject({ degraded: true, keysUnavailable: false, fetchFailed: 1, lastFetchOk: T0 });
    expect(st?.lastError).toContain('HTTP 500');
    // still inside the grace window: known keys keep working, cache hits too
    now = T0 + 600_000;
    expect(await code(a, await mint(k1, claims({ exp: nowSec() + 3600 })))).toBe('OK');
    expect(isPromise(a.authenticate(cached))).toBe(false);

    now = T0 + 600_001;
    const r = a.authenticate(cached);
    expect(isPromise(r)).toBe(true); // no cache hit past grace
    expect(codeOf(await r)).toBe('ERR_KEYS_UNAVAILABLE');
    expect(await code(a, await mint(k1, claims({ exp: nowSec() + 3600 })))).toBe('ERR_KEYS_UNAVAILABLE');
    expect(a.status()[0]?.keysUnavailable).toBe(true);

    // the IdP comes back: the next request after the cooldown refetches and recovers
    idp.jwksMode = 'ok';
    now += 30_000;
    expect(await code(a, cached)).toBe('OK');
    expect(a.status()[0]).toMatchObject({ keysUnavailable: false, degraded: false });
  });

  it('a hanging JWKS endpoint times out: 503, not ready', async () => {
    idp.jwksMode = 'hang';
    const a = make([trust()], { jwks: { timeoutMs: 150 } });
    expect(await code(a, await mint(k1, claims()))).toBe('ERR_KEYS_UNAVAILABLE');
    expect(a.ready()).toBe(false);
    expect(a.status()[0]).toMatchObject({ keysLoaded: false, keysUnavailable: true, fetchFailed: 1, discovered: true });
    expect(a.status()[0]?.lastError).toMatch(/timeout|abort/i);
  });

  it('does not follow redirects', async () => {
    idp.jwksMode = 'redirect';
    const a = make();
    expect(await code(a, await mint(k1, claims()))).toBe('ERR_KEYS_UNAVAILABLE');
    expect(a.status()[0]?.lastError).toContain('HTTP 302');
    expect(idp.hits.jwks).toBe(1);
  });

  it('a failing discovery leaves the issuer unready; whenReady times out false', async () => {
    idp.discoveryMode = 'fail';
    const a = make();
    expect(await a.whenReady(300)).toBe(false);
    expect(a.status()[0]).toMatchObject({ discovered: false, keysLoaded: false, fetchFailed: 1 });
    expect(await code(a, await mint(k1, claims()))).toBe('ERR_KEYS_UNAVAILABLE');
  });

  it('a discovery document naming another issuer is refused, its keys never fetched (OIDC Discovery §4.3)', async () => {
    idp.discoveryIssuer = 'http://127.0.0.1:1';
    const a = make();
    expect(await a.whenReady(300)).toBe(false);
    expect(a.status()[0]).toMatchObject({ discovered: false, keysLoaded: false, fetchFailed: 1 });
    expect(a.status()[0]?.lastError).toContain('names issuer "http://127.0.0.1:1"');
    expect(idp.hits.jwks).toBe(0);
    expect(await code(a, await mint(k1, claims()))).toBe('ERR_KEYS_UNAVAILABLE');
  });

  it('an issuer with a path is discovered under that path; the document must name it exactly (compared as URLs)', async () => {
    const realm = await FakeIdp.start({ path: '/realms/prod' });
    extraIdps.push(realm);
    realm.published = [k1];
    const a = await ready([trust({ issuer: realm.issuer })]);
    expect(realm.hits).toMatchObject({ discovery: 1, jwks: 1 });
    expect(await code(a, await mint(k1, claims({ iss: realm.issuer })))).toBe('OK');
    // Under a path a trailing slash makes another identifier…
    realm.discoveryIssuer = `${realm.issuer}/`;
    expect(await make([trust({ issuer: realm.issuer })]).whenReady(300)).toBe(false);
    expect(realm.hits.discovery).toBe(2);
    // …at the root it does not: https://idp and https://idp/ are the same URL.
    idp.discoveryIssuer = `${idp.issuer}/`;
    await ready();
  });

  it('a discovery document whose jwks_uri is not a string is refused', async () => {
    const bad = await FakeIdp.start();
    extraIdps.push(bad);
    // Serve the document by hand: jwks_uri as a number.
    bad.server.removeAllListeners('request');
    bad.server.on('request', (_req, res: ServerResponse) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer: bad.issuer, jwks_uri: 42 })));
    const a = make([trust({ issuer: bad.issuer })]);
    expect(await a.whenReady(300)).toBe(false);
    expect(a.status()[0]?.lastError).toContain('non-string jwks_uri');
  });

  it('a key set with only private, symmetric or encryption keys is refused and old keys kept', async () => {
    const a = await ready();
    const priv = { ...k2.publicJwk, d: 'AAAA' };
    idp.published = [{ ...k2, publicJwk: priv }, { ...k3, publicJwk: { ...k3.publicJwk, use: 'enc' } }];
    now += 30_000;
    expect(await code(a, await mint(k2, claims()))).toBe('ERR_KEYS_UNAVAILABLE');
    expect(await code(a, await mint(k1, claims()))).toBe('OK'); // previous keys still served
    expect(a.status()[0]?.lastError).toContain('no usable signing key');
  });

  it('refuses a plain-http jwks_uri off loopback', async () => {
    const a = make([trust({ jwksUri: 'http://198.51.100.7/jwks', discovery: false })]);
    expect(await code(a, await mint(k1, claims()))).toBe('ERR_KEYS_UNAVAILABLE');
    expect(a.status()[0]?.lastError).toContain('https required');
  });
});

describe('readiness and status', () => {
  it('ready once every issuer has keys; HMAC-only issuers are ready at once', async () => {
    const a = make();
    expect(a.ready()).toBe(false);
    expect(await a.whenReady(5000)).toBe(true);
    expect(a.status()).toEqual([
      expect.objectContaining({ issuer: idp.issuer, keysLoaded: true, keyCount: 2, lastFetchOk: T0, degraded: false, discovered: true }),
    ]);
    const h = make([trust({ algorithms: ['HS256'], hmacSecret: new Uint8Array(32).fill(7) })]);
    expect(h.ready()).toBe(true);
    expect(make([]).ready()).toBe(true);
  });
});

describe('opaque tokens: RFC 7662 introspection', () => {
  const introspecting = (over: Partial<IssuerTrust> = {}): IssuerTrust[] => [trust({ introspection: true, ...over })];
  function active(over: Record<string, unknown> = {}): Record<string, unknown> {
    return { active: true, iss: idp.issuer, sub: 'bob', client_id: 'web', aud: 'orders', scope: 'orders:read', exp: nowSec() + 600, ...over };
  }

  it('active → opaque identity, cached (sync) up to introspectionCacheMaxSeconds, with HTTP Basic auth', async () => {
    idp.introspection.set('opaque-1', active());
    const a = await ready(introspecting(), { introspectionCacheMaxSeconds: 60 });
    const r = await a.authenticate('opaque-1');
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.identity).toMatchObject({ issuer: idp.issuer, subject: 'bob', tokenKind: 'opaque', expiresAt: nowSec() + 600 });
    expect([...r.identity.scopes]).toEqual(['orders:read']);
    // RFC 6749 §2.3.1 Basic: form-urlencoded id and secret (openid-client also escapes "-")
    expect(idp.introspectionAuth[0]).toBe(`Basic ${Buffer.from('orders%2Dsidecar:s3cr%3Aet').toString('base64')}`);
    expect(a.authenticate('opaque-1')).toBe(r);
    now += 60_000;
    const again = a.authenticate('opaque-1');
    expect(isPromise(again)).toBe(true);
    expect(codeOf(await again)).toBe('OK');
    expect(idp.hits.introspection).toBe(2);
    expect(a.status()[0]).toMatchObject({ introspection: true, introspectionOk: 2 });
  });

  it('the cache also stops at exp, which is checked again', async () => {
    idp.introspection.set('short', active({ exp: nowSec() + 10 }));
    const a = await ready(introspecting(), { clockSkewSeconds: 0 });
    expect(await code(a, 'short')).toBe('OK');
    now += 10_000;
    expect(await code(a, 'short')).toBe('ERR_TOKEN_EXPIRED');
    expect(idp.hits.introspection).toBe(2);
  });

  it('active:false → ERR_TOKEN_INACTIVE, negatively cached for a few seconds', async () => {
    const a = await ready(introspecting());
    expect(await code(a, 'revoked')).toBe('ERR_TOKEN_INACTIVE');
    const again = a.authenticate('revoked');
    expect(isPromise(again)).toBe(false);
    expect(codeOf(await again)).toBe('ERR_TOKEN_INACTIVE');
    expect(idp.hits.introspection).toBe(1);
    now += 5_001;
    expect(await code(a, 'revoked')).toBe('ERR_TOKEN_INACTIVE');
    expect(idp.hits.introspection).toBe(2);
  });

  it('concurrent introspections of one token share one call', async () => {
    idp.introspection.set('burst', active());
    const a = await ready(introspecting());
    const rs = await Promise.all([1, 2, 3, 4, 5].map(async () => a.authenticate('burst')));
    expect(rs.map(codeOf)).toEqual(['OK', 'OK', 'OK', 'OK', 'OK']);
    expect(idp.hits.introspection).toBe(1);
  });

  it('unreachable, failing, hanging or refusing our credentials → ERR_INTROSPECTION_UNAVAILABLE', async () => {
    idp.introspection.set('x', active());
    const a = await ready(introspecting(), { jwks: { timeoutMs: 200 } });
    idp.introspectionMode = 'fail';
    expect(await code(a, 'x')).toBe('ERR_INTROSPECTION_UNAVAILABLE');
    idp.introspectionMode = 'hang';
    expect(await code(a, 'x')).toBe('ERR_INTROSPECTION_UNAVAILABLE');
    idp.introspectionMode = 'ok';
    const wrong = await ready(introspecting(), { credentials: [{ issuer: idp.issuer, clientId: 'orders-sidecar', clientSecret: 'wrong' }] });
    expect(await code(wrong, 'x')).toBe('ERR_INTROSPECTION_UNAVAILABLE');
    const none = make(introspecting(), { credentials: [] });
    expect(await code(none, 'x')).toBe('ERR_INTROSPECTION_UNAVAILABLE');
    expect(a.status()[0]?.introspectionFailed).toBe(2);
  });

  it('the response must still fit: iss, exp, aud, required claims', async () => {
    const a = await ready(introspecting({ requiredClaims: ['client_id'] }), { clockSkewSeconds: 0 });
    const cases: [Record<string, unknown>, string][] = [
      [active({ iss: 'https://evil.example' }), 'ERR_TOKEN_ISSUER_UNKNOWN'],
      [active({ exp: nowSec() - 1 }), 'ERR_TOKEN_EXPIRED'],
      [active({ aud: ['billing'] }), 'ERR_TOKEN_AUDIENCE'],
      [active({ client_id: undefined }), 'ERR_TOKEN_CLAIMS'],
      [active({ nbf: nowSec() + 60 }), 'ERR_TOKEN_NOT_YET_VALID'],
      [active({ iss: undefined }), 'OK'], // optional in RFC 7662
      // optional in RFC 7662 too, but without it nothing says the token is for this service
      // (regression: a refresh token, which oidc-provider answers without aud, passed)
      [active({ aud: undefined }), 'ERR_TOKEN_AUDIENCE'],
    ];
    for (const [i, [resp, want]] of cases.entries()) {
      idp.introspection.set(`case-${i}`, JSON.parse(JSON.stringify(resp)) as Record<string, unknown>);
      expect(await code(a, `case-${i}`), want).toBe(want);
    }
  });

  it('requireIntrospectedAudience: false takes an answer without aud, and still checks one that has it', async () => {
    const a = await ready(introspecting({ requireIntrospectedAudience: false }), { clockSkewSeconds: 0 });
    idp.introspection.set('no-aud', JSON.parse(JSON.stringify(active({ aud: undefined, iss: undefined }))) as Record<string, unknown>);
    idp.introspection.set('other-aud', active({ aud: ['billing'] }));
    expect(await code(a, 'no-aud')).toBe('OK');
    expect(await code(a, 'other-aud')).toBe('ERR_TOKEN_AUDIENCE');
    // a policy that changes only this setting takes effect (the issuer's trust is replaced)
    a.setIssuers(introspecting());
    idp.introspection.set('no-aud-2', JSON.parse(JSON.stringify(active({ aud: undefined }))) as Record<string, unknown>);
    expect(await code(a, 'no-aud-2')).toBe('ERR_TOKEN_AUDIENCE');
  });

  it('an answer for another kind of token is refused: a refresh token, a sender-constrained token (regression: active was enough)', async () => {
    const a = await ready(introspecting(), { clockSkewSeconds: 0 });
    const cases: [Record<string, unknown>, string][] = [
      [active({ token_type: 'refresh_token' }), 'ERR_TOKEN_TYPE'],
      [active({ token_type: 'DPoP' }), 'ERR_TOKEN_TYPE'], // RFC 9449: needs a proof ward does not check
      [active({ token_type: 'N_A' }), 'ERR_TOKEN_TYPE'],
      [active({ token_type: 7 }), 'ERR_TOKEN_TYPE'],
      [active({ token_use: 'refresh_token' }), 'ERR_TOKEN_TYPE'], // ORY Hydra
      [active({ cnf: { jkt: 'ZjU2ZGU3' } }), 'ERR_TOKEN_TYPE'], // bound to a key (RFC 7800, RFC 9449 §6)
      [active({ cnf: { 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' } }), 'ERR_TOKEN_TYPE'], // RFC 8705 §3
      [active({ token_type: 'Bearer' }), 'OK'],
      [active({ token_type: 'bearer', token_use: 'access_token' }), 'OK'],
    ];
    for (const [i, [resp, want]] of cases.entries()) {
      idp.introspection.set(`kind-${i}`, JSON.parse(JSON.stringify(resp)) as Record<string, unknown>);
      expect(await code(a, `kind-${i}`), `${JSON.stringify(resp)}`).toBe(want);
    }
  });

  it('requiredClaims can demand aud and iss of an introspection answer (as documented: RFC 7662 makes them optional)', async () => {
    const a = await ready(introspecting({ requiredClaims: ['aud', 'iss'], requireIntrospectedAudience: false }), { clockSkewSeconds: 0 });
    idp.introspection.set('no-aud', JSON.parse(JSON.stringify(active({ aud: undefined }))) as Record<string, unknown>);
    idp.introspection.set('no-iss', JSON.parse(JSON.stringify(active({ iss: undefined }))) as Record<string, unknown>);
    idp.introspection.set('both', active());
    expect(await code(a, 'no-aud')).toBe('ERR_TOKEN_CLAIMS');
    expect(await code(a, 'no-iss')).toBe('ERR_TOKEN_CLAIMS');
    expect(await code(a, 'both')).toBe('OK');
  });

  it('a policy reload during an introspection call is applied to its answer', async () => {
    idp.introspection.set('inflight', active());
    const a = await ready(introspecting());
    let release = (): void => undefined;
    idp.introspectionGate = new Promise((r) => (release = r));
    const narrowed = a.authenticate('inflight');
    await idp.waitForHits('introspection', 1);
    a.setIssuers(introspecting({ audiences: ['billing'] }));
    release();
    expect(codeOf(await narrowed)).toBe('ERR_TOKEN_AUDIENCE');

    idp.introspectionGate = new Promise((r) => (release = r));
    const removed = a.authenticate('inflight');
    await idp.waitForHits('introspection', 2);
    a.setIssuers([trust()]);
    release();
    expect(codeOf(await removed)).toBe('ERR_TOKEN_ISSUER_UNKNOWN');
  });

  it('without exp the identity lives as long as the cache bound', async () => {
    idp.introspection.set('noexp', active({ exp: undefined }));
    const a = await ready(introspecting(), { introspectionCacheMaxSeconds: 60 });
    const r = await a.authenticate('noexp');
    expect(r.ok && r.identity.expiresAt).toBe(nowSec() + 60);
  });

  it('opaque tokens are refused unless exactly one issuer does introspection', async () => {
    idp.introspection.set('x', active());
    const second = await FakeIdp.start();
    extraIdps.push(second);
    second.published = [k1];
    const a = await ready([trust({ introspection: true }), trust({ issuer: second.issuer, introspection: true })]);
    expect(await code(a, 'x')).toBe('ERR_TOKEN_MALFORMED');
    const b = await ready();
    expect(await code(b, 'x')).toBe('ERR_TOKEN_MALFORMED');
    expect(idp.hits.introspection).toBe(0);
  });
});

describe('logging', () => {
  it('never writes a token into the logs', async () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'debug', sink: { write: (l) => lines.push(l) } });
    idp.introspection.set('opaque-secret-token', { active: false });
    const a = await ready([trust({ introspection: true })], { log });
    const tokens = [
      await mint(k1, claims()),
      await mint(rogue, claims()),
      await mint(k3, claims()),
      await mint(k1, claims({ aud: 'billing' })),
      'opaque-secret-token',
    ];
    for (const t of tokens) await a.authenticate(t);
    expect(lines.some((l) => l.includes('token rejected'))).toBe(true);
    for (const t of tokens) {
      for (const l of lines) expect(l).not.toContain(t);
      expect(lines.join('')).not.toContain(t.split('.')[2] ?? t);
    }
  });
});
