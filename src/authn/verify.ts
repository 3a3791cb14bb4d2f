import { constants, type KeyObject, verify as cryptoVerify } from 'node:crypto';
import { nativeRsa } from './native-verify.ts';

/**
 * The JWS signature check for the asymmetric algorithms, with node:crypto directly. jose's
 * `compactVerify` goes through WebCrypto, which for RS256 cost ~2× a direct `crypto.verify`
 * (scripts/bench/micro-authn.ts): the difference is every call's cost when the verified-token
 * cache is off or missed (BENCHMARKS.md).
 *
 * What jose checked and this keeps: the key must be of the algorithm's type (RSA for the RS and
 * PS algorithms, the named curve for ES, Ed25519 for EdDSA), RSA keys of at least 2048 bits
 * (RFC 7518 §3.3, §3.5), and
 * the signature is computed over the ASCII of `header.payload` as sent. The key itself was
 * one a JWKS offers for this `alg` (source.ts `fits`: kty, crv, `alg`, `use`, `key_ops`). What
 * the caller has already done: parsed the token, refused `none`, `crit`, `b64`, key-carrying
 * headers, non-canonical base64url, and algorithms not allowed for the issuer.
 */

interface AlgSpec {
  readonly hash: string | null;
  readonly keyType: 'rsa' | 'ec' | 'ed25519';
  readonly curve?: string;
  readonly pss?: number;
  /** ECDSA: r||s of this many bytes (RFC 7518 §3.4). */
  readonly sigBytes?: number;
}

const ALGS: Readonly<Record<string, AlgSpec>> = {
  RS256: { hash: 'sha256', keyType: 'rsa' },
  RS384: { hash: 'sha384', keyType: 'rsa' },
  RS512: { hash: 'sha512', keyType: 'rsa' },
  PS256: { hash: 'sha256', keyType: 'rsa', pss: 32 },
  PS384: { hash: 'sha384', keyType: 'rsa', pss: 48 },
  PS512: { hash: 'sha512', keyType: 'rsa', pss: 64 },
  ES256: { hash: 'sha256', keyType: 'ec', curve: 'prime256v1', sigBytes: 64 },
  ES384: { hash: 'sha384', keyType: 'ec', curve: 'secp384r1', sigBytes: 96 },
  ES512: { hash: 'sha512', keyType: 'ec', curve: 'secp521r1', sigBytes: 132 },
  EdDSA: { hash: null, keyType: 'ed25519' },
  Ed25519: { hash: null, keyType: 'ed25519' },
};

/** Why a key cannot verify `alg`, or null when it can. */
function unsuitable(spec: AlgSpec, k: KeyObject): string | null {
  if (k.type !== 'public') return 'not a public key';
  if (k.asymmetricKeyType !== spec.keyType) return `a ${k.asymmetricKeyType ?? 'symmetric'} key`;
  const d = k.asymmetricKeyDetails;
  if (spec.keyType === 'rsa' && (d?.modulusLength ?? 0) < 2048) return 'RSA key shorter than 2048 bits';
  if (spec.curve !== undefined && d?.namedCurve !== spec.curve) return `curve ${d?.namedCurve ?? 'unknown'}`;
  return null;
}

/** Scratch for the signing input (`header.payload`); grows to the longest token seen. */
let signingInput = Buffer.allocUnsafeSlow(2048);
/** Scratch for the decoded signature; grows to the longest seen (512 bytes: RSA keys up to 4096 bits). */
let signatureBytes = Buffer.allocUnsafeSlow(512);

/** An RSA key's modulus in octets (k of RFC 8017), read once per key. */
const kBytes = new WeakMap<KeyObject, number>();

function modulusBytes(k: KeyObject): number {
  let n = kBytes.get(k);
  if (n === undefined) {
    n = Math.ceil((k.asymmetricKeyDetails?.modulusLength ?? 0) / 8);
    kBytes.set(k, n);
  }
  return n;
}

/** `unsuitable` per key and algorithm, computed once (node builds `asymmetricKeyDetails` anew on every read). */
const suitable = new WeakMap<KeyObject, Map<string, string | null>>();

function suitability(alg: string, spec: AlgSpec, k: KeyObject): string | null {
  let byAlg = suitable.get(k);
  if (byAlg === undefined) {
    byAlg = new Map();
    suitable.set(k, byAlg);
  }
  let why = byAlg.get(alg);
  if (why === undefined) {
    why = unsuitable(spec, k);
    byAlg.set(alg, why);
  }
  return why;
}

/**
 * Verifies the signature of the compact JWS `token` with `key` for `alg`. Returns null when it
 * holds, else a log-only reason. Never throws for a bad token; throws only for an algorithm it
 * does not implement (a programming error: callers pass only `supportsDirectVerify` ones).
 */
export function verifyJwsSignature(alg: string, token: string, k: KeyObject): string | null {
  const spec = ALGS[alg];
  if (spec === undefined) throw new Error(`verifyJwsSignature: unsupported alg ${alg}`);
  const bad = suitability(alg, spec, k);
  if (bad !== null) return `key unsuitable for ${alg}: ${bad}`;
  const dot = token.lastIndexOf('.');
  if (dot < 0) return 'not a compact JWS';
  // The signature and the signing input are decoded and written into reused buffers: the
  // checks below are synchronous, so nothing else can be using them (a new token otherwise cost
  // a pooled Buffer for each, and under load every call brings one; BENCHMARKS.md).
  const most = ((token.length - dot - 1) * 3) >> 2;
  if (signatureBytes.length < most) signatureBytes = Buffer.allocUnsafeSlow(Math.max(most, 2 * signatureBytes.length));
  const sigLength = signatureBytes.write(token.slice(dot + 1), 0, 'base64url');
  if (spec.sigBytes !== undefined && sigLength !== spec.sigBytes) return 'signature of the wrong length';
  // RFC 8017 §8.1.2 and §8.2.2 step 1: an RSA signature is exactly k octets. OpenSSL's PSS path
  // reads a shorter string as the same integer, so a PS* signature that began with 0x00 verified
  // without it too: a second spelling of one signed token (RFC 8725 §2.6; found in review).
  if (spec.keyType === 'rsa' && sigLength !== modulusBytes(k)) return 'signature of the wrong length';
  if (signingInput.length < dot) signingInput = Buffer.allocUnsafeSlow(Math.max(dot, 2 * signingInput.length));
  const written = signingInput.write(token, 0, dot, 'latin1');
  if (spec.keyType === 'rsa' && spec.pss === undefined) {
    // RS*: the addon's prepared context where it is built (native-verify.ts), ~5 us less per check.
    const nv = nativeRsa.verifier(k, alg);
    if (nv !== null) return nativeRsa.verify(nv, signingInput, written, signatureBytes, sigLength) === 1 ? null : 'signature verification failed';
  }
  const sig = signatureBytes.subarray(0, sigLength);
  const data = signingInput.subarray(0, written);
  let ok: boolean;
  try {
    // The key object alone, where the algorithm allows: an options object costs node ~7 µs
    // per RSA verify and ~17 µs per ECDSA one (key re-preparation), a third of the call
    // (scripts/bench/micro-authn.ts). RSA keys default to PKCS#1 v1.5 padding (RS*); ECDSA
    // takes DER, so the JWS r||s form is re-encoded, which costs far less.
    if (spec.keyType === 'rsa') {
      ok =
        spec.pss === undefined
          ? cryptoVerify(spec.hash, data, k, sig)
          : cryptoVerify(spec.hash, data, { key: k, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: spec.pss }, sig);
    } else if (spec.keyType === 'ec') {
      ok = cryptoVerify(spec.hash, data, k, p1363ToDer(sig));
    } else {
      ok = cryptoVerify(null, data, k, sig);
    }
  } catch {
    return 'signature verification failed';
  }
  return ok ? null : 'signature verification failed';
}

/** One DER INTEGER for the unsigned big-endian `b`: leading zeros dropped, a 0 added when the top bit is set. */
function derInteger(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const pad = ((b[i] as number) & 0x80) !== 0 ? 1 : 0;
  const n = b.length - i + pad;
  const out = Buffer.allocUnsafe(2 + n);
  out[0] = 0x02;
  out[1] = n;
  if (pad === 1) out[2] = 0;
  b.copy(out, 2 + pad, i);
  return out;
}

/** An ECDSA signature from the JWS form r||s (RFC 7518 §3.4) to DER `SEQUENCE { r INTEGER, s INTEGER }`. */
export function p1363ToDer(sig: Buffer): Buffer {
  const half = sig.length / 2;
  const r = derInteger(sig.subarray(0, half));
  const s = derInteger(sig.subarray(half));
  const body = r.length + s.length;
  // P-521's 66-byte halves can take the sequence past 127 bytes: long-form length then.
  const head = body < 0x80 ? Buffer.from([0x30, body]) : Buffer.from([0x30, 0x81, body]);
  return Buffer.concat([head, r, s], head.length + body);
}

export function supportsDirectVerify(alg: string): boolean {
  return ALGS[alg] !== undefined;
}
