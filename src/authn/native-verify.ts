import type { KeyObject } from 'node:crypto';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { isOn, onOff } from '../lib/on-off.ts';
import { isCanonical } from './jwt.ts';

/**
 * RS256, RS384 and RS512 signatures checked by the addon in native/jws-verify.c, with the
 * OpenSSL node links, through a verification context prepared once per key and algorithm.
 * node's `crypto.verify` prepares it all again on every call: ~20 us instead of ~25 us per
 * RS256 check on the benchmark host, and no garbage (BENCHMARKS.md). The check is the one
 * `crypto.verify` makes (OpenSSL's EVP_PKEY_verify, PKCS#1 v1.5 padding, the whole DigestInfo
 * compared); a unit test holds the two to the same answer on valid, forged and malformed
 * signatures.
 *
 * Without the addon (no C compiler when `npm ci` ran; bin/build-native.js), or with
 * `WARD_NATIVE_VERIFY=off`, verify.ts goes on with `crypto.verify`; `/status` says which.
 * PS* (PSS), ES* and EdDSA always take `crypto.verify`.
 */

/** What `/status` reports (`signatures`). */
export interface NativeVerifyReport {
  /** `native` once the addon loaded, `off` (WARD_NATIVE_VERIFY=off), `unavailable` (see detail). */
  readonly rsa: 'native' | 'off' | 'unavailable';
  readonly detail: string | null;
}

/** An addon verifier: opaque to JavaScript. */
export type RsaVerifier = object;

interface Addon {
  rsaVerifier(n: Uint8Array, e: Uint8Array, digest: string): RsaVerifier | string;
  rsaVerify(verifier: RsaVerifier, message: Uint8Array, length: number, signature: Uint8Array, signatureLength: number): number;
}

/** `WARD_NATIVE_VERIFY`: unset, empty or `on` uses the addon when it is there; `off` never. */
export function nativeVerifyEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return onOff(env, 'WARD_NATIVE_VERIFY');
}

export interface NativeRsa {
  /**
   * The verifier for `key` and `alg` (RS256, RS384, RS512), made once per pair; null when the
   * addon is off or unavailable, or refused the key (then `crypto.verify` judges it).
   */
  verifier(key: KeyObject, alg: string): RsaVerifier | null;
  /**
   * The JWK members `key` was imported from (source.ts), so its verifier is made from them
   * rather than from the key exported again (which pages in ~3 MB of OpenSSL's encoders).
   * Only canonical base64url is kept: then these are the very numbers the key holds.
   */
  remember(key: KeyObject, n: string, e: string): void;
  /** 1: signature[0, signatureLength) holds over message[0, length); 0: it does not; -1: arguments refused. */
  verify(v: RsaVerifier, message: Uint8Array, length: number, signature: Uint8Array, signatureLength: number): number;
  /**
   * Loads the addon now, its symbols bound at once (RTLD_NOW), when it is enabled: a sidecar does
   * this before it first drops the file pages it does not use (bin/ward.js). Loaded later, the
   * dynamic linker's look-ups in node's 3 MB symbol table paged in ~4 MB that stayed resident
   * until the next trim, under the first load (measured: peak RSS 76 -> 80 MB).
   */
  preload(): void;
  /** Signatures the addon checked so far. */
  readonly checks: number;
  report(): NativeVerifyReport;
}

const DIGESTS: Readonly<Record<string, string>> = { RS256: 'SHA256', RS384: 'SHA384', RS512: 'SHA512' };

/** A loader for the addon at `addonPath` (tests pass a missing path). Loads on first use. */
export function createNativeRsa(addonPath: string, env: NodeJS.ProcessEnv = process.env): NativeRsa {
  let addon: Addon | null | undefined;
  let report: NativeVerifyReport = { rsa: 'unavailable', detail: 'not loaded yet' };
  /** Per key: per algorithm, the verifier or null (refused). Goes with the key object. */
  const made = new WeakMap<KeyObject, Map<string, RsaVerifier | null>>();
  const members = new WeakMap<KeyObject, { readonly n: string; readonly e: string }>();

  const load = (): Addon | null => {
    if (addon !== undefined) return addon;
    addon = null;
    if (!isOn(env, 'WARD_NATIVE_VERIFY')) {
      report = { rsa: 'off', detail: 'WARD_NATIVE_VERIFY=off' };
      return null;
    }
    try {
      const holder: { exports: Partial<Addon> } = { exports: {} };
      process.dlopen(holder, addonPath, constants.dlopen.RTLD_NOW);
      const m = holder.exports;
      if (typeof m.rsaVerifier !== 'function' || typeof m.rsaVerify !== 'function') throw new Error('it has no rsaVerifier and rsaVerify');
      addon = m as Addon;
      report = { rsa: 'native', detail: null };
    } catch (err) {
      const why = err instanceof Error ? (err.message.split('\n')[0] ?? '') : String(err);
      report = { rsa: 'unavailable', detail: `${addonPath} not loaded (${why}); node bin/build-native.js builds it` };
    }
    return addon;
  };

  const rsa: NativeRsa & { checks: number } = {
    verifier(key, alg) {
      let byAlg = made.get(key);
      let v = byAlg?.get(alg);
      if (v !== undefined) return v;
      v = null;
      const a = load();
      const digest = DIGESTS[alg];
      if (a !== null && digest !== undefined && key.type === 'public' && key.asymmetricKeyType === 'rsa') {
        const jwk = members.get(key) ?? (key.export({ format: 'jwk' }) as { n?: unknown; e?: unknown });
        if (typeof jwk.n === 'string' && typeof jwk.e === 'string') {
          const r = a.rsaVerifier(Buffer.from(jwk.n, 'base64url'), Buffer.from(jwk.e, 'base64url'), digest);
          if (typeof r !== 'string') v = r;
        }
      }
      if (byAlg === undefined) {
        byAlg = new Map();
        made.set(key, byAlg);
      }
      byAlg.set(alg, v);
      return v;
    },
    preload() {
      load();
    },
    remember(key, n, e) {
      if (isCanonical(n) && isCanonical(e)) members.set(key, { n, e });
    },
    checks: 0,
    verify(v, message, length, signature, signatureLength) {
      rsa.checks++;
      // Only a verifier this loader made reaches here, so the addon is loaded.
      return (addon as Addon).rsaVerify(v, message, length, signature, signatureLength);
    },
    report() {
      load();
      return report;
    },
  };
  return rsa;
}

/** This process's loader: the addon bin/build-native.js builds. */
export const nativeRsa: NativeRsa = createNativeRsa(fileURLToPath(new URL('../../native/build/jws-verify.node', import.meta.url)));
