import { createHash, generateKeyPairSync, privateEncrypt, sign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { createNativeRsa, nativeRsa, nativeVerifyEnabled, type RsaVerifier } from '../../../src/authn/native-verify.ts';
import { verifyJwsSignature } from '../../../src/authn/verify.ts';

/**
 * The addon in native/jws-verify.c against node's crypto.verify: the same answer for valid,
 * forged and malformed RSASSA-PKCS1-v1_5 signatures, and no crash or bypass for arguments it
 * must refuse. These run on the addon `npm ci` built (CI requires it: .ci/run), so they fail
 * when it is missing too.
 */

const ADDON = fileURLToPath(new URL('../../../native/build/jws-verify.node', import.meta.url));

interface Addon {
  rsaVerifier(n: unknown, e: unknown, digest: unknown): RsaVerifier | string;
  rsaVerify(v: unknown, message: unknown, length: unknown, signature: unknown, signatureLength: unknown): number;
}

const HASH: Record<string, string> = { RS256: 'sha256', RS384: 'sha384', RS512: 'sha512' };
/** DER DigestInfo prefixes (RFC 8017 §9.2 note 1). */
const DIGEST_INFO: Record<string, string> = {
  sha256: '3031300d060960864801650304020105000420',
  sha384: '3041300d060960864801650304020205000430',
  sha512: '3051300d060960864801650304020305000440',
};

let addon: Addon;
let rsa2048: { publicKey: KeyObject; privateKey: KeyObject };
let rsa3072: { publicKey: KeyObject; privateKey: KeyObject };

beforeAll(() => {
  addon = createRequire(import.meta.url)(ADDON) as Addon;
  rsa2048 = generateKeyPairSync('rsa', { modulusLength: 2048 });
  rsa3072 = generateKeyPairSync('rsa', { modulusLength: 3072 });
});

/** rsaVerify with the whole of `sig` (its length, or 0 for what is not bytes). */
const rv = (v: unknown, message: unknown, length: unknown, sig: unknown): number => addon.rsaVerify(v, message, length, sig, sig instanceof Uint8Array ? sig.length : 0);

/** An RSA key's modulus and exponent, as its JWK `n` and `e` decode. */
function ne(k: KeyObject): [Buffer, Buffer] {
  const jwk = k.export({ format: 'jwk' }) as { n: string; e: string };
  return [Buffer.from(jwk.n, 'base64url'), Buffer.from(jwk.e, 'base64url')];
}

function verifierOf(k: KeyObject, digest: string): RsaVerifier {
  const v = addon.rsaVerifier(...ne(k), digest);
  if (typeof v === 'string') throw new Error(`refused: ${v}`);
  return v;
}

/** The addon's answer and crypto.verify's, for `sig` over `msg` with `hash`. */
function both(k: KeyObject, hash: string, msg: Buffer, sig: Buffer): { native: number; node: boolean } {
  const v = verifierOf(k, hash.toUpperCase());
  return { native: rv(v, msg, msg.length, sig), node: cryptoVerify(hash, msg, k, sig) };
}

/** A PKCS#1 v1.5 type-1 block holding `payload`, as a raw private-key operation makes it. */
function rawSignature(k: KeyObject, payload: Buffer): Buffer {
  return privateEncrypt(k, payload); // RSA_PKCS1_PADDING: 00 01 FF..FF 00 payload
}

describe('native RSASSA-PKCS1-v1_5 (native/jws-verify.c) against crypto.verify', () => {
  const msg = Buffer.from(`${'eyJhbGciOiJSUzI1NiJ9'}.${'x'.repeat(700)}`);

  it('accepts what crypto.verify accepts, for each digest and key size', () => {
    for (const keys of [rsa2048, rsa3072]) {
      for (const hash of Object.values(HASH)) {
        const sig = sign(hash, msg, keys.privateKey);
        expect(both(keys.publicKey, hash, msg, sig)).toEqual({ native: 1, node: true });
      }
    }
  });

  it('refuses a signature made with another digest, another key or over another message', () => {
    const sig256 = sign('sha256', msg, rsa2048.privateKey);
    expect(both(rsa2048.publicKey, 'sha384', msg, sig256)).toEqual({ native: 0, node: false });
    expect(both(rsa2048.publicKey, 'sha512', msg, sig256)).toEqual({ native: 0, node: false });
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    expect(both(other.publicKey, 'sha256', msg, sig256)).toEqual({ native: 0, node: false });
    const changed = Buffer.from(msg);
    changed.writeUInt8(changed.readUInt8(changed.length - 1) ^ 1, changed.length - 1);
    expect(both(rsa2048.publicKey, 'sha256', changed, sig256)).toEqual({ native: 0, node: false });
  });

  it('refuses every single-bit change of a valid signature, as crypto.verify does', () => {
    const sig = sign('sha256', msg, rsa2048.privateKey);
    const v = verifierOf(rsa2048.publicKey, 'SHA256');
    for (let bit = 0; bit < sig.length * 8; bit += 7) {
      const bad = Buffer.from(sig);
      bad.writeUInt8(bad.readUInt8(bit >> 3) ^ (1 << (bit & 7)), bit >> 3);
      expect(rv(v, msg, msg.length, bad), `bit ${bit}`).toBe(0);
      expect(cryptoVerify('sha256', msg, rsa2048.publicKey, bad)).toBe(false);
    }
  });

  it('refuses padded blocks that are not a DigestInfo of the right digest', () => {
    const k = rsa2048;
    const d256 = createHash('sha256').update(msg).digest();
    const d512 = createHash('sha512').update(msg).digest();
    const cases: [string, Buffer][] = [
      ['the bare digest, no DigestInfo', d256],
      ['a SHA-512 DigestInfo checked as SHA-256', Buffer.concat([Buffer.from(DIGEST_INFO['sha512'] as string, 'hex'), d512])],
      ['the SHA-256 DigestInfo with a byte after it', Buffer.concat([Buffer.from(DIGEST_INFO['sha256'] as string, 'hex'), d256, Buffer.from([0])])],
      ['the SHA-256 DigestInfo without NULL parameters', Buffer.concat([Buffer.from('302f300b0609608648016503040201' + '0420', 'hex'), d256])],
    ];
    for (const [what, payload] of cases) {
      expect(both(k.publicKey, 'sha256', msg, rawSignature(k.privateKey, payload)), what).toEqual({ native: 0, node: false });
    }
    // The control: the same construction with the right DigestInfo is a valid signature.
    const good = rawSignature(k.privateKey, Buffer.concat([Buffer.from(DIGEST_INFO['sha256'] as string, 'hex'), d256]));
    expect(both(k.publicKey, 'sha256', msg, good)).toEqual({ native: 1, node: true });
  });

  it('refuses signatures of the wrong length or out of range', () => {
    const v = verifierOf(rsa2048.publicKey, 'SHA256');
    const sig = sign('sha256', msg, rsa2048.privateKey);
    expect(rv(v, msg, msg.length, sig.subarray(1))).toBe(0);
    expect(rv(v, msg, msg.length, Buffer.concat([Buffer.from([0]), sig]))).toBe(0);
    expect(rv(v, msg, msg.length, Buffer.alloc(0))).toBe(0);
    expect(rv(v, msg, msg.length, Buffer.alloc(256))).toBe(0);
    expect(rv(v, msg, msg.length, Buffer.alloc(256, 0xff))).toBe(0); // above the modulus
    const one = Buffer.alloc(256);
    one[255] = 1;
    expect(rv(v, msg, msg.length, one)).toBe(0);
  });

  it('checks the signature over message[0, length) only, and refuses a length outside it', () => {
    const v = verifierOf(rsa2048.publicKey, 'SHA256');
    const head = msg.subarray(0, 100);
    const sig = sign('sha256', head, rsa2048.privateKey);
    expect(rv(v, msg, 100, sig)).toBe(1);
    expect(rv(v, msg, 101, sig)).toBe(0);
    expect(rv(v, msg.subarray(0, 100), 100, sig)).toBe(1); // a view: its own offset
    for (const length of [msg.length + 1, -1, 1.5, Number.NaN, Infinity, '100', undefined]) {
      expect(rv(v, msg, length, sig), String(length)).toBe(-1);
    }
  });

  it('checks signature[0, signatureLength) only, and refuses a length outside it', () => {
    const v = verifierOf(rsa2048.publicKey, 'SHA256');
    const sig = sign('sha256', msg, rsa2048.privateKey);
    const scratch = Buffer.concat([sig, Buffer.alloc(300, 7)]); // a reused buffer, longer than this signature
    expect(addon.rsaVerify(v, msg, msg.length, scratch, 256)).toBe(1);
    expect(addon.rsaVerify(v, msg, msg.length, scratch, 255)).toBe(0);
    expect(addon.rsaVerify(v, msg, msg.length, scratch, 257)).toBe(0);
    for (const length of [scratch.length + 1, -1, 255.5, Number.NaN, '256', undefined]) {
      expect(addon.rsaVerify(v, msg, msg.length, scratch, length), String(length)).toBe(-1);
    }
  });

  it('refuses what is not a verifier, or not bytes, with -1 and no crash', () => {
    const v = verifierOf(rsa2048.publicKey, 'SHA256');
    const sig = sign('sha256', msg, rsa2048.privateKey);
    for (const notVerifier of [{}, null, undefined, 1, 'x', msg, () => 0, Object.create(null)]) {
      expect(rv(notVerifier, msg, msg.length, sig)).toBe(-1);
    }
    for (const notBytes of ['abc', new Uint16Array(4), new DataView(new ArrayBuffer(4)), new ArrayBuffer(4), [1, 2], null]) {
      expect(rv(v, notBytes, 0, sig)).toBe(-1);
      expect(rv(v, msg, msg.length, notBytes)).toBe(-1);
    }
    expect(Reflect.apply(addon.rsaVerify.bind(addon), undefined, [v, msg, msg.length, sig])).toBe(-1);
    // and the verifier still works after all that
    expect(rv(v, msg, msg.length, sig)).toBe(1);
  });

  it('makes verifiers only for moduli of 2048 to 16384 bits, odd exponents of at least 3, one of three digests', () => {
    const why = (n: unknown, e: unknown, digest: unknown = 'SHA256'): string | null => {
      const r = addon.rsaVerifier(n, e, digest);
      return typeof r === 'string' ? r : null;
    };
    const [n, e] = ne(rsa2048.publicKey);
    expect(why(n, e)).toBeNull();
    expect(why(...ne(rsa3072.publicKey))).toBeNull();
    expect(why(...ne(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey))).toContain('not 256 to 2048 octets');
    expect(why(n.subarray(1), e)).toContain('not 256 to 2048 octets'); // 2040 bits
    expect(why(Buffer.concat([Buffer.from([0]), n]), e)).toContain('without a leading zero');
    expect(why(Buffer.alloc(2049, 1), e)).toContain('not 256 to 2048 octets');
    expect(why('not bytes', e)).toContain('not 256 to 2048 octets');
    // 2048 bits by length, yet a smaller number once the top bit is clear: OpenSSL counts the bits
    const low = Buffer.from(n);
    low.writeUInt8(0x01, 0);
    expect(why(low, e)).toContain('fewer than 2048');
    for (const bad of [[1], [0], [2], [0, 3], [1, 0], Array.from({ length: 9 }, () => 1)]) {
      expect(why(n, Buffer.from(bad)), bad.join(',')).toContain('exponent');
    }
    expect(why(n, Buffer.from([3]))).toBeNull();
    expect(why(n, Buffer.alloc(0))).toContain('exponent');
    expect(why(n, 'x')).toContain('exponent');
    for (const d of ['sha256', 'SHA1', 'SHA256\0', 'SHA2567', 'SHA-256', 1, null]) {
      expect(why(n, e, d), String(d)).toContain('SHA256, SHA384 or SHA512');
    }
    expect(Reflect.apply(addon.rsaVerifier.bind(addon), undefined, [n, e])).toContain('three arguments');
  });
});

describe('createNativeRsa', () => {
  it('uses the addon for RS256/384/512 and RSA keys only, one verifier per key and algorithm', () => {
    const r = createNativeRsa(ADDON, {});
    const v = r.verifier(rsa2048.publicKey, 'RS256');
    expect(v).not.toBeNull();
    expect(r.verifier(rsa2048.publicKey, 'RS256')).toBe(v);
    expect(r.verifier(rsa2048.publicKey, 'RS384')).not.toBe(v);
    expect(r.verifier(rsa2048.publicKey, 'PS256')).toBeNull();
    expect(r.verifier(rsa2048.privateKey, 'RS256')).toBeNull();
    expect(r.verifier(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey, 'RS256')).toBeNull();
    expect(r.verifier(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey, 'RS256')).toBeNull(); // refused by the addon
    expect(r.report()).toEqual({ rsa: 'native', detail: null });
  });

  it('makes the verifier from the JWK members the key was imported from, when they are canonical', () => {
    const msg = Buffer.from('header.payload');
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const otherJwk = other.publicKey.export({ format: 'jwk' }) as { n: string; e: string };
    const check = (r: ReturnType<typeof createNativeRsa>, k: KeyObject, signer: KeyObject): number => {
      const v = r.verifier(k, 'RS256');
      if (v === null) throw new Error('no verifier');
      const sig = sign('sha256', msg, signer);
      return r.verify(v, msg, msg.length, sig, sig.length);
    };
    // Remembered: these numbers, not an export of the key (shown with another key's numbers).
    const r1 = createNativeRsa(ADDON, {});
    const k1 = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    r1.remember(k1, otherJwk.n, otherJwk.e);
    expect(check(r1, k1, other.privateKey)).toBe(1);
    // Not canonical base64url (padding, a stray character): not remembered; the key's own numbers.
    const r2 = createNativeRsa(ADDON, {});
    const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
    r2.remember(pair.publicKey, `${otherJwk.n}==`, otherJwk.e);
    r2.remember(pair.publicKey, `${otherJwk.n.slice(0, 10)}!${otherJwk.n.slice(10)}`, otherJwk.e);
    r2.remember(pair.publicKey, otherJwk.n, `${otherJwk.e}=`);
    expect(check(r2, pair.publicKey, pair.privateKey)).toBe(1);
    expect(check(r2, pair.publicKey, other.privateKey)).toBe(0);
  });

  it('without the addon, or with WARD_NATIVE_VERIFY=off, makes none and says why', () => {
    const missing = createNativeRsa('/nonexistent/jws-verify.node', {});
    expect(missing.verifier(rsa2048.publicKey, 'RS256')).toBeNull();
    expect(missing.report().rsa).toBe('unavailable');
    expect(missing.report().detail).toContain('/nonexistent/jws-verify.node not loaded');
    expect(missing.report().detail).toContain('bin/build-native.js');
    const off = createNativeRsa(ADDON, { WARD_NATIVE_VERIFY: 'off' });
    expect(off.verifier(rsa2048.publicKey, 'RS256')).toBeNull();
    expect(off.report()).toEqual({ rsa: 'off', detail: 'WARD_NATIVE_VERIFY=off' });
  });

  it('WARD_NATIVE_VERIFY is on, off or unset; anything else is refused', () => {
    expect(nativeVerifyEnabled({})).toBe(true);
    expect(nativeVerifyEnabled({ WARD_NATIVE_VERIFY: '' })).toBe(true);
    expect(nativeVerifyEnabled({ WARD_NATIVE_VERIFY: 'on' })).toBe(true);
    expect(nativeVerifyEnabled({ WARD_NATIVE_VERIFY: 'off' })).toBe(false);
    expect(() => nativeVerifyEnabled({ WARD_NATIVE_VERIFY: 'no' })).toThrow("WARD_NATIVE_VERIFY: 'no' is neither on nor off");
  });
});

describe('verifyJwsSignature with the addon', () => {
  const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');

  it("is this process's path for RS*, and gives crypto.verify's answers", () => {
    expect(nativeRsa.report()).toEqual({ rsa: 'native', detail: null });
    for (const [alg, hash] of Object.entries(HASH)) {
      const input = `${b64({ alg })}.${b64({ sub: 'alice', pad: 'p'.repeat(600) })}`;
      const sig = sign(hash, Buffer.from(input), rsa2048.privateKey);
      const token = `${input}.${sig.toString('base64url')}`;
      const checks = nativeRsa.checks;
      expect(verifyJwsSignature(alg, token, rsa2048.publicKey)).toBeNull();
      expect(nativeRsa.checks).toBe(checks + 1);
      const forged = `${input.slice(0, -1)}${input.endsWith('A') ? 'B' : 'A'}.${sig.toString('base64url')}`;
      expect(verifyJwsSignature(alg, forged, rsa2048.publicKey)).toBe('signature verification failed');
      const other = Object.keys(HASH).find((a) => a !== alg) as string;
      expect(verifyJwsSignature(other, token, rsa2048.publicKey)).toBe('signature verification failed');
    }
  });
});
