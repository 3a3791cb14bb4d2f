import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Sealed values (the session cookie, the sign-in transaction cookie): AES-256-GCM, so the
 * browser can neither read nor forge what it carries (authenticated encryption; RFC 5116).
 *
 * Wire format, base64url of:
 *
 *   version (1 byte, 1) || key id (4) || IV (12, random) || ciphertext || GCM tag (16)
 *
 * The version and key id are authenticated as additional data together with the purpose
 * (`session`, `txn`) and a context string (the cookie's name), so a value sealed for one cookie
 * cannot be replayed as another. The plaintext is `{"e": <expiry, ms>, "p": <payload>}`: the
 * expiry is inside the seal, so a client cannot extend a cookie by editing its `Max-Age`.
 *
 * Keys are derived with HKDF-SHA256 from the operator's secret (one derivation per purpose), so
 * the same file serves every purpose without key reuse across them. Several secrets may be given:
 * the first seals, all unseal (rotation), each found by its key id without trial decryption.
 */

const VERSION = 1;
const KID_BYTES = 4;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + KID_BYTES;
const OVERHEAD = HEADER_BYTES + IV_BYTES + TAG_BYTES;
/** Shortest secret accepted: 256 bits, the AES key size. */
export const MIN_SECRET_BYTES = 32;
/** Longest sealed string looked at: anything bigger is refused before base64 decoding. */
export const MAX_SEALED_CHARS = 32 * 1024;

export type SealPurpose = 'session' | 'txn';

export interface SealKey {
  readonly id: Buffer;
  readonly key: Buffer;
}

/** One key per secret for `purpose`; the first one seals. Throws on a secret shorter than 32 bytes. */
export function deriveKeys(secrets: readonly Uint8Array[], purpose: SealPurpose): SealKey[] {
  if (secrets.length === 0) throw new Error('at least one sealing secret is required');
  return secrets.map((s) => {
    if (s.length < MIN_SECRET_BYTES) throw new Error(`sealing secret is ${s.length} bytes; at least ${MIN_SECRET_BYTES} are required`);
    const key = Buffer.from(hkdfSync('sha256', s, 'ward.dev seal', `ward ${purpose} v${VERSION}`, 32));
    const id = createHash('sha256').update('ward key id').update(key).digest().subarray(0, KID_BYTES);
    return Object.freeze({ id, key });
  });
}

export type UnsealFailure = 'malformed' | 'unknown-key' | 'integrity' | 'expired';
export type Unsealed<T> = { readonly ok: true; readonly value: T; readonly expiresAt: number } | { readonly ok: false; readonly reason: UnsealFailure };

export class Sealer {
  readonly #keys: readonly SealKey[];
  readonly #purpose: SealPurpose;

  constructor(keys: readonly SealKey[], purpose: SealPurpose) {
    if (keys.length === 0) throw new Error('Sealer needs a key');
    this.#keys = keys;
    this.#purpose = purpose;
  }

  /** Seals `payload` (JSON-serializable) until `expiresAt` (ms), bound to `context`. */
  seal(payload: unknown, expiresAt: number, context: string): string {
    const k = this.#keys[0] as SealKey;
    const header = Buffer.allocUnsafe(HEADER_BYTES);
    header[0] = VERSION;
    k.id.copy(header, 1);
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', k.key, iv, { authTagLength: TAG_BYTES });
    cipher.setAAD(this.#aad(header, context));
    const body = Buffer.concat([cipher.update(JSON.stringify({ e: expiresAt, p: payload }), 'utf8'), cipher.final()]);
    return Buffer.concat([header, iv, body, cipher.getAuthTag()]).toString('base64url');
  }

  /**
   * The payload, or why not. Never throws: a cookie is attacker-controlled input. `now` is the
   * caller's clock (ms); a value past its sealed expiry is refused.
   */
  unseal<T>(sealed: string, now: number, context: string): Unsealed<T> {
    if (sealed.length === 0 || sealed.length > MAX_SEALED_CHARS || !/^[A-Za-z0-9_-]+$/.test(sealed)) return MALFORMED;
    const raw = Buffer.from(sealed, 'base64url');
    // one spelling per value: a re-encoding that differs is not what we issued
    if (raw.length <= OVERHEAD || raw.toString('base64url') !== sealed || raw[0] !== VERSION) return MALFORMED;
    const header = raw.subarray(0, HEADER_BYTES);
    const kid = raw.subarray(1, HEADER_BYTES);
    const k = this.#keys.find((c) => timingSafeEqual(c.id, kid));
    if (k === undefined) return UNKNOWN_KEY;
    const iv = raw.subarray(HEADER_BYTES, HEADER_BYTES + IV_BYTES);
    const tag = raw.subarray(raw.length - TAG_BYTES);
    const body = raw.subarray(HEADER_BYTES + IV_BYTES, raw.length - TAG_BYTES);
    let plain: string;
    try {
      const d = createDecipheriv('aes-256-gcm', k.key, iv, { authTagLength: TAG_BYTES });
      d.setAAD(this.#aad(header, context));
      d.setAuthTag(tag);
      plain = Buffer.concat([d.update(body), d.final()]).toString('utf8');
    } catch {
      return INTEGRITY;
    }
    let parsed: { e?: unknown; p?: unknown };
    try {
      parsed = JSON.parse(plain) as { e?: unknown; p?: unknown };
    } catch {
      return MALFORMED; // authentic but not ours to read: only a bug could get here
    }
    if (typeof parsed.e !== 'number' || !('p' in parsed)) return MALFORMED;
    if (now >= parsed.e) return EXPIRED;
    return { ok: true, value: parsed.p as T, expiresAt: parsed.e };
  }

  #aad(header: Buffer, context: string): Buffer {
    return Buffer.concat([header, Buffer.from(`|ward|${this.#purpose}|${context}`, 'utf8')]);
  }
}

const MALFORMED = Object.freeze({ ok: false, reason: 'malformed' }) as Unsealed<never>;
const UNKNOWN_KEY = Object.freeze({ ok: false, reason: 'unknown-key' }) as Unsealed<never>;
const INTEGRITY = Object.freeze({ ok: false, reason: 'integrity' }) as Unsealed<never>;
const EXPIRED = Object.freeze({ ok: false, reason: 'expired' }) as Unsealed<never>;
