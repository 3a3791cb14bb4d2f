import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Authenticator, createAuthenticator } from '../../src/authn/authenticator.ts';
import { ERROR_CODES } from '../../src/errors/codes.ts';
import { silentLogger } from '../../src/lib/log.ts';
import { parsePolicyText } from '../../src/policy/load.ts';
import { startTestIssuer, type TestIssuer } from '../security/support/issuer.ts';
import { securityPolicy } from '../security/support/ward.ts';

/**
 * Property-based fuzzing of token verification with keys the authenticator really trusts
 * (test/security/support/issuer.ts serves them over discovery + JWKS):
 * - no single-character edit of a signed token is ever accepted (RFC 8725 §3.3);
 * - any string at all yields a coded refusal, never an exception or a rejected promise;
 * - whatever header and claims an attacker can get signed, an accepted token satisfied every
 *   documented check (issuer, audience, type, algorithm, time).
 */

const LIMIT = { numRuns: 300, interruptAfterTimeLimit: 4000, markInterruptAsFailure: false } as const;

let iss: TestIssuer;
let authn: Authenticator;

beforeAll(async () => {
  iss = await startTestIssuer();
  authn = createAuthenticator({
    clockSkewSeconds: 30,
    maxTokenBytes: 8192,
    cacheEntries: 0, // every call verifies for real
    introspectionCacheMaxSeconds: 60,
    jwks: { timeoutMs: 2000, refreshIntervalMs: 300_000, cooldownMs: 60_000, graceMs: 3_600_000 },
    credentials: [],
    log: silentLogger,
  });
  authn.setIssuers(parsePolicyText(securityPolicy(iss.issuer), 'p.yaml').issuers);
  expect(await authn.whenReady(5000)).toBe(true);
});
afterAll(async () => {
  authn.close();
  await iss.close();
});

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.';

describe('token verification', () => {
  it('baseline: the unedited tokens verify', async () => {
    for (const k of ['rs', 'es', 'ed'] as const) expect((await authn.authenticate(iss.token({}, {}, k))).ok).toBe(true);
  });

  it('no single-character substitution, deletion or insertion of a signed token verifies', async () => {
    const tokens = { rs: iss.token(), es: iss.token({}, {}, 'es'), ed: iss.token({}, {}, 'ed') };
    await fc.assert(
      fc.asyncProperty(fc.constantFrom<'rs' | 'es' | 'ed'>('rs', 'es', 'ed'), fc.nat(), fc.constantFrom(...ALPHABET.split('')), fc.constantFrom('sub', 'del', 'ins'), async (k, at, ch, op) => {
        const t = tokens[k];
        const i = at % t.length;
        const edited = op === 'sub' ? t.slice(0, i) + ch + t.slice(i + 1) : op === 'del' ? t.slice(0, i) + t.slice(i + 1) : t.slice(0, i) + ch + t.slice(i);
        fc.pre(edited !== t);
        const r = await authn.authenticate(edited);
        expect(r.ok).toBe(false);
      }),
      LIMIT,
    );
  });

  it('any string gets a coded refusal: no exception, no rejected promise', async () => {
    const seg = fc.string({ unit: fc.constantFrom(...`${ALPHABET}=+/ %\u00e9`.split('')), maxLength: 40 });
    const anyToken = fc.oneof(fc.string({ maxLength: 200 }), fc.array(seg, { maxLength: 5 }).map((s) => s.join('.')));
    await fc.assert(
      fc.asyncProperty(anyToken, async (t) => {
        const r = await authn.authenticate(t);
        if (!r.ok) expect(ERROR_CODES).toContain(r.error.code);
        else expect(t.split('.')).toHaveLength(3); // only a real signed token can pass
      }),
      LIMIT,
    );
  });

  it('whatever header and claims get signed with a trusted key, an accepted token passed every documented check', async () => {
    const nowS = (): number => Math.floor(Date.now() / 1000);
    /** The valid value half the time, otherwise one of the attacks. */
    const mostly = <T,>(good: T, ...bad: T[]): fc.Arbitrary<T> => fc.oneof({ weight: 6, arbitrary: fc.constant(good) }, { weight: 1, arbitrary: fc.constantFrom(...bad) });
    const ALG = { rs: 'RS256', es: 'ES256', ed: 'EdDSA' } as const;
    const keyArb = fc.constantFrom<'rs' | 'es' | 'ed'>('rs', 'es', 'ed');
    const headerArb = (key: 'rs' | 'es' | 'ed'): fc.Arbitrary<Record<string, unknown>> =>
      fc.record(
        {
          alg: mostly<unknown>(ALG[key], 'HS256', 'none', 'PS256', 'rs256', ALG[key === 'rs' ? 'es' : 'rs']),
          typ: mostly<unknown>('at+jwt', 'AT+JWT', 'application/at+jwt', 'JWT', 'jwt', '', 1),
          kid: mostly<unknown>(iss.kid(key), 'other', '', iss.kid(key === 'rs' ? 'es' : 'rs')),
          crit: fc.oneof({ weight: 5, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constant(['exp']) }),
          jku: fc.oneof({ weight: 5, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constant('http://127.0.0.1:9/') }),
        },
        { requiredKeys: ['alg', 'typ', 'kid', 'crit', 'jku'] },
      ).map((h) => JSON.parse(JSON.stringify(h)) as Record<string, unknown>);
    const claimsArb = fc.record(
      {
        iss: mostly<unknown>(iss.issuer, `${iss.issuer}/`, 'https://evil.example', 1),
        aud: mostly<unknown>('urn:ward:orders', ['x', 'urn:ward:orders'], 'urn:ward:payments', [], 'URN:WARD:ORDERS'),
        sub: mostly<unknown>('alice', '', 7, 'a\nb'),
        exp: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: -100, max: 600 }).map((d) => nowS() + d) }, { weight: 1, arbitrary: fc.constantFrom('9999999999', null) }),
        nbf: fc.integer({ min: -60, max: 60 }).map((d) => nowS() + d),
        iat: fc.integer({ min: -60, max: 60 }).map((d) => nowS() + d),
        scope: mostly<unknown>('orders.read', ['orders.read'], ''),
      },
      { requiredKeys: ['iss', 'aud', 'exp', 'sub'] },
    );
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(keyArb.chain((k) => fc.tuple(fc.constant(k), headerArb(k))), claimsArb, async ([key, h], c) => {
        const t = iss.signRaw(JSON.stringify(h), JSON.stringify(c), key);
        const r = await authn.authenticate(t);
        if (!r.ok) {
          expect(ERROR_CODES).toContain(r.error.code);
          return;
        }
        accepted++;
        const now = nowS();
        expect(h['alg']).toBe(ALG[key]);
        expect(typeof h['typ'] === 'string' && ['at+jwt', 'application/at+jwt'].includes(h['typ'].toLowerCase())).toBe(true);
        expect(h['crit']).toBeUndefined();
        expect(h['jku']).toBeUndefined();
        expect(c['iss']).toBe(iss.issuer);
        const aud = c['aud'];
        expect(aud === 'urn:ward:orders' || (Array.isArray(aud) && aud.includes('urn:ward:orders'))).toBe(true);
        const exp = c['exp'];
        expect(typeof exp === 'number' && exp + 30 > now).toBe(true);
        const nbf = c['nbf'];
        const iat = c['iat'];
        if (typeof nbf === 'number') expect(nbf - 30 <= now).toBe(true);
        if (typeof iat === 'number') expect(iat - 30 <= now).toBe(true);
        expect(r.identity.subject).toBe(typeof c['sub'] === 'string' ? c['sub'] : undefined);
      }),
      { ...LIMIT, numRuns: 600 },
    );
    expect(accepted).toBeGreaterThan(3);
  });
});
