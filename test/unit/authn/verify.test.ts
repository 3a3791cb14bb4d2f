import { createSign, generateKeyPairSync, type KeyObject, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import { CompactSign } from 'jose';
import { describe, expect, it } from 'vitest';
import { importVerifyKey } from '../../../src/authn/source.ts';
import { p1363ToDer, supportsDirectVerify, verifyJwsSignature } from '../../../src/authn/verify.ts';

/**
 * The direct node:crypto signature check must accept exactly what jose accepts: tokens are
 * signed with jose here, and the verification key is imported from its JWK the way source.ts
 * imports JWKS keys (`importVerifyKey`).
 */

const PAYLOAD = new TextEncoder().encode(JSON.stringify({ iss: 'https://idp.test', sub: 'alice', exp: 4_000_000_000 }));

type Pair = { privateKey: KeyObject; publicKey: KeyObject };

function pair(alg: string, bits = 2048): Pair {
  if (alg.startsWith('RS') || alg.startsWith('PS')) return generateKeyPairSync('rsa', { modulusLength: bits });
  if (alg === 'ES256') return generateKeyPairSync('ec', { namedCurve: 'P-256' });
  if (alg === 'ES384') return generateKeyPairSync('ec', { namedCurve: 'P-384' });
  if (alg === 'ES512') return generateKeyPairSync('ec', { namedCurve: 'P-521' });
  return generateKeyPairSync('ed25519');
}

async function verifyKey(p: Pair, _alg: string): Promise<KeyObject> {
  return importVerifyKey(p.publicKey.export({ format: 'jwk' }) as Record<string, string>);
}

function sign(p: Pair, alg: string): Promise<string> {
  return new CompactSign(PAYLOAD).setProtectedHeader({ alg, typ: 'at+jwt' }).sign(p.privateKey);
}

/** The same token with its payload changed (signature kept). */
function tampered(token: string): string {
  const [h, , s] = token.split('.');
  return `${h}.${Buffer.from(JSON.stringify({ sub: 'mallory' })).toString('base64url')}.${s}`;
}

describe('verifyJwsSignature', () => {
  for (const alg of ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']) {
    it(`${alg}: accepts jose's signature, refuses a changed payload and another key`, async () => {
      const p = pair(alg);
      const token = await sign(p, alg);
      const key = await verifyKey(p, alg);
      expect(supportsDirectVerify(alg)).toBe(true);
      expect(verifyJwsSignature(alg, token, key)).toBeNull();
      expect(verifyJwsSignature(alg, tampered(token), key)).toMatch(/verification failed/);
      expect(verifyJwsSignature(alg, token, await verifyKey(pair(alg), alg))).toMatch(/verification failed/);
    });
  }

  for (const alg of ['PS256', 'RS256']) {
    it(`${alg}: a signature of other than k octets is refused, even the same number without its leading zero octet (RFC 8017 §8.1.2; regression for PS*)`, async () => {
      const p = pair(alg);
      const key = await verifyKey(p, alg);
      // About 1 signature in 256 starts with a zero octet; PSS is randomized, RS* is varied by the payload.
      let token = '';
      for (let i = 0; i < 5000 && token === ''; i++) {
        const t = await new CompactSign(new TextEncoder().encode(JSON.stringify({ sub: 'alice', n: i }))).setProtectedHeader({ alg }).sign(p.privateKey);
        if (Buffer.from(t.slice(t.lastIndexOf('.') + 1), 'base64url')[0] === 0) token = t;
      }
      expect(token).not.toBe('');
      expect(verifyJwsSignature(alg, token, key)).toBeNull();
      const dot = token.lastIndexOf('.');
      const sig = Buffer.from(token.slice(dot + 1), 'base64url');
      const shorter = `${token.slice(0, dot)}.${sig.subarray(1).toString('base64url')}`;
      expect(verifyJwsSignature(alg, shorter, key)).toBe('signature of the wrong length');
      const longer = `${token.slice(0, dot)}.${Buffer.concat([Buffer.alloc(1), sig]).toString('base64url')}`;
      expect(verifyJwsSignature(alg, longer, key)).toBe('signature of the wrong length');
    });
  }

  it('signing inputs of any length, in any order, are each checked on their own bytes (the reused scratch buffer)', async () => {
    const p = pair('RS256');
    const key = await verifyKey(p, 'RS256');
    const tokenOf = (n: number): Promise<string> =>
      new CompactSign(new TextEncoder().encode(JSON.stringify({ sub: 'alice', pad: 'x'.repeat(n) }))).setProtectedHeader({ alg: 'RS256' }).sign(p.privateKey);
    const [short, long, longer] = await Promise.all([tokenOf(10), tokenOf(3000), tokenOf(9000)]);
    // No dot at all: refused, never thrown (the signing input would have no end).
    expect(verifyJwsSignature('RS256', 'no-dots-here', key)).toBe('not a compact JWS');
    for (const t of [short, long, short, longer, short, long]) {
      expect(verifyJwsSignature('RS256', t, key)).toBeNull();
      // A token cut short by one payload char must fail, whatever a longer one left in the buffer.
      const [h, pl, sig] = t.split('.') as [string, string, string];
      expect(verifyJwsSignature('RS256', `${h}.${pl.slice(0, -1)}.${sig}`, key)).toBe('signature verification failed');
    }
  });

  it('signatures of any length, in any order, are each decoded on their own', async () => {
    const rsa = pair('RS256');
    const ec = pair('ES256');
    const rsaKey = await verifyKey(rsa, 'RS256');
    const ecKey = await verifyKey(ec, 'ES256');
    const [rs, es] = await Promise.all([sign(rsa, 'RS256'), sign(ec, 'ES256')]);
    const withSig = (t: string, sig: string): string => `${t.slice(0, t.lastIndexOf('.'))}.${sig}`;
    const junk = Buffer.alloc(900, 0x5a).toString('base64url'); // longer than any real signature
    const rsSig = rs.slice(rs.lastIndexOf('.') + 1);
    for (let i = 0; i < 2; i++) {
      expect(verifyJwsSignature('RS256', withSig(rs, junk), rsaKey)).toBe('signature of the wrong length');
      expect(verifyJwsSignature('RS256', rs, rsaKey)).toBeNull();
      // 64 bytes after 900 and 256: the length is this signature's, not the buffer's.
      expect(verifyJwsSignature('ES256', es, ecKey)).toBeNull();
      expect(verifyJwsSignature('ES256', withSig(es, junk), ecKey)).toBe('signature of the wrong length');
      expect(verifyJwsSignature('RS256', withSig(rs, rsSig.slice(0, -4)), rsaKey)).toBe('signature of the wrong length');
      expect(verifyJwsSignature('RS256', withSig(rs, ''), rsaKey)).toBe('signature of the wrong length');
      expect(verifyJwsSignature('RS256', rs, rsaKey)).toBeNull();
    }
  });

  it('refuses an RSA key shorter than 2048 bits (RFC 7518 §3.3), as jose does', async () => {
    const p = pair('RS256', 1024);
    // jose will not sign with such a key: sign by hand a token the short key would accept.
    const input = `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from(PAYLOAD).toString('base64url')}`;
    const token = `${input}.${createSign('sha256').update(input).sign(p.privateKey).toString('base64url')}`;
    // The JWK import takes it; the check must still refuse it.
    const short = await verifyKey(p, 'RS256');
    expect(verifyJwsSignature('RS256', token, short)).toMatch(/shorter than 2048/);
  });

  it('refuses a key of the wrong type or curve for the algorithm', async () => {
    const ec = pair('ES256');
    const token = await sign(ec, 'ES256');
    const p384 = pair('ES384');
    // An ES256 signature checked "as ES384" with a P-384 key: wrong length, and the curve differs from ES256's.
    expect(verifyJwsSignature('ES384', token, await verifyKey(p384, 'ES384'))).not.toBeNull();
    expect(verifyJwsSignature('ES256', token, await verifyKey(p384, 'ES384'))).toMatch(/curve/);
    expect(verifyJwsSignature('RS256', token, await verifyKey(ec, 'ES256'))).toMatch(/a ec key/);
  });

  it('refuses an ECDSA signature of the wrong length without calling into OpenSSL', async () => {
    const p = pair('ES256');
    const token = await sign(p, 'ES256');
    const der = `${token.slice(0, token.lastIndexOf('.'))}.${Buffer.alloc(70, 1).toString('base64url')}`;
    expect(verifyJwsSignature('ES256', der, await verifyKey(p, 'ES256'))).toBe('signature of the wrong length');
  });

  it('implements no HMAC or none (they stay with jose, or are refused earlier)', () => {
    expect(supportsDirectVerify('HS256')).toBe(false);
    expect(supportsDirectVerify('none')).toBe(false);
    expect(() => verifyJwsSignature('HS256', 'a.b.c', {} as KeyObject)).toThrow(/unsupported/);
  });
});

/** The reverse of p1363ToDer, by the book (X.690 short and long lengths). */
function derToP1363(der: Buffer, size: number): Buffer {
  let p = 1;
  p += (der[p] as number) & 0x80 ? 1 + ((der[p] as number) & 0x7f) : 1;
  const out = Buffer.alloc(2 * size);
  for (let half = 0; half < 2; half++) {
    expect(der[p]).toBe(0x02);
    const n = der[p + 1] as number;
    let v = der.subarray(p + 2, p + 2 + n);
    while (v.length > size && v[0] === 0) v = v.subarray(1);
    v.copy(out, half * size + size - v.length);
    p += 2 + n;
  }
  return out;
}

describe('p1363ToDer: JWS r||s to the DER node verifies without an options object', () => {
  it.each([
    ['prime256v1', 'sha256'],
    ['secp384r1', 'sha384'],
    ['secp521r1', 'sha512'],
  ] as const)('%s: 300 signatures: r||s from node\'s own DER re-encodes to exactly that DER, and verifies', (namedCurve, hash) => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve });
    const size = { prime256v1: 32, secp384r1: 48, secp521r1: 66 }[namedCurve];
    for (let i = 0; i < 300; i++) {
      const data = Buffer.from(`message ${i}`);
      const der = cryptoSign(hash, data, privateKey);
      const p1363 = derToP1363(der, size);
      expect(p1363ToDer(p1363)).toEqual(der);
      expect(cryptoVerify(hash, data, publicKey, p1363ToDer(p1363))).toBe(true);
    }
  });

  it('minimal INTEGERs: leading zeros dropped, a zero octet added before a set top bit, zero kept as one octet', () => {
    const r = Buffer.alloc(32);
    r[30] = 0x80; // 0x8000 after the leading zeros: needs the sign octet
    r[31] = 0x00;
    const s = Buffer.alloc(32); // zero
    expect(p1363ToDer(Buffer.concat([r, s]))).toEqual(Buffer.from([0x30, 0x08, 0x02, 0x03, 0x00, 0x80, 0x00, 0x02, 0x01, 0x00]));
    const big = Buffer.alloc(66, 0xff); // P-521 size: 2 × (2 + 67) = 138 > 127
    const out = p1363ToDer(Buffer.concat([big, big]));
    expect([...out.subarray(0, 3)]).toEqual([0x30, 0x81, 138]);
    expect([...out.subarray(3, 6)]).toEqual([0x02, 67, 0x00]);
  });
});
